"""`python -m bench`: the cancel benchmark (issues 5, 7, 14 and 15), printed as one table (see bench/README.md).

Progress goes to stderr, the table to stdout. Exit status: 0 when every request of every
measurement succeeded (whether or not the targets are met: they are reported, not enforced),
1 when any request failed, 2 when a tool or a server could not be started.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from bench import gogateway
from bench.load import LoadToolFailed
from bench.processes import REPO, ServerFailed
from bench.report import render, to_json
from bench.suite import QUICK, Bench, Settings
from bench.tools import ToolMissing, ensure_tools


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return int(text)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="the reduced run of the tests: seconds, not minutes"
    )
    parser.add_argument(
        "--runs", type=positive, help="rounds of measurements; the table shows medians (default 3)"
    )
    parser.add_argument(
        "--duration", type=positive, help="seconds per closed-loop and fixed-rate measurement"
    )
    parser.add_argument(
        "--connections", type=positive, help="wrk connections and ghz concurrency (default 32)"
    )
    parser.add_argument("--threads", type=positive, help="wrk threads (default 2)")
    parser.add_argument(
        "--memory-cancels", type=positive, help="cancels of the memory measurement (default 200000)"
    )
    parser.add_argument(
        "--server-log-level",
        choices=["debug", "info", "warning", "error"],
        help="--log-level of the servers (default warning: no access log line per request)",
    )
    parser.add_argument("--json", type=Path, help="also write every raw figure to this file")
    parser.add_argument("--out-dir", type=Path, help="databases, server logs and tool reports "
                        "(default build/bench/<date-time>; must not exist yet)")  # fmt: skip
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    settings = QUICK if args.quick else Settings()
    overrides = {
        "runs": args.runs,
        "duration_s": args.duration,
        "fixed_duration_s": args.duration,
        "connections": args.connections,
        "threads": args.threads,
        "memory_cancels": args.memory_cancels,
        "server_log_level": args.server_log_level,
    }
    return dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from(args)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = (args.out_dir or REPO / "build" / "bench" / stamp).resolve()
    try:
        workdir.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        print(f"bench: error: {workdir} exists; every run starts from fresh databases", file=sys.stderr)
        return 2
    try:
        tools = dataclasses.replace(ensure_tools(), grpc_gateway=gogateway.ensure_built())
        outcome = Bench(settings, tools, workdir).run()
    except (ToolMissing, ServerFailed, LoadToolFailed) as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return 2
    print(render(outcome), flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(to_json(outcome), default=str, option=orjson.OPT_INDENT_2))
    print(f"bench: databases, logs and tool reports are in {workdir}", file=sys.stderr)
    return 1 if outcome.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

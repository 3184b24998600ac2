"""The printed table, and the raw figures as JSON: both from one `Outcome`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from bench.suite import BY_KEY, ISSUE_NAIVE_SHARE, NAIVE_VARIANT, POSTGRES_VARIANTS, Outcome

MIB = 2**20


def _num(value: float | None, decimals: int) -> str:
    return "n/a" if value is None else f"{value:.{decimals}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell: the first left-aligned, the others right-aligned."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join(
            [first, *(cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))]
        )

    return [line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)]


def render(outcome: Outcome) -> str:
    env, s = outcome.environment, outcome.settings
    out = [
        "hypertrack-gateway benchmark: POST /orders/{handle}/cancel and OrdersService/CancelOrder",
        f"date {env['date']} | commit {env['commit']} | {env['cores']} cores ({env['usable_cores']} usable)"
        f" | {env['machine']}",
        f"tools: {env['wrk']}; {env['h2load']}; {env['ghz']}",
        f"load: {s.runs} run(s) of {s.duration_s} s per row; wrk -t{s.threads} -c{s.connections}; "
        f"ghz -c{s.connections} --connections {s.grpc_connections}; servers --log-level {s.server_log_level}; "
        "every cancel hits a fresh open order",
        f"figures: median of {s.runs} run(s); 'x ceil' = the figure divided by its ceiling's in the same run"
        " (median over runs): req/s higher is better, latency and CPU lower",
        *_answer_lines(outcome),
        *_postgres_header(outcome),
        "",
    ]
    rows = []
    for row in outcome.rows:
        m, r = row.medians, row.ratios
        rows.append([
            row.label, _num(m["rps"], 0), _num(r["rps"], 2), _num(m["p50_ms"], 2), _num(r["p50_ms"], 2),
            _num(m["p99_ms"], 2), _num(r["p99_ms"], 2), _num(m["cpu_per_1k"], 3), _num(r["cpu_per_1k"], 2),
        ])  # fmt: skip
    header = ["Closed loop, full speed", "req/s", "x ceil", "p50 ms", "x ceil", "p99 ms", "x ceil",
              "CPU s/1k req", "x ceil"]  # fmt: skip
    out += _table(header, rows)
    out += _naive_lines(outcome)
    out += _postgres_lines(outcome)

    if outcome.fixed:
        fixed_rows = []
        for f in outcome.fixed:
            res, ceil = f.result, f.ceiling

            def ratio(a: float | None, b: float | None) -> str:
                return "n/a" if a is None or not b else f"{a / b:.2f}"

            fixed_rows.append([
                BY_KEY[f.variant].label, f"{f.rate:.0f}", _num(res.rps, 0), _num(res.p50_ms, 2),
                ratio(res.p50_ms, ceil.p50_ms), _num(res.p99_ms, 2), ratio(res.p99_ms, ceil.p99_ms),
                ratio(res.p99_ms, res.p50_ms), _num(res.cpu_per_1k, 3), ratio(res.cpu_per_1k, ceil.cpu_per_1k),
            ])  # fmt: skip
        header = ["Fixed rate, half the median maximum", "rate/s", "req/s", "p50 ms", "x ceil", "p99 ms", "x ceil",
                  "p99/p50", "CPU s/1k req", "x ceil"]  # fmt: skip
        out += ["", *_table(header, fixed_rows)]
        tools = "; ".join(f"{BY_KEY[f.variant].label}: {f.tool}" for f in outcome.fixed)
        out.append(f"  (one run each, the ceiling at the same rate; {tools})")

    e = outcome.encoders
    encoder_rows = [
        ["encode_json(order) (ours)", str(e.encode_json_bytes), _num(e.encode_json_us, 2), "1.00"],
        ["orjson.dumps of the same dict", str(e.encode_json_bytes), _num(e.orjson_us, 2),
         _num(e.orjson_us / e.encode_json_us, 2)],
        ["json_format.MessageToJson(order): defaults, indent 2, camelCase", str(e.message_to_json_bytes),
         _num(e.message_to_json_us, 2), _num(e.speedup_over_message_to_json, 2)],
        ["json_format.MessageToJson(order, indent=None, preserving_proto_field_name=True)",
         str(e.message_to_json_compact_bytes), _num(e.message_to_json_compact_us, 2),
         _num(e.speedup_over_compact_message_to_json, 2)],
    ]  # fmt: skip
    header = ["JSON mapping of the reference order (order-1)", "bytes", "us/call", "x encode_json"]
    out += ["", *_table(header, encoder_rows)]
    out.append(
        f"  (median of {s.json_repeats} timeit repeats; encode_json takes {e.ratio_to_orjson:.1f}x orjson.dumps;"
        f" MessageToJson takes {e.speedup_over_message_to_json:.1f}x encode_json with its defaults,"
        f" {e.speedup_over_compact_message_to_json:.1f}x compact with proto names, the shape ours writes)"
    )

    if outcome.memory is not None:
        points = outcome.memory.checkpoints
        memory_rows = [["at start", "0", f"{points[0][1] / MIB:.1f}", ""]]
        first = points[1][1]
        for cancels, rss in points[1:]:
            memory_rows.append([f"after {cancels} cancels", str(cancels), f"{rss / MIB:.1f}",
                                f"{(rss / first - 1) * 100:+.1f}%"])  # fmt: skip
        out += ["", *_table(["Memory of a fresh serve (RSS)", "cancels", "MiB", "vs first"], memory_rows)]

    out += ["", "Targets (median of the runs; ratios within one run)"]
    out += [f"  {t.describe()}" for t in outcome.targets]
    failures = outcome.failures
    total = sum(m.result.requests for m in outcome.measurements)
    out.append("")
    if failures:
        out.append(f"FAILED REQUESTS in {len(failures)} measurement(s):")
        out += [f"  {line}" for line in failures]
    else:
        out.append(f"Requests: all {total} requests of {len(outcome.measurements)} measurements succeeded.")
    return "\n".join(out)


def _answer_lines(outcome: Outcome) -> list[str]:
    a = outcome.answer
    if a is None:
        return []
    return [
        f"answers: the ceilings answer the product's own cancel of a seeded order, {a.ceiling_json} bytes of"
        f" JSON ({a.ceiling_protobuf} bytes of protobuf); the product answered a probe cancel with"
        f" {a.product_json} bytes"
    ]


def _naive_lines(outcome: Outcome) -> list[str]:
    """Under the closed-loop table: the naive gateway against the issue's calibration of it."""
    rows = {r.key: r for r in outcome.rows}
    naive = rows.get(NAIVE_VARIANT)
    if naive is None or not naive.ratios["rps"] or not naive.medians["rps"]:
        return []
    share, rps = naive.ratios["rps"], naive.medians["rps"]
    product = {key: rows[key].medians["rps"] for key in ("rest-embedded", "rest-remote") if key in rows}
    over_naive = ", ".join(
        f"{BY_KEY[key].label.removeprefix('REST cancel, ')} {value / rps:.2f}x"
        for key, value in product.items()
        if value
    )
    return [
        f"  naive gateway (aiohttp app, default loop -> grpc.aio -> MessageToJson, in front of the same grpc"
        f" process as http): {share:.2f} of the REST ceiling here; the issue measured its naive gateway at"
        f" {ISSUE_NAIVE_SHARE:.2f} of its own",
        f"  req/s over the naive gateway's: {over_naive}",
    ]


def _postgres_header(outcome: Outcome) -> list[str]:
    """The settings of the PostgreSQL rows; when they were skipped, the table says so under its rows."""
    return [] if outcome.postgres is None else [f"postgresql: {outcome.postgres.server.describe()}"]


def _postgres_lines(outcome: Outcome) -> list[str]:
    """Under the closed-loop table: two processes against one, and the database's own CPU."""
    pg = outcome.postgres
    if pg is None:
        return [f"  {outcome.postgres_skipped}"] if outcome.postgres_skipped else []
    cpu = ", ".join(
        f"{_num(pg.database_cpu_per_1k[key], 3)} ({n} grpc)" for n, key in enumerate(POSTGRES_VARIANTS, 1)
    )
    runs = ", ".join(_num(ratio, 2) for ratio in pg.scaling_runs)
    return [
        f"  PostgreSQL scaling, req/s of http + 2 grpc over http + 1 grpc: {_num(pg.scaling, 2)}x"
        f" (median of the per-run ratios: {runs})",
        f"  PostgreSQL server's own CPU s/1k req (the CPU column counts only the gateway processes): {cpu}",
    ]


def to_json(outcome: Outcome) -> dict[str, Any]:
    """Every figure, every measurement (warm-ups included) and the targets, for machines."""
    raw = dataclasses.asdict(outcome)
    raw["failures"] = outcome.failures
    raw["targets"] = [{**dataclasses.asdict(t), "met": t.met} for t in outcome.targets]
    for measurement, m in zip(raw["measurements"], outcome.measurements, strict=True):
        measurement["result"].update(
            rps=m.result.rps, cpu_per_1k=m.result.cpu_per_1k, database_cpu_per_1k=m.result.database_cpu_per_1k
        )
    raw["encoders"].update(
        speedup_over_message_to_json=outcome.encoders.speedup_over_message_to_json,
        speedup_over_compact_message_to_json=outcome.encoders.speedup_over_compact_message_to_json,
        ratio_to_orjson=outcome.encoders.ratio_to_orjson,
    )
    if outcome.memory is not None:
        raw["memory"]["growth"] = outcome.memory.growth
    return raw

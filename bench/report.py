"""The printed table, and the raw figures as JSON: both from one `Outcome`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from bench.bounds import report as bounds_report
from bench.disk import describe as describe_sync
from bench.suite import (
    BY_KEY,
    GRPC_GATEWAY_VARIANT,
    ISSUE_NAIVE_SHARE,
    NAIVE_VARIANT,
    POSTGRES_VARIANTS,
    Outcome,
)

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
        f"tools: {env['wrk']}; {env['h2load']}; {env['ghz']}; {env.get('grpc_gateway', 'no grpc-gateway')}",
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
    out += _webhook_lines(outcome)
    out += _versus_grpc_gateway(outcome)

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
    if outcome.disk is not None:
        out.append(
            f"  the disk's floor under a durable commit (bench/disk.py, on the databases' directory): {describe_sync(outcome.disk)}"
        )

    if outcome.bounds is not None:
        out += ["", *bounds_report(outcome.bounds)]

    out += _delivery_lines(outcome)

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

    out += ["", "Targets (issues 15, 14 and 5; a ratio of two rows is the median of their per-run ratios)"]
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


def _versus_grpc_gateway(outcome: Outcome) -> list[str]:
    """Every REST row as a ratio to grpc-gateway's in the same run, with the CPU of front end and
    gRPC process apart (issue 15)."""
    rows = []
    for row in outcome.rows:
        if not row.versus:
            continue
        v, split = row.versus, row.cpu_split
        backend = split["backend_cpu_per_1k"]
        rows.append([
            row.label, _num(row.medians["rps"], 0), _num(v["rps"], 2), _num(row.medians["cpu_per_1k"], 3),
            _num(v["cpu_per_1k"], 2), _num(split["front_cpu_per_1k"], 3), _num(backend, 3),
            "-" if backend is None else _num(v["front_cpu_per_1k"], 2),
        ])  # fmt: skip
    if not rows:
        return []
    label = BY_KEY[GRPC_GATEWAY_VARIANT].label
    header = ["REST rows next to grpc-gateway (Go) -> the same grpc", "req/s", "x grpc-gw", "CPU s/1k req",
              "x grpc-gw", "front end", "grpc", "front x grpc-gw's"]  # fmt: skip
    return [
        "",
        *_table(header, rows),
        f"  (x grpc-gw: the row's figure over '{label}' in the same run, median of the runs; CPU s/1k req"
        " counts every gateway process of the row, split into the REST front end and the grpc process(es)"
        " behind it)",
    ]


def _webhook_lines(outcome: Outcome) -> list[str]:
    """Under the closed-loop table: the subscribed row's deliveries."""
    w = outcome.webhook
    if w is None:
        return []
    r = w.received
    slowest = max(w.catch_up_s, default=0.0)
    return [
        f"  webhook subscribed: {w.cancels} cancels answered, {r.events} events delivered to the receiver in"
        f" {r.deliveries} POSTs ({r.repeated_deliveries} repeated delivery ids, {r.unsigned} unsigned);"
        f" after a measurement the receiver had them all within {slowest:.2f} s"
    ]


def _delivery_lines(outcome: Outcome) -> list[str]:
    d = outcome.delivery
    if d is None:
        return []
    r = d.received
    per_post = r.events / r.deliveries if r.deliveries else None
    row = [
        "a backlog drained by a fresh serve", str(d.events), str(r.events), str(r.deliveries), _num(per_post, 1),
        _num(r.seconds, 2), _num(d.events_per_s, 0), _num(d.cpu_per_1k, 3),
    ]  # fmt: skip
    header = ["Webhook delivery to a fast receiver", "events", "delivered", "POSTs", "per POST", "seconds",
              "events/s", "CPU s/1k events"]  # fmt: skip
    return [
        "",
        *_table(header, [row]),
        "  (events made by cancels with no delivery worker running; the receiver holds the deliveries until the"
        " serve's banner is out: seconds from then to the last POST, and the serve process's CPU over them)",
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
    if outcome.delivery is not None:
        raw["delivery"].update(
            events_per_s=outcome.delivery.events_per_s, cpu_per_1k=outcome.delivery.cpu_per_1k
        )
    for measurement, m in zip(raw["measurements"], outcome.measurements, strict=True):
        measurement["result"].update(
            rps=m.result.rps, cpu_per_1k=m.result.cpu_per_1k, front_cpu_per_1k=m.result.front_cpu_per_1k,
            backend_cpu_per_1k=m.result.backend_cpu_per_1k, database_cpu_per_1k=m.result.database_cpu_per_1k,
        )  # fmt: skip
    raw["encoders"].update(
        speedup_over_message_to_json=outcome.encoders.speedup_over_message_to_json,
        speedup_over_compact_message_to_json=outcome.encoders.speedup_over_compact_message_to_json,
        ratio_to_orjson=outcome.encoders.ratio_to_orjson,
    )
    if outcome.memory is not None:
        raw["memory"]["growth"] = outcome.memory.growth
    return raw

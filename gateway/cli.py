"""The `hypertrack-gateway` command: serve, grpc, http, accounts create, webhooks, seed, migrate."""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import importlib.metadata
import logging
import multiprocessing
import queue
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import uvloop

from gateway import config
from gateway.assembly import Gateway, StartupError, open_store
from gateway.calls.credentials import hash_secret, new_secret
from gateway.config import OneLineParser
from gateway.demo import DEMO_ACCOUNT, DEMO_SECRET, REFERENCE_ORDER, install_demo
from gateway.events.subscriptions import new_signing_secret
from gateway.jsonmap.timestamps import format_timestamp
from gateway.observability.logs import configure_logging
from gateway.protos import SERVICE_NAME
from gateway.runtime import run_until_signalled
from gateway.seed import seed_orders
from gateway.settings import GatewaySettings, MetricsSettings, StoreSettings, redacted
from gateway.store.events import EventStore

log = logging.getLogger("hypertrack_gateway")

_ACCOUNT_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
WORKER_START_TIMEOUT_S = 60.0


def account_id(text: str) -> str:
    if not _ACCOUNT_ID.match(text):
        raise ValueError(f"must be 1 to 64 letters, digits, '_', '.' or '-', not {text!r}")
    return text


def _version() -> str:
    try:
        return importlib.metadata.version("hypertrack-gateway")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def build_parser(environ: Any) -> argparse.ArgumentParser:
    parser = OneLineParser(prog="hypertrack-gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    add = config.add_options

    serve = commands.add_parser("serve", help="REST and gRPC in one process (the embedded default)")
    add(serve, config.SERVE_OPTIONS, environ)
    grpc_only = commands.add_parser("grpc", help="only the gRPC server")
    add(grpc_only, config.GRPC_OPTIONS, environ)
    http_only = commands.add_parser(
        "http", help="only the REST front end, in front of gRPC servers (--backend)"
    )
    add(http_only, config.HTTP_OPTIONS, environ)

    accounts = commands.add_parser("accounts", help="manage accounts")
    account_commands = accounts.add_subparsers(
        dest="accounts_command", required=True, parser_class=OneLineParser
    )
    create = account_commands.add_parser(
        "create", help="create an account; prints ACCOUNT_ID:SECRET_KEY once"
    )
    add(create, (config.DATABASE,), environ)
    create.add_argument(
        "account_id",
        metavar="ACCOUNT_ID",
        type=config._argparse_type(config.Option("ACCOUNT_ID", account_id, None, "")),
        help="the new account's id: 1 to 64 letters, digits, '_', '.' or '-'",
    )

    webhooks = commands.add_parser("webhooks", help="where an account's order events are sent")
    webhook_commands = webhooks.add_subparsers(
        dest="webhooks_command", required=True, parser_class=OneLineParser
    )
    set_webhook = webhook_commands.add_parser(
        "set",
        help="subscribe the account's URL, replacing its webhook if any; prints the new signing secret once",
    )
    add(set_webhook, (config.DATABASE, config.WEBHOOK_ACCOUNT, config.WEBHOOK_URL), environ)
    show_webhook = webhook_commands.add_parser(
        "show", help="print the account's webhook URL, then when it was set (UTC); never the secret"
    )
    add(show_webhook, (config.DATABASE, config.WEBHOOK_ACCOUNT), environ)
    remove_webhook = webhook_commands.add_parser(
        "remove", help="unsubscribe the account: its next events are not sent"
    )
    add(remove_webhook, (config.DATABASE, config.WEBHOOK_ACCOUNT), environ)

    seed = commands.add_parser("seed", help="create N open orders for load tests")
    add(seed, (config.DATABASE, config.ACCOUNT, config.COUNT, config.PREFIX), environ)

    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    add(migrate, (config.DATABASE,), environ)
    return parser


def _shown_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def banner(
    settings: GatewaySettings, http_port: int | None, grpc_port: int | None, admin_port: int | None = None
) -> str:
    host = _shown_host(settings.listen.host)
    scheme = "https" if settings.listen.tls is not None else "http"
    lines = [f"hypertrack-gateway {settings.mode}: {settings.workers} worker(s)"]
    if http_port is not None:
        backend = "in-process" if settings.backend is None else settings.backend.target
        lines.append(f"  REST  {scheme}://{host}:{http_port}  (backend: {backend})")
    if grpc_port is not None:
        lines.append(f"  gRPC  {host}:{grpc_port}  ({SERVICE_NAME}, grpc.health.v1.Health, reflection)")
    if admin_port is not None:
        lines.append(f"  admin {scheme}://{host}:{admin_port} (/metrics, /healthz, /readyz)")
    if settings.serves_grpc:
        lines.append(f"  database  {redacted(settings.store.database)}")
    if settings.store.demo:
        token = base64.b64encode(f"{DEMO_ACCOUNT}:{DEMO_SECRET}".encode()).decode()
        lines.append(f"Demo account, for local use only: AccountID {DEMO_ACCOUNT}, SecretKey {DEMO_SECRET}")
        lines.append("Try:")
        if http_port is not None:
            insecure = " -k" if scheme == "https" else ""
            lines.append(
                f"  curl -s{insecure} -X POST -u {DEMO_ACCOUNT}:{DEMO_SECRET} -H 'Content-Type: application/json'"
                f" -d '{{}}' {scheme}://{host}:{http_port}/orders/{REFERENCE_ORDER}/cancel"
            )
        if grpc_port is not None and scheme == "http":
            lines.append(
                f"  grpcurl -plaintext -H 'authorization: Basic {token}'"
                f' -d \'{{"order_handle": "{REFERENCE_ORDER}"}}\''
                f" {host}:{grpc_port} {SERVICE_NAME}/GetOrder"
            )
    lines.append(f"Stop with Ctrl-C or SIGTERM: calls in flight get {settings.grace_s:g} s to finish.")
    return "\n".join(lines)


async def _prepare_database(settings: StoreSettings) -> None:
    """The schema brought up to date, and the demo data put in when asked for."""
    store = await open_store(settings.database)
    try:
        if settings.demo:
            await install_demo(store)
    finally:
        await store.close()


def _worker(settings: GatewaySettings, ready: Any) -> None:
    configure_logging(settings.logging.level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor relays SIGINT as SIGTERM

    def announce(gateway: Gateway) -> None:
        ready.put(None)

    try:
        status = uvloop.run(run_until_signalled(settings, announce=announce))
    except StartupError as error:
        ready.put(str(error))  # said once, by the supervisor, rather than by every worker
        status = 1
    sys.exit(status)


def _supervise(settings: GatewaySettings) -> int:
    """Run `--workers` processes sharing the ports; relay SIGTERM/SIGINT; exit 0 when all did."""
    listen = settings.listen
    ports = ([listen.http_port] if settings.serves_rest else []) + (
        [listen.grpc_port] if settings.serves_grpc else []
    )
    if listen.admin_port is not None:
        ports.append(listen.admin_port)
    if 0 in ports:
        print("hypertrack-gateway: error: --workers above 1 needs fixed ports, not 0", file=sys.stderr)
        return 2
    # The schema and the demo data are put in once, here, not by every worker at the same time.
    if settings.serves_grpc:
        uvloop.run(_prepare_database(settings.store))
    # Each worker writes its metrics here, so that /metrics answers for all of them, whichever
    # answers (see gateway/observability/metrics.py): private to this run, and to its user.
    metrics_directory = Path(tempfile.mkdtemp(prefix="hypertrack-gateway-metrics-"))
    try:
        return _run_workers(settings, metrics_directory)
    finally:
        shutil.rmtree(metrics_directory, ignore_errors=True)


def _run_workers(settings: GatewaySettings, metrics_directory: Path) -> int:
    listen = settings.listen
    worker_settings = dataclasses.replace(
        settings,
        store=dataclasses.replace(settings.store, demo=False),
        metrics=MetricsSettings(shared_directory=metrics_directory),
    )
    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    workers = [
        context.Process(target=_worker, args=(worker_settings, ready), daemon=False)
        for _ in range(settings.workers)
    ]
    for worker in workers:
        worker.start()

    def relay(signum: int, frame: object) -> None:
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                worker.terminate()

    signal.signal(signal.SIGTERM, relay)
    signal.signal(signal.SIGINT, relay)
    failure = None
    try:
        for _ in workers:
            failure = ready.get(timeout=WORKER_START_TIMEOUT_S)
            if failure is not None:
                break
    except queue.Empty:
        failure = f"a worker did not start within {WORKER_START_TIMEOUT_S:g} s"
    if failure is not None:
        relay(signal.SIGTERM, None)
        for worker in workers:
            worker.join()
        print(f"hypertrack-gateway: error: {failure}", file=sys.stderr)
        return 1
    http_port = listen.http_port if settings.serves_rest else None
    grpc_port = listen.grpc_port if settings.serves_grpc else None
    print(banner(settings, http_port, grpc_port, listen.admin_port), flush=True)
    for worker in workers:
        worker.join()
    return 0 if all(w.exitcode == 0 for w in workers) else 1


def run_service(settings: GatewaySettings) -> int:
    configure_logging(settings.logging.level)
    if settings.store.demo:
        log.warning("demo account created for local use only", extra={"account_id": DEMO_ACCOUNT})
    if settings.workers > 1:
        return _supervise(settings)

    def announce(gateway: Gateway) -> None:
        print(banner(settings, gateway.rest_port, gateway.grpc_port, gateway.admin_port), flush=True)

    return uvloop.run(run_until_signalled(settings, announce=announce))


def _run_service_or_say_why(settings: GatewaySettings) -> int:
    """run_service, with a failure to start said in one line (exit status 1), not a traceback."""
    try:
        return run_service(settings)
    except StartupError as error:
        print(f"hypertrack-gateway: error: {error}", file=sys.stderr)
        return 1


async def _create_account(args: argparse.Namespace) -> int:
    store = await open_store(args.database)
    try:
        secret = new_secret()
        if not await store.create_account(args.account_id, hash_secret(secret)):
            print(f"hypertrack-gateway: error: account {args.account_id!r} exists already", file=sys.stderr)
            return 1
    finally:
        await store.close()
    print(f"{args.account_id}:{secret}", flush=True)
    return 0


def _say_no_account(database: str, account: str) -> int:
    """The one line for an account that is not in the database, saying how to make it; exit 1."""
    print(
        f"hypertrack-gateway: error: no account {account!r} in"
        f" {redacted(database)}; create one with `hypertrack-gateway accounts create"
        f" --database {redacted(database)} {account}`"
        + (" (or start `serve` once for the demo account)" if account == DEMO_ACCOUNT else ""),
        file=sys.stderr,
    )
    return 1


class _Said(NamedTuple):
    """What a command says once its work is done: `out` for scripts, `note` for the person."""

    out: str | None = None
    note: str | None = None


async def _set_webhook(store: EventStore, args: argparse.Namespace) -> _Said:
    replaced = await store.webhook(args.account) is not None
    secret = new_signing_secret()
    await store.set_webhook(args.account, args.url, secret)
    return _Said(
        secret,
        f"webhook of account {args.account!r} set"
        + (" (replacing its previous URL and secret)" if replaced else "")
        + "; the signing secret above is shown this once only and cannot be read back:"
        " give it to the receiver",
    )


async def _show_webhook(store: EventStore, args: argparse.Namespace) -> _Said:
    webhook = await store.webhook(args.account)
    if webhook is None:
        return _Said(note=f"account {args.account!r} has no webhook")
    seconds, millis = divmod(webhook.created_at_ms, 1000)
    return _Said(f"{webhook.url}\n{format_timestamp(seconds, millis * 1_000_000)}")


async def _remove_webhook(store: EventStore, args: argparse.Namespace) -> _Said:
    if await store.remove_webhook(args.account):
        return _Said(f"removed the webhook of account {args.account!r}")
    return _Said(f"account {args.account!r} had no webhook")


_WEBHOOK_COMMANDS = {"set": _set_webhook, "show": _show_webhook, "remove": _remove_webhook}


async def _webhooks(args: argparse.Namespace) -> int:
    """`webhooks set`, `show` or `remove`, said once the store is closed. A script reads stdout
    (set: the secret alone on its line; show: the URL, then when it was set); stderr explains."""
    store = await open_store(args.database)
    try:
        if await store.account_secret_hash(args.account) is None:
            return _say_no_account(args.database, args.account)
        said = await _WEBHOOK_COMMANDS[args.webhooks_command](store, args)
    finally:
        await store.close()
    if said.out is not None:
        print(said.out, flush=True)
    if said.note is not None:
        print(f"hypertrack-gateway: {said.note}", file=sys.stderr)
    return 0


async def _seed(args: argparse.Namespace) -> int:
    store = await open_store(args.database)
    try:
        if await store.account_secret_hash(args.account) is None:
            return _say_no_account(args.database, args.account)
        created = await seed_orders(store, args.account, args.count, args.prefix)
    finally:
        await store.close()
    print(
        f"seeded {created} open orders ({args.prefix}0 ... {args.prefix}{args.count - 1}) for {args.account}"
    )
    return 0


async def _migrate(args: argparse.Namespace) -> int:
    store = await open_store(args.database)
    await store.close()
    print(f"schema of {redacted(args.database)} is up to date")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(config.environ())
    args = parser.parse_args(argv)
    config.check_pairs(parser, args)
    if args.command in ("serve", "grpc", "http"):
        if args.command == "http" and args.backend is None:
            parser.error("http needs --backend HOST:PORT (or HYPERTRACK_GATEWAY_BACKEND)")
        return _run_service_or_say_why(config.service_settings(args.command, args))
    commands = {"accounts": _create_account, "webhooks": _webhooks, "seed": _seed, "migrate": _migrate}
    try:
        return asyncio.run(commands[args.command](args))
    except Exception as error:
        print(f"hypertrack-gateway: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())

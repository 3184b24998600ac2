"""The command line's settings: flags, each with a `HYPERTRACK_GATEWAY_<FLAG>` environment
variable, parsed and validated once at start-up into the typed settings of gateway/settings.py.
A bad value stops the program with one line that names the setting and what is wrong, and exit
status 2. Nothing past this module and gateway/cli.py sees the parsed flags themselves."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import ipaddress
import math
import os
import re
import sys
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from gateway.events.delivery import WebhookSettings
from gateway.events.subscriptions import MAX_URL_LENGTH, webhook_url
from gateway.rest.app import RestSettings
from gateway.rest.context import DeadlinePolicy
from gateway.rpc.server import ConnectionLimits
from gateway.settings import (
    DEFAULT_DATABASE,
    AdmissionSettings,
    BackendSettings,
    BackendTlsFiles,
    ConnectionSettings,
    GatewaySettings,
    GrpcSettings,
    ListenSettings,
    LogSettings,
    Mode,
    ServerTlsFiles,
    StoreSettings,
    Synchronous,
    TracingSettings,
)

ENV_PREFIX = "HYPERTRACK_GATEWAY_"


def port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ValueError(f"must be a port number from 0 to 65535, not {text!r}")
    return int(text)


def _whole_number(text: str, minimum: int) -> int:
    if not text.isdigit() or int(text) < minimum:
        raise ValueError(f"must be a whole number of at least {minimum}, not {text!r}")
    return int(text)


def positive_int(text: str) -> int:
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def _number(text: str, *, zero_allowed: bool, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_allowed):
        raise ValueError(f"must be {what}, not {text!r}")
    return value


def positive_float(text: str) -> float:
    return _number(text, zero_allowed=False, what="a positive number of seconds")


def non_negative_float(text: str) -> float:
    return _number(text, zero_allowed=True, what="a number of at least 0")


def networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise ValueError(f"must be comma-separated networks like 127.0.0.0/8,::1/128 ({error})") from None


def host(text: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"must be a host name or IP address, not {text!r}")
    if text.replace(".", "").isdigit():
        ipaddress.ip_address(text)  # raises ValueError on 999.1.1.1
    return text


def database_url(text: str) -> str:
    if text.startswith("sqlite:///") and len(text) > len("sqlite:///"):
        return text
    if re.match(r"^postgres(ql)?://", text):
        return text
    raise ValueError(f"must be sqlite:///PATH or postgresql://..., not {text!r}")


_HOST_PORT = r"[A-Za-z0-9_.\-\[\]:]+:\d{1,5}"
_BACKEND = re.compile(
    rf"^(?:{_HOST_PORT}"  # host:port
    rf"|dns:(?://[A-Za-z0-9_.\-:\[\]]*)?/{_HOST_PORT}"  # dns:///name:port, dns://resolver/name:port
    rf"|ipv[46]:{_HOST_PORT}(?:,{_HOST_PORT})*)$"  # ipv4:a:p,b:q (a fixed list)
)


def backend_target(text: str) -> str:
    """A gRPC target: each address it names is balanced round-robin."""
    if _BACKEND.match(text):
        return text
    raise ValueError(f"must be HOST:PORT, dns:///NAME:PORT or ipv4:HOST:PORT,HOST:PORT..., not {text!r}")


def existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise ValueError(f"no such file: {text!r}")
    return path


def log_level(text: str) -> str:
    if text.lower() not in ("debug", "info", "warning", "error"):
        raise ValueError(f"must be debug, info, warning or error, not {text!r}")
    return text.lower()


def synchronous(text: str) -> Synchronous:
    if text.lower() == "full":
        return "full"
    if text.lower() == "normal":
        return "normal"
    raise ValueError(f"must be full or normal, not {text!r}")


def boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"must be true or false, not {text!r}")


@dataclass(frozen=True)
class Option:
    """One setting: its flag, how its value is parsed, its default, and what it is for."""

    flag: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    is_switch: bool = False
    metavar: str | None = None
    required: bool = False

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


HOST = Option("--host", host, "127.0.0.1", "address to listen on")
HTTP_PORT = Option("--http-port", port, 8080, "REST port (0 picks a free one)")
GRPC_PORT = Option("--grpc-port", port, 50051, "gRPC port (0 picks a free one)")
ADMIN_PORT = Option(
    "--admin-port",
    port,
    None,
    "serve /healthz, /readyz and /metrics on this port instead of the REST port (0 picks a free one)",
)
DATABASE = Option("--database", database_url, DEFAULT_DATABASE, "sqlite:///PATH or postgresql://...")
NO_DEMO = Option(
    "--no-demo",
    boolean,
    False,
    "do not create the demo account and orders on the default database",
    is_switch=True,
)
DEMO = Option(
    "--demo",
    boolean,
    False,
    "create the demo account and orders on --database too (loopback --host only)",
    is_switch=True,
)
SQLITE_SYNCHRONOUS = Option(
    "--sqlite-synchronous",
    synchronous,
    "full",
    "full: an answered change survives a power cut; normal: faster, but the last answered changes"
    " may be lost to a power cut or OS crash (never to a process crash)",
)
WORKERS = Option("--workers", positive_int, 1, "processes sharing the ports (SO_REUSEPORT)")
BACKEND = Option("--backend", backend_target, None, "gRPC servers to call: HOST:PORT or dns:///NAME:PORT")
GRACE = Option("--grace", positive_float, 10.0, "seconds in-flight calls get to finish on SIGTERM/SIGINT")
DEFAULT_TIMEOUT = Option(
    "--default-timeout", positive_float, 10.0, "deadline of a REST call without Grpc-Timeout"
)
MAX_TIMEOUT = Option("--max-timeout", positive_float, 60.0, "cap on any call's deadline, REST and gRPC")
MAX_BODY = Option("--max-body-bytes", positive_int, 65536, "largest REST request body (else 413)")
BODY_TIMEOUT = Option(
    "--body-timeout", positive_float, 10.0, "seconds a REST request body may take to arrive"
)
LOG_LEVEL = Option("--log-level", log_level, "info", "debug, info, warning or error")
TLS_CERT = Option("--tls-cert", existing_file, None, "PEM certificate chain: serve REST and gRPC over TLS")
TLS_KEY = Option("--tls-key", existing_file, None, "PEM private key of --tls-cert")
TLS_CLIENT_CA = Option(
    "--tls-client-ca", existing_file, None, "PEM CA: gRPC clients must present a certificate it signed"
)
BACKEND_CA = Option("--backend-ca", existing_file, None, "PEM CA to trust for a TLS --backend")
BACKEND_CERT = Option(
    "--backend-cert", existing_file, None, "PEM client certificate for a mutual-TLS --backend"
)
BACKEND_KEY = Option("--backend-key", existing_file, None, "PEM private key of --backend-cert")
RATE_LIMIT = Option(
    "--rate-limit", non_negative_float, 0.0, "calls a second per account, on average (0: no limit)"
)
RATE_BURST = Option("--rate-burst", non_negative_int, 0, "calls per account at once (0: twice --rate-limit)")
AUTH_FAILURE_LIMIT = Option(
    "--auth-failure-limit",
    non_negative_int,
    20,
    "failed authentications per client address per window (0: off)",
)
AUTH_FAILURE_WINDOW = Option(
    "--auth-failure-window", positive_float, 60.0, "seconds of the failed-authentication window and lock-out"
)
TRUSTED_PROXIES = Option(
    "--trusted-proxies",
    networks,
    (),
    "networks of the proxies (REST) or REST front ends (gRPC) whose X-Forwarded-For names the client",
)
MAX_CONNECTIONS = Option(
    "--max-connections",
    non_negative_int,
    0,
    "open REST connections at most (0: from the descriptor limit, with head-room)",
)
HEADER_TIMEOUT = Option(
    "--header-timeout", positive_float, 5.0, "seconds a REST connection may take to send a request head"
)
KEEPALIVE_TIMEOUT = Option(
    "--keepalive-timeout", positive_float, 15.0, "seconds an idle REST keep-alive connection is kept"
)
GRPC_MAX_CONNECTION_IDLE = Option(
    "--grpc-max-connection-idle", positive_float, 300.0, "seconds a gRPC connection without calls is kept"
)
GRPC_MAX_CONNECTION_AGE = Option(
    "--grpc-max-connection-age", positive_float, 3600.0, "seconds before a gRPC connection is asked to go"
)
GRPC_MAX_CONCURRENT_STREAMS = Option(
    "--grpc-max-concurrent-streams", positive_int, 100, "gRPC calls in flight on one connection at most"
)
_WEBHOOK_DEFAULTS = WebhookSettings()
WEBHOOK_RETRIES = Option(
    "--webhook-retries",
    non_negative_int,
    _WEBHOOK_DEFAULTS.retries,
    "times a webhook delivery is sent again after a 5xx, 3xx, timeout or no connection, before it fails",
)
WEBHOOK_RETRY_INTERVAL = Option(
    "--webhook-retry-interval",
    positive_float,
    _WEBHOOK_DEFAULTS.retry_interval_s,
    "seconds between a failed webhook attempt and the next",
)
WEBHOOK_TIMEOUT = Option(
    "--webhook-timeout",
    positive_float,
    _WEBHOOK_DEFAULTS.timeout_s,
    "seconds a webhook receiver has to answer",
)
WEBHOOK_LEASE = Option(
    "--webhook-lease",
    positive_float,
    _WEBHOOK_DEFAULTS.lease_s,
    "seconds a claimed delivery is this process's alone (longer than --webhook-timeout); after a"
    " crash, another process takes it over once it runs out",
)
ACCOUNT = Option("--account", str, None, "the account that owns the orders", required=True)
COUNT = Option("--count", positive_int, None, "how many orders", required=True)
PREFIX = Option("--prefix", str, "load-", "handle prefix")
WEBHOOK_ACCOUNT = Option("--account", str, None, "the account whose webhook this is", required=True)
WEBHOOK_URL = Option(
    "--url",
    webhook_url,
    None,
    f"where the account's order events are POSTed: an http:// or https:// URL with a host, without"
    f" user name, password or #fragment, at most {MAX_URL_LENGTH} characters",
    required=True,
)

# Settings come in groups, so that each command takes whole groups: the same limits on every
# server that has them, the same TLS wherever it listens.
_PROCESS = (HOST, ADMIN_PORT, WORKERS, GRACE, LOG_LEVEL, MAX_TIMEOUT, TRUSTED_PROXIES)
_REST_SERVER = (HTTP_PORT, DEFAULT_TIMEOUT, MAX_BODY, BODY_TIMEOUT, MAX_CONNECTIONS, HEADER_TIMEOUT,
                KEEPALIVE_TIMEOUT)  # fmt: skip
_SERVER_TLS = (TLS_CERT, TLS_KEY)
_STORE = (DATABASE, NO_DEMO, DEMO, SQLITE_SYNCHRONOUS)
_GRPC_SERVER = (GRPC_PORT, TLS_CLIENT_CA, RATE_LIMIT, RATE_BURST, AUTH_FAILURE_LIMIT, AUTH_FAILURE_WINDOW,
                GRPC_MAX_CONNECTION_IDLE, GRPC_MAX_CONNECTION_AGE, GRPC_MAX_CONCURRENT_STREAMS)  # fmt: skip
_WEBHOOKS = (WEBHOOK_RETRIES, WEBHOOK_RETRY_INTERVAL, WEBHOOK_TIMEOUT, WEBHOOK_LEASE)

SERVE_OPTIONS = (*_PROCESS, *_REST_SERVER, *_SERVER_TLS, *_STORE, *_GRPC_SERVER, *_WEBHOOKS)
GRPC_OPTIONS = (*_PROCESS, *_SERVER_TLS, *_STORE, *_GRPC_SERVER, *_WEBHOOKS)
HTTP_OPTIONS = (*_PROCESS, *_REST_SERVER, BACKEND, *_SERVER_TLS, BACKEND_CA, BACKEND_CERT, BACKEND_KEY)


class OneLineParser(argparse.ArgumentParser):
    """Errors are one line on stderr and exit status 2, without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_options(
    parser: argparse.ArgumentParser, options: Sequence[Option], environ: Mapping[str, str]
) -> None:
    """Add each option as a flag whose default comes from its environment variable, if set."""
    for option in options:
        default = option.default
        if option.env in environ:
            try:
                default = option.parse(environ[option.env])
            except ValueError as error:
                parser.exit(2, f"{parser.prog}: error: {option.env}: {error}\n")
        shown_default = "required" if option.required else f"default {_shown(option.default)}"
        help_text = f"{option.help} [env {option.env}; {shown_default}]"
        if option.is_switch:
            parser.add_argument(
                option.flag, dest=option.dest, action="store_true", default=default, help=help_text
            )
        else:
            parser.add_argument(
                option.flag,
                dest=option.dest,
                type=_argparse_type(option),
                default=default,
                help=help_text,
                required=option.required and option.env not in environ,
            )


def _shown(default: Any) -> str:
    """A default as it would be typed: `127.0.0.0/8,::1/128`, not the repr of a tuple of networks."""
    if isinstance(default, tuple):
        return ",".join(str(part) for part in default) or "none"
    if default is None:
        return "none"
    return str(default)


def _argparse_type(option: Option) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return option.parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = option.dest
    return parse


def check_pairs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Settings that only make sense together."""
    pairs = (("tls_cert", "tls_key"), ("backend_cert", "backend_key"))
    for first, second in pairs:
        if (getattr(args, first, None) is None) != (getattr(args, second, None) is None):
            parser.error(f"--{first.replace('_', '-')} and --{second.replace('_', '-')} go together")
    if getattr(args, "tls_client_ca", None) is not None and getattr(args, "tls_cert", None) is None:
        parser.error("--tls-client-ca needs --tls-cert and --tls-key")
    if getattr(args, "default_timeout", 0) > getattr(args, "max_timeout", float("inf")):
        parser.error("--default-timeout must not exceed --max-timeout")
    if getattr(args, "demo", False) and not is_loopback(args.host):
        parser.error(
            f"--demo needs a loopback --host: the demo account's secret is public, not for {args.host}"
        )
    if getattr(args, "demo", False) and getattr(args, "no_demo", False):
        parser.error("--demo and --no-demo contradict each other")
    if getattr(args, "webhook_lease", math.inf) <= getattr(args, "webhook_timeout", 0):
        parser.error("--webhook-lease must be longer than --webhook-timeout")


def environ() -> Mapping[str, str]:
    """The process environment: read here, at the edge, and nowhere else."""
    return os.environ


def _otel_pairs(env: Mapping[str, str], name: str) -> list[tuple[str, str]]:
    """`key=value,...` with percent-encoded values (OTEL_RESOURCE_ATTRIBUTES, the OTLP headers)."""
    pairs = []
    for entry in env.get(name, "").split(","):
        if not entry.strip():
            continue
        key, equals, value = entry.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"{name}: entries must be key=value, not {entry.strip()!r}")
        pairs.append((key.strip(), urllib.parse.unquote(value.strip())))
    return pairs


def _otel_endpoint(env: Mapping[str, str], protocol: str) -> str | None:
    """The OTLP traces URL: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as it is, else the signal's path
    added to OTEL_EXPORTER_OTLP_ENDPOINT (for http/protobuf: gRPC has one endpoint for all)."""
    name = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    endpoint = env.get(name, "").strip()
    if not endpoint:
        name = "OTEL_EXPORTER_OTLP_ENDPOINT"
        endpoint = env.get(name, "").strip()
        if endpoint and protocol == "http/protobuf":
            endpoint = endpoint.rstrip("/") + "/v1/traces"
    if not endpoint:
        return None
    if urllib.parse.urlsplit(endpoint).scheme not in ("http", "https"):
        raise ValueError(f"{name}: must be an http:// or https:// URL, not {endpoint!r}")
    return endpoint


def tracing_settings(env: Mapping[str, str]) -> TracingSettings:
    """The tracing the standard OpenTelemetry variables ask for: on when an OTLP endpoint is named,
    unless OTEL_SDK_DISABLED is true or OTEL_TRACES_EXPORTER is `none`. The other OTEL_* variables
    are read only then. Raises ValueError naming the variable that is wrong."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return TracingSettings()
    exporters = {e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if e.strip()}
    if exporters <= {"none"}:
        return TracingSettings()
    if exporters != {"otlp"}:
        raise ValueError(f"OTEL_TRACES_EXPORTER: only otlp (or none) is supported, not {sorted(exporters)}")
    protocol_variable = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
    if not env.get(protocol_variable, "").strip():
        protocol_variable = "OTEL_EXPORTER_OTLP_PROTOCOL"
    protocol = env.get(protocol_variable, "").strip() or "http/protobuf"
    if protocol not in ("http/protobuf", "grpc"):
        raise ValueError(f"{protocol_variable}: must be http/protobuf or grpc, not {protocol!r}")
    endpoint = _otel_endpoint(env, protocol)
    if endpoint is None:
        return TracingSettings()
    if protocol == "grpc" and importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is None:
        raise ValueError(
            f"{protocol_variable}: grpc needs the opentelemetry-exporter-otlp-proto-grpc package installed"
        )
    headers = dict(_otel_pairs(env, "OTEL_EXPORTER_OTLP_HEADERS"))
    headers.update(_otel_pairs(env, "OTEL_EXPORTER_OTLP_TRACES_HEADERS"))
    resource = dict(_otel_pairs(env, "OTEL_RESOURCE_ATTRIBUTES"))
    service_name = env.get("OTEL_SERVICE_NAME", "").strip() or resource.pop("service.name", "")
    from gateway.observability.tracing import SAMPLERS  # OpenTelemetry, only when tracing is on

    sampler = env.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    if sampler not in SAMPLERS:
        choices = ", ".join(sorted(SAMPLERS))
        raise ValueError(f"OTEL_TRACES_SAMPLER: must be one of {choices}, not {sampler!r}")
    ratio = 1.0
    if "traceidratio" in sampler and env.get("OTEL_TRACES_SAMPLER_ARG", "").strip():
        text = env["OTEL_TRACES_SAMPLER_ARG"].strip()
        try:
            ratio = _number(text, zero_allowed=True, what="a ratio from 0 to 1")
        except ValueError as error:
            raise ValueError(f"OTEL_TRACES_SAMPLER_ARG: {error}") from None
        if ratio > 1:
            raise ValueError(f"OTEL_TRACES_SAMPLER_ARG: must be a ratio from 0 to 1, not {text!r}")
    delay_ms = 5000.0
    if env.get("OTEL_BSP_SCHEDULE_DELAY", "").strip():
        try:
            delay_ms = non_negative_float(env["OTEL_BSP_SCHEDULE_DELAY"])
        except ValueError as error:
            raise ValueError(f"OTEL_BSP_SCHEDULE_DELAY: {error} (milliseconds)") from None
    return TracingSettings(
        endpoint=endpoint,
        protocol="grpc" if protocol == "grpc" else "http/protobuf",
        headers=tuple(headers.items()),
        service_name=service_name or TracingSettings().service_name,
        resource_attributes=tuple(resource.items()),
        sampler=sampler,
        sampler_arg=ratio,
        export_delay_s=delay_ms / 1000,
    )


def _tracing_or_exit(env: Mapping[str, str]) -> TracingSettings:
    try:
        return tracing_settings(env)
    except ValueError as error:
        print(f"hypertrack-gateway: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def service_settings(mode: Mode, args: argparse.Namespace) -> GatewaySettings:
    """The typed settings of `serve`, `grpc` or `http` from its parsed flags (after check_pairs).
    Each command has the option groups listed above: which flags exist follows from `mode`."""
    serves_rest, serves_grpc = mode != "grpc", mode != "http"
    tls = None
    if args.tls_cert is not None:
        tls = ServerTlsFiles(args.tls_cert, args.tls_key, args.tls_client_ca if serves_grpc else None)
    ports = {}
    if serves_rest:
        ports["http_port"] = args.http_port
    if serves_grpc:
        ports["grpc_port"] = args.grpc_port
    settings = GatewaySettings(
        mode=mode,
        listen=ListenSettings(
            host=args.host, admin_port=args.admin_port, tls=tls, reuse_port=args.workers > 1, **ports
        ),
        logging=LogSettings(level=args.log_level),
        tracing=_tracing_or_exit(environ()),
        workers=args.workers,
        grace_s=args.grace,
        backend=_backend_settings(args) if mode == "http" else None,
        admission=AdmissionSettings(trusted_proxies=args.trusted_proxies),
    )
    if serves_rest:
        settings = dataclasses.replace(
            settings,
            rest=RestSettings(
                max_body_bytes=args.max_body_bytes,
                body_timeout_s=args.body_timeout,
                deadlines=DeadlinePolicy(args.default_timeout, args.max_timeout),
            ),
            connections=ConnectionSettings(
                max_connections=args.max_connections,
                header_timeout_s=args.header_timeout,
                keepalive_timeout_s=args.keepalive_timeout,
            ),
        )
    if serves_grpc:
        settings = dataclasses.replace(
            settings,
            store=StoreSettings(
                args.database,
                demo=wants_demo(args),
                sqlite_synchronous=args.sqlite_synchronous,
            ),
            grpc=GrpcSettings(
                max_timeout_s=args.max_timeout,
                connections=ConnectionLimits(
                    max_connection_idle_s=args.grpc_max_connection_idle,
                    max_connection_age_s=args.grpc_max_connection_age,
                    max_concurrent_streams=args.grpc_max_concurrent_streams,
                ),
            ),
            webhooks=WebhookSettings(
                retries=args.webhook_retries,
                retry_interval_s=args.webhook_retry_interval,
                timeout_s=args.webhook_timeout,
                lease_s=args.webhook_lease,
            ),
            admission=AdmissionSettings(
                rate_limit=args.rate_limit,
                rate_burst=args.rate_burst,
                auth_failure_limit=args.auth_failure_limit,
                auth_failure_window_s=args.auth_failure_window,
                trusted_proxies=args.trusted_proxies,
            ),
        )
    return settings


def wants_demo(args: argparse.Namespace) -> bool:
    """The demo account only where it is safe: on the embedded default database (unless --no-demo),
    or where --demo asks for it."""
    return args.demo or (args.database == DEFAULT_DATABASE and not args.no_demo)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost may resolve anywhere
        return False


def _backend_settings(args: argparse.Namespace) -> BackendSettings:
    tls = None
    if args.backend_ca is not None:
        tls = BackendTlsFiles(args.backend_ca, args.backend_cert, args.backend_key)
    return BackendSettings(args.backend, tls)

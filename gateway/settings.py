"""What a running gateway is told: frozen, typed settings, one object per concern.

The command line (gateway/config.py and gateway/cli.py) fills them once, at the edge, from
flags and `HYPERTRACK_GATEWAY_*` variables; tests and the benchmark build them directly.
Everything past that edge reads these objects, never the environment or the command line itself.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gateway.events.delivery import WebhookSettings
from gateway.events.hub import WatchSettings
from gateway.rest.app import RestSettings
from gateway.rpc.server import ConnectionLimits

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Mode = Literal["serve", "grpc", "http"]
"""serve: REST and gRPC in one process over the store; grpc: only gRPC over the store;
http: only REST, in front of gRPC servers elsewhere."""

DEFAULT_DATABASE = "sqlite:///var/hypertrack-gateway.db"


@dataclass(frozen=True, slots=True)
class ServerTlsFiles:
    """PEM files of a TLS listener; with `client_ca`, gRPC clients must present a certificate it signed."""

    cert: Path
    key: Path
    client_ca: Path | None = None


@dataclass(frozen=True, slots=True)
class ListenSettings:
    """Where the process listens, and over what. Port 0 picks a free port."""

    host: str = "127.0.0.1"
    http_port: int = 8080
    grpc_port: int = 50051
    admin_port: int | None = None
    """Where /healthz, /readyz and /metrics are served instead of the REST port; None: on it."""
    tls: ServerTlsFiles | None = None
    reuse_port: bool = False
    """Share the ports with other processes (SO_REUSEPORT): set for `--workers` above 1 only, so
    that a second server started by mistake on a port in use fails instead of sharing it."""


Synchronous = Literal["full", "normal"]


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """The database, and whether the demo account and orders are put in it at start-up."""

    database: str = DEFAULT_DATABASE
    demo: bool = False
    sqlite_synchronous: Synchronous = "full"
    """SQLite's `synchronous` pragma in WAL mode. `full`: an answered change survives a power cut.
    `normal`: it survives a crash of the process, but the last commits before a power cut or an OS
    crash may be rolled back."""


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """How the REST listener treats connections, so that a flood of them degrades service rather
    than taking it down."""

    max_connections: int = 0
    """Open REST connections at most; 0 derives it from the descriptor limit, leaving head-room for
    the database, gRPC and logs."""
    header_timeout_s: float = 5.0
    """Seconds a connection may take to send a complete request head, idle or not."""
    keepalive_timeout_s: float = 15.0
    """Seconds an idle keep-alive connection is kept open."""


@dataclass(frozen=True, slots=True)
class BackendTlsFiles:
    """PEM roots to trust for a TLS backend, and a client certificate and key for mutual TLS."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True, slots=True)
class BackendSettings:
    """The gRPC servers a REST-only front end calls (`host:port`, or `dns:///name:port` to balance)."""

    target: str
    tls: BackendTlsFiles | None = None


@dataclass(frozen=True, slots=True)
class GrpcSettings:
    """The gRPC server's own settings."""

    health_interval_s: float = 2.0
    """How often the health service asks the store whether it answers."""
    max_timeout_s: float = 60.0
    """Cap on a call's deadline, whatever `grpc-timeout` the caller sent."""
    connections: ConnectionLimits = field(default_factory=ConnectionLimits)
    """Idle and maximum age, streams per connection, keep-alive enforcement (gateway/rpc/server.py);
    the connection cap and handshake timeout are derived at start-up (gateway/descriptors.py)."""


@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    """Limits every call passes before it runs; 0 turns a limit off."""

    rate_limit: float = 0.0
    """Calls a second per account, on average."""
    rate_burst: int = 0
    """Calls per account at once; 0 means twice `rate_limit`."""
    auth_failure_limit: int = 20
    """Failed authentications per client address per window."""
    auth_failure_window_s: float = 60.0
    trusted_proxies: tuple[Network, ...] = ()
    """Networks of the proxies (for a REST server) or REST front ends (for a gRPC server) whose
    forwarding header names the client. Nothing is trusted unless named."""


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    shared_directory: Path | None = None
    """The run's private directory where each of `--workers` writes its metrics, so that /metrics
    answers for all of them (set by the supervisor); None: this process's own metrics."""


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = "info"
    access_log: bool = True
    """One JSON line per REST request and per call through the gRPC server, at `info`."""


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """OpenTelemetry tracing, from the standard `OTEL_*` variables (gateway/config.py reads them).
    Off unless an OTLP endpoint is named; then spans go to it in batches."""

    endpoint: str | None = None
    """Where the spans go: the OTLP traces URL (for http/protobuf, with its `/v1/traces`); None: off."""
    protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """Sent with every export (a collector's API key, say): never shown."""
    service_name: str = "hypertrack-gateway"
    resource_attributes: tuple[tuple[str, str], ...] = ()
    sampler: str = "parentbased_always_on"
    sampler_arg: float = 1.0
    """The ratio of the `traceidratio` samplers."""
    export_delay_s: float = 5.0
    """Longest a finished span waits before it is sent (OTEL_BSP_SCHEDULE_DELAY)."""

    @property
    def enabled(self) -> bool:
        return self.endpoint is not None


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Everything one gateway process runs with."""

    mode: Mode = "serve"
    listen: ListenSettings = field(default_factory=ListenSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    """Unused by `http`, which has no store."""
    backend: BackendSettings | None = None
    """Required by `http`; `serve` calls its own servicer in-process."""
    rest: RestSettings = field(default_factory=RestSettings)
    connections: ConnectionSettings = field(default_factory=ConnectionSettings)
    grpc: GrpcSettings = field(default_factory=GrpcSettings)
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)
    logging: LogSettings = field(default_factory=LogSettings)
    tracing: TracingSettings = field(default_factory=TracingSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    """How the outbox is delivered (gateway/events/delivery.py); unused by `http`, which has no store."""
    watch: WatchSettings = field(default_factory=WatchSettings)
    """The fan-out of events to WatchOrderEvents streams (gateway/events/hub.py); unused by `http`."""
    workers: int = 1
    grace_s: float = 10.0
    """Seconds calls in flight get to finish on SIGTERM or SIGINT."""

    def __post_init__(self) -> None:
        if self.mode == "http" and self.backend is None:
            raise ValueError("http needs a backend")
        if self.mode != "http" and self.backend is not None:
            raise ValueError(f"{self.mode} serves its own calls and takes no backend")

    @property
    def serves_rest(self) -> bool:
        return self.mode in ("serve", "http")

    @property
    def serves_grpc(self) -> bool:
        return self.mode in ("serve", "grpc")


def redacted(url: str) -> str:
    """A database URL fit to print: any password replaced by `***`."""
    return re.sub(r"^(postgres(?:ql)?://[^:/@]+):[^@]*@", r"\1:***@", url)

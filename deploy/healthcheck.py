#!/opt/hypertrack-gateway/bin/python3
"""The container image's HEALTHCHECK: is the gateway process up and answering?

`serve` and `http` answer `GET /healthz` on the REST port (or on --admin-port, as any command does
when it is set); `grpc` without it has no REST port, so where nothing listens there the standard
gRPC health service is asked instead. Liveness only, like /healthz: a gRPC server that answers
NOT_SERVING (its database is away) is alive, and restarting it would not bring the database back;
/readyz and the gRPC health status tell readiness. Settings come from the same
HYPERTRACK_GATEWAY_* variables as the gateway's. The image has no curl: the standard library and
the gateway's own grpcio do the asking. Exit 0 healthy, 1 not."""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 3.0


def setting(name: str, default: str) -> str:
    return os.environ.get(f"HYPERTRACK_GATEWAY_{name}", "") or default


def local_address() -> str:
    """Where to reach this container's own listener: a wildcard address is reached on loopback."""
    host = setting("HOST", "127.0.0.1")
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def check_rest(address: str) -> bool | None:
    """True when /healthz answers 200, False on another answer, None when nothing listens."""
    tls = bool(setting("TLS_CERT", ""))
    # /healthz moves to the admin port when one is set (set it by its variable, not the flag, for
    # this check to find it).
    rest_port = setting("ADMIN_PORT", "") or setting("HTTP_PORT", "8080")
    url = f"{'https' if tls else 'http'}://{address}:{rest_port}/healthz"
    # Our own certificate, asked for on our own address: its name cannot be expected to match.
    context = ssl._create_unverified_context() if tls else None
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S, context=context) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as error:
        print(f"{url}: {error.code}", file=sys.stderr)
        return False
    except urllib.error.URLError as error:
        if isinstance(error.reason, ConnectionRefusedError):
            return None
        print(f"{url}: {error.reason}", file=sys.stderr)
        return False


def check_grpc(address: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = f"{address}:{setting('GRPC_PORT', '50051')}"
    if setting("TLS_CERT", ""):
        # With TLS (perhaps mutual) this process holds no client credentials: that the port
        # accepts connections is what can be told.
        import socket

        host = address.strip("[]")
        try:
            socket.create_connection((host, int(setting("GRPC_PORT", "50051"))), TIMEOUT_S).close()
        except OSError as error:
            print(f"{target}: {error}", file=sys.stderr)
            return False
        return True
    with grpc.insecure_channel(target) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_S
            )
        except grpc.RpcError as error:
            print(f"{target}: {error.code().name} {error.details()}", file=sys.stderr)
            return False
    print(f"{target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)}")
    return True


def main() -> int:
    address = local_address()
    rest = check_rest(address)
    healthy = check_grpc(address) if rest is None else rest
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())

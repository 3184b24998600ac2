#!/usr/bin/env bash
# Smoke test of the container image and compose.yaml's stack, with podman and podman-compose:
# build both images, bring the stack up, then through it: an account made by a one-shot compose run
# of `accounts create`, an order tracked and cancelled through `http`, that order read back over
# gRPC inside each `grpc` container (so also through the one that did not serve the cancel: they
# share PostgreSQL), and /readyz 200. The stack is taken down and its containers and network
# removed at the end, also on failure.
#
#   deploy/smoke.sh                                  # images from the public bases
#   GATEWAY_BASE=localhost/debian-python:bookworm POSTGRES_BASE=localhost/debian-python:bookworm \
#     deploy/smoke.sh                                # from the local base (deploy/base-image.sh)
#
# On our machines podman also needs CONTAINERS_CONF=deploy/podman/containers.conf (.ci/run sets it).
set -euo pipefail
cd "$(dirname "$0")/.."

project="${SMOKE_PROJECT:-hypertrack-smoke}"
network="${project}_default"
# Not 8080: a developer's `make run` may hold it.
export HYPERTRACK_HTTP_PORT="${HYPERTRACK_HTTP_PORT:-18080}"
base_url="http://127.0.0.1:${HYPERTRACK_HTTP_PORT}"
# The OCI image format has no HEALTHCHECK: build in Docker's.
export BUILDAH_FORMAT=docker
compose=(podman-compose --no-ansi -p "$project" -f compose.yaml)
# The subnet compose.yaml fixes (its grpc services trust it): podman-compose 1.0.3 ignores `ipam`,
# so the network is made here, before compose would make one of its own choosing.
subnet="$(awk '$1 == "-" && $2 == "subnet:" { print $3; exit }' compose.yaml)"
log="$(mktemp -d)"

say() { printf '%s smoke: %s\n' "$(date +%T)" "$*"; }

cleanup() {
  local status=$?
  if [ "$status" -ne 0 ]; then
    say "FAILED; the stack's logs:"
    for name in $(podman ps -a --format '{{.Names}}' --filter "label=io.podman.compose.project=${project}"); do
      echo "--- ${name}"
      podman logs --tail 40 "$name" 2>&1 || true
    done
    echo "--- podman-compose"
    tail -n 40 "$log/compose.log" 2>/dev/null || true
  fi
  say "down"
  "${compose[@]}" down >>"$log/compose.log" 2>&1 || true
  # What `down` leaves: containers it does not know (one-shot runs) and the network.
  podman ps -a -q --filter "label=io.podman.compose.project=${project}" | xargs -r podman rm -f >/dev/null 2>&1 || true
  podman network rm -f "$network" >/dev/null 2>&1 || true
  rm -rf "$log"
  exit "$status"
}
trap cleanup EXIT

# What an interrupted earlier run may have left.
"${compose[@]}" down >/dev/null 2>&1 || true
podman network rm -f "$network" >/dev/null 2>&1 || true

say "build (gateway base ${GATEWAY_BASE:-python:3.11-slim}, postgres base ${POSTGRES_BASE:-debian:bookworm-slim})"
start=$SECONDS
"${compose[@]}" build postgres migrate >"$log/build.log" 2>&1 || { tail -n 40 "$log/build.log"; exit 1; }
say "built in $((SECONDS - start)) s; gateway image $(podman image inspect --format '{{.Size}}' hypertrack-gateway:latest | awk '{printf "%.0f MB", $1 / 1e6}')"
podman image inspect --format '{{.Config.User}} {{json .Config.Healthcheck.Test}}' hypertrack-gateway:latest |
  grep -q '^10001:10001 \["CMD","hypertrack-gateway-healthcheck"\]$' ||
  { say "the image must run as 10001 and keep its HEALTHCHECK"; exit 1; }

podman network create --subnet "$subnet" --label "io.podman.compose.project=${project}" "$network" >/dev/null
start=$SECONDS
"${compose[@]}" up -d >"$log/compose.log" 2>&1

say "waiting for the one-shot migrate"
status="$(podman wait "${project}_migrate_1")"
[ "$status" = 0 ] || { say "migrate exited ${status}"; exit 1; }

say "waiting for ${base_url}/readyz"
ready=""
for _ in $(seq 120); do
  if [ "$(curl -s -o /dev/null -w '%{http_code}' "${base_url}/readyz")" = 200 ]; then ready=1; break; fi
  sleep 1
done
[ -n "$ready" ] || { say "/readyz never answered 200"; exit 1; }
# /readyz answers 200 as soon as one gRPC server serves: wait for both. A server whose first
# connection to PostgreSQL fell to a lost DNS query (podman's DNS reloads as containers join) starts
# again by its restart policy.
for container in "${project}_grpc_1" "${project}_grpc_2"; do
  for _ in $(seq 90); do
    if podman exec "$container" hypertrack-gateway-healthcheck >/dev/null 2>&1; then continue 2; fi
    sleep 1
  done
  say "${container} never answered its health check"
  exit 1
done
say "ready $((SECONDS - start)) s after up"

# `http` balances over every address of the name `grpc`: there must be two.
addresses="$(podman exec "${project}_http_1" python3 -c \
  'import socket; print(len({a[4][0] for a in socket.getaddrinfo("grpc", 50051, proto=socket.IPPROTO_TCP)}))')"
[ "$addresses" = 2 ] || { say "the name grpc has ${addresses} address(es), not 2"; exit 1; }

say "accounts create, as a one-shot compose run"
credentials="$("${compose[@]}" run --rm --no-deps -T migrate accounts create smoke-partner 2>>"$log/compose.log" |
  grep -E '^smoke-partner:' | tail -n 1 || true)"
[ -n "$credentials" ] || { say "accounts create printed no ACCOUNT_ID:SECRET_KEY"; exit 1; }

request() { # METHOD PATH [BODY] -> "STATUS BODY" on stdout
  local method="$1" path="$2" body="${3:-}"
  local args=(-s -o "$log/body" -w '%{http_code}' -X "$method" -u "$credentials")
  [ -z "$body" ] || args+=(-H 'Content-Type: application/json' --data "$body")
  local code
  code="$(curl "${args[@]}" "${base_url}${path}")"
  printf '%s %s\n' "$code" "$(cat "$log/body")"
}
expect() { # WANT_STATUS WANT_TEXT "STATUS BODY"
  case "$3" in
    "$1 "*"$2"*) ;;
    *) say "expected $1 with $2, got: ${3:0:400}"; exit 1 ;;
  esac
}

handle="smoke-$(date +%s)"
say "track ${handle} through http"
expect 201 "\"order_handle\":\"${handle}\"" "$(request POST /orders/track \
  "{\"worker_handle\":\"smoke-worker\",\"track_mode\":\"flex\",\"orders\":[{\"order_handle\":\"${handle}\",\"destination\":{\"geometry\":{\"type\":\"Point\",\"coordinates\":[-122.4194,37.7749]}}}]}")"

say "cancel ${handle} through http"
expect 200 '"status":"cancelled"' "$(request POST "/orders/${handle}/cancel" '{}')"
expect 200 '"status":"cancelled"' "$(request POST "/orders/${handle}/cancel" '{}')"
expect 401 '"message"' "$(curl -s -w '%{http_code} ' -o "$log/body" -X POST -u smoke-partner:wrong \
  "${base_url}/orders/${handle}/cancel"; cat "$log/body")"

# Inside each grpc container, against its own server: whichever served the cancel, the other
# reads the same order from the shared database. Four events: created, assigned, started, cancelled,
# once each although the cancel was sent twice.
for container in "${project}_grpc_1" "${project}_grpc_2"; do
  got="$(podman exec -i "$container" python3 - "$handle" "$credentials" <deploy/grpc_get_order.py)"
  [ "$got" = "ORDER_STATUS_CANCELLED 4" ] || { say "${container}: GetOrder says '${got}'"; exit 1; }
  say "${container}: GetOrder ${handle}: ${got}"
done
podman exec "${project}_http_1" hypertrack-gateway-healthcheck >/dev/null ||
  { say "http: image healthcheck failed"; exit 1; }

expect 200 '' "$(curl -s -w '%{http_code} ' -o "$log/body" "${base_url}/readyz"; cat "$log/body")"
say "passed"

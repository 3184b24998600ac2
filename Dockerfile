# The gateway as a container image: any of its commands (serve, grpc, http, migrate, accounts,
# seed), as a non-root user, listening on all addresses.
#
#   docker build -t hypertrack-gateway .
#   podman build --format docker --build-arg BASE=localhost/debian-python:bookworm -t hypertrack-gateway .
#
# BASE is any Debian-like image with python3 (3.11+) and its venv module: the public
# python:3.11-slim by default, or a locally made base where no registry can be reached
# (deploy/base-image.sh). Commands say `python3`, never `python`: Debian's own Python has no
# `python` command. `--format docker` keeps the HEALTHCHECK (the OCI format has no such field).
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/hypertrack-gateway
# The runtime dependencies alone, exactly as locked (hash-checked, wheels only: nothing compiles).
# Their own layer, so that a change to the code reuses it.
COPY requirements.lock /tmp/requirements.lock
RUN /opt/hypertrack-gateway/bin/python3 -m pip install --quiet --require-hashes --only-binary=:all: \
      -r /tmp/requirements.lock
COPY pyproject.toml README.md /src/
COPY gateway /src/gateway
# The project without dependencies (all are in already); `pip check` fails the build when the lock
# misses one that pyproject.toml names. pip itself then goes: the image never installs anything.
RUN /opt/hypertrack-gateway/bin/python3 -m pip install --quiet --no-deps /src \
 && /opt/hypertrack-gateway/bin/python3 -m pip check \
 && /opt/hypertrack-gateway/bin/python3 -m pip uninstall --quiet --yes pip setuptools
COPY deploy/healthcheck.py /opt/hypertrack-gateway/bin/hypertrack-gateway-healthcheck

FROM ${BASE}
# A fixed numeric id, so that orchestrators can check that it is not root (runAsNonRoot).
RUN groupadd --gid 10001 gateway \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/hypertrack-gateway \
      --shell /usr/sbin/nologin gateway \
 && install -d -o gateway -g gateway -m 0700 /var/lib/hypertrack-gateway
# The venv's python3 links to the base's python3, so build and run stages share one BASE.
COPY --from=build /opt/hypertrack-gateway /opt/hypertrack-gateway
# HOST: a container is reached through its network interface, not its loopback.
# DATABASE: SQLite in the gateway user's directory (mount a volume there to keep it), for `serve`;
# scale-out commands name a PostgreSQL database instead. Not being the embedded default path,
# it gets no demo account (whose secret is public); NO_DEMO says so outright. Partners' accounts
# come from `accounts create`.
ENV PATH=/opt/hypertrack-gateway/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    HYPERTRACK_GATEWAY_HOST=0.0.0.0 \
    HYPERTRACK_GATEWAY_DATABASE=sqlite:////var/lib/hypertrack-gateway/gateway.db \
    HYPERTRACK_GATEWAY_NO_DEMO=true
WORKDIR /var/lib/hypertrack-gateway
USER 10001:10001
EXPOSE 8080 50051
# /healthz where the process serves REST (serve, http), else the gRPC health service (grpc).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["hypertrack-gateway-healthcheck"]
ENTRYPOINT ["hypertrack-gateway"]
CMD ["serve"]

"""hypertrack-gateway: the HyperTrack v3 Orders API as a gRPC service with a REST + JSON front end.

The packages, from the inside out (ARCHITECTURE.md has the map and the import rules):
  domain/    the order rules as plain functions on protobuf data (no I/O), the one error family
  jsonmap/   JSON <-> protobuf, driven by the message descriptors
  store/     records and atomic transactions: SQLite, PostgreSQL
  calls/     the use cases over a store: the order calls, authentication, admission
  rpc/       the grpc.aio face: the OrdersService servicer, rich error status, health, reflection
  rest/      the aiohttp face: routes compiled from the protos' google.api.http rules, translation,
             the backend (in-process or remote gRPC), error bodies
  openapi/   the OpenAPI document
  settings.py, assembly.py   typed settings, and the one function that wires a gateway from them
  config.py, cli.py          the command line
"""

import os

# grpc core logs through its own C++ logger, in plain text, straight to stderr (under descriptor
# exhaustion, one line a second): not the JSON lines operators collect. Its verbosity is read once,
# when grpc is first imported, which this package does; an operator may still ask for ERROR or
# DEBUG by setting GRPC_VERBOSITY.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

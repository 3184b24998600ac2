"""hypertrack-gateway: the HyperTrack v3 Orders API as a gRPC service with a REST + JSON front end.

The flow of a call, by package:
  rest/      aiohttp front end: routes compiled from the protos' google.api.http rules,
             request translation, the backend (in-process or remote gRPC), error bodies
  jsonmap/   JSON <-> protobuf, driven by the message descriptors
  rpc/       grpc.aio server: the OrdersService servicer, rich error status, health, reflection
  service/   use cases: authentication and the order calls, over a store
  domain/    the order rules as plain functions on protobuf data (no I/O)
  store/     persistence behind one interface: SQLite, PostgreSQL
"""

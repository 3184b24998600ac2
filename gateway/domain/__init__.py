"""The order rules: plain functions on protobuf data, with no I/O, no gRPC and no HTTP."""

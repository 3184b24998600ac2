"""A gRPC client of unary calls, on the event loop: what the REST front end calls its gRPC servers
with (gateway/rest/backend.py). `channel.py` balances calls over the target's addresses and keeps
their connections, `connection.py` is one HTTP/2 connection, `hpack.py` and `huffman.py` its
header compression, `frames.py` the wire format, `resolver.py` targets and DNS, `failures.py`
how a call fails."""

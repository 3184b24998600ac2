"""JSON <-> protobuf for the REST front end, written once and driven by the message descriptors.

`encode_json(order)` writes a response body; `decode(CancelOrderRequest, body)` reads a request,
raising one InvalidArgument that names every field violation. The contract's own shapes (timestamps
with milliseconds, GeoJSON, metadata kept exactly, flat timeline events) are the named special cases
of shapes.py.
"""

from gateway.jsonmap.contracts import Json
from gateway.jsonmap.decode import JsonDecoder, decode
from gateway.jsonmap.encode import JsonEncoder, encode, encode_json

__all__ = ["Json", "JsonDecoder", "JsonEncoder", "decode", "encode", "encode_json"]

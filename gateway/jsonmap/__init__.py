"""JSON <-> protobuf for the REST front end, written once and driven by the message descriptors.

`encode_json(order)` writes a response body; `decode(CancelOrderRequest, body)` reads a request,
raising one InvalidArgument that names every field violation. The contract's own shapes (timestamps
with milliseconds, GeoJSON, metadata kept exactly, flat timeline events) are the named special cases
of shapes.py.
"""

from google.protobuf.message import Message

from gateway.jsonmap.contracts import Json
from gateway.jsonmap.decode import JsonDecoder, decode
from gateway.jsonmap.decode import prepare as _prepare_decoders
from gateway.jsonmap.encode import JsonEncoder, encode, encode_json
from gateway.jsonmap.encode import prepare as _prepare_encoders


def prepare(*message_types: type[Message]) -> None:
    """Compiles the shared encoders and decoders of these message types now, so that the first
    request of each type does not pay for it (call at start-up)."""
    _prepare_encoders(*message_types)
    _prepare_decoders(*message_types)


__all__ = ["Json", "JsonDecoder", "JsonEncoder", "decode", "encode", "encode_json", "prepare"]

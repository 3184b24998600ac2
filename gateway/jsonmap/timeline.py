"""`TimelineEvent` as one flat JSON object: `{"type": <event>, "recorded_at": ..., <event's fields>}`.

The protobuf keeps each event type as its own message in the oneof `event`, so that every event has
exactly its own fields; the contract flattens them, naming the event by its oneof member.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from gateway.domain.errors import FieldViolation
from gateway.jsonmap.contracts import MUST_BE_OBJECT, DecodeFn, EncodeFn, Json, child_path
from gateway.jsonmap.timestamps import decode_timestamp_into, encode_timestamp

EVENT_ONEOF = "event"
TYPE_KEY = "type"
RECORDED_AT = "recorded_at"


def _event_fields(descriptor: Descriptor) -> list[FieldDescriptor]:
    """The members of the oneof `event`, after checking the message has the shape the flat JSON
    relies on: a failure here is a change to the protos, caught when the mapping is compiled rather
    than by a field that silently goes missing from responses."""
    oneof = descriptor.oneofs_by_name.get(EVENT_ONEOF)
    if oneof is None:
        raise TypeError(f"{descriptor.full_name}: a timeline event needs a oneof {EVENT_ONEOF!r}")
    members = list(oneof.fields)
    others = [f.name for f in descriptor.fields if f.name not in {m.name for m in members}]
    if others != [RECORDED_AT]:
        raise TypeError(
            f"{descriptor.full_name}: the flat JSON has room for {RECORDED_AT!r} and the oneof only, not {others}"
        )
    for member in members:
        if member.message_type is None:
            raise TypeError(f"{descriptor.full_name}.{member.name}: an event must be a message")
        clash = {f.name for f in member.message_type.fields} & {TYPE_KEY, RECORDED_AT}
        if clash:
            raise TypeError(f"{member.message_type.full_name}: field {sorted(clash)} clashes with the flat JSON")
    return members


def timeline_event_encoder(descriptor: Descriptor, resolve: Callable[[Descriptor], EncodeFn]) -> EncodeFn:
    """The encoder of TimelineEvent; each event message is encoded by the generic rules."""
    events = {member.name: resolve(member.message_type) for member in _event_fields(descriptor)}

    def encode(event: Any) -> Json:
        name = event.WhichOneof(EVENT_ONEOF)
        out: dict[str, Json] = {} if name is None else {TYPE_KEY: name}
        if event.HasField(RECORDED_AT):
            out[RECORDED_AT] = encode_timestamp(event.recorded_at)
        if name is not None:
            out.update(cast("dict[str, Json]", events[name](getattr(event, name))))
        return out

    return encode


def timeline_event_decoder(descriptor: Descriptor, resolve: Callable[[Descriptor], DecodeFn]) -> DecodeFn:
    """The decoder of TimelineEvent. Violations inside the event are named in proto terms
    (`timeline[1].order_assigned.driver_handle`); a bad or missing type is named `timeline[1].type`."""
    events = {member.name: resolve(member.message_type) for member in _event_fields(descriptor)}
    must_be_event = "must be one of: " + ", ".join(events)

    def decode(event: Any, data: object, path: str, violations: list[FieldViolation]) -> None:
        if not isinstance(data, dict):
            violations.append(FieldViolation(path, MUST_BE_OBJECT))
            return
        recorded_at = data.get(RECORDED_AT)
        if recorded_at is not None:
            decode_timestamp_into(event.recorded_at, recorded_at, child_path(path, RECORDED_AT), violations)
        name = data.get(TYPE_KEY)
        decode_event = events.get(name) if isinstance(name, str) else None
        if decode_event is None:
            violations.append(FieldViolation(child_path(path, TYPE_KEY), must_be_event))
            return
        fields = {key: value for key, value in data.items() if key not in (TYPE_KEY, RECORDED_AT)}
        message = getattr(event, cast(str, name))
        message.SetInParent()
        decode_event(message, fields, child_path(path, name), violations)

    return decode

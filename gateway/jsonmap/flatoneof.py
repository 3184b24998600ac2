"""A message whose oneof is flattened into its own JSON object, the member named by a type key.

`TimelineEvent` keeps each event type as its own message in the oneof `event`, so that every event
has exactly its own fields; the contract flattens it: `{"type": "order_assigned", "recorded_at": ...,
"order_handle": ..., "driver_handle": ...}`. The JSON object holds the type key, then the message's
other fields, then the fields of the member that is set.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, FieldDescriptor


@dataclass(frozen=True, slots=True)
class FlatOneof:
    """How one message type is flattened: its oneof `oneof`, named by the JSON key `type_key`."""

    oneof: str
    type_key: str = "type"


@dataclass(frozen=True, slots=True)
class FlatLayout:
    """A checked layout: the fields outside the oneof, and the members as (name, message type)."""

    flat: FlatOneof
    fields: tuple[FieldDescriptor, ...]
    members: tuple[tuple[str, Descriptor], ...]


def flat_layout(descriptor: Descriptor, flat: FlatOneof) -> FlatLayout:
    """The layout of the message, after checking that flattening loses nothing: a failure here is a
    change to the protos, caught when the mapping is compiled rather than by a key that silently
    goes missing or is written twice."""
    oneof = descriptor.oneofs_by_name.get(flat.oneof)
    if oneof is None:
        raise TypeError(f"{descriptor.full_name}: no oneof {flat.oneof!r} to flatten")
    member_names = {member.name for member in oneof.fields}
    fields = tuple(f for f in descriptor.fields if f.name not in member_names)
    outer_keys = {flat.type_key} | {f.name for f in fields}
    if flat.type_key in {f.name for f in fields}:
        raise TypeError(f"{descriptor.full_name}: field {flat.type_key!r} clashes with the type key")
    members: list[tuple[str, Descriptor]] = []
    for member in oneof.fields:
        if member.message_type is None:
            raise TypeError(f"{member.full_name}: a flattened oneof member must be a message")
        clash = {f.name for f in member.message_type.fields} & outer_keys
        if clash:
            raise TypeError(
                f"{member.message_type.full_name}: fields {sorted(clash)} clash with the flat JSON"
            )
        members.append((member.name, member.message_type))
    return FlatLayout(flat, fields, tuple(members))

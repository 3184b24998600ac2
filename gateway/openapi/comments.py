"""The proto comments, by full name, read from the descriptor set shipped with the package: the
descriptions of the document's operations, schemas, properties and enum values."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError

from gateway.jsonmap.contracts import Schema
from gateway.protos import protoset_path

log = logging.getLogger(__name__)

_FILE = descriptor_pb2.FileDescriptorProto
_MESSAGE = descriptor_pb2.DescriptorProto
_ENUM = descriptor_pb2.EnumDescriptorProto
_SERVICE = descriptor_pb2.ServiceDescriptorProto


@dataclass(frozen=True, slots=True)
class Comments:
    """Leading comments of proto elements, by full name (`hypertrack.orders.v1.Order.status`)."""

    by_name: Mapping[str, str] = field(default_factory=dict)

    def of(self, full_name: str) -> str:
        return self.by_name.get(full_name, "")

    @classmethod
    def load(cls, path: Path | None = None) -> Comments:
        """The comments of a descriptor set with source info; none (and a warning) when it is missing
        or unreadable, so that the document loses its prose but not its shape."""
        path = protoset_path() if path is None else path
        try:
            files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file
        except (OSError, DecodeError) as error:
            log.warning("no proto comments for the OpenAPI document: %s: %s", path, error)
            return cls()
        by_name: dict[str, str] = {}
        for file in files:
            by_name.update(_file_comments(file))
        return cls(by_name)


def _clean(comment: str) -> str:
    """A comment's text: the space after `//` and surrounding blank lines removed."""
    lines = [line.removeprefix(" ").rstrip() for line in comment.splitlines()]
    return "\n".join(lines).strip()


def _file_comments(file: descriptor_pb2.FileDescriptorProto) -> dict[str, str]:
    """Full name -> comment of every message, field, enum, value, service and method of a file.

    SourceCodeInfo names an element by its path of field numbers and indexes in the
    FileDescriptorProto (`[4, 3, 2, 1]` is message_type[3].field[1]); this walks the same tree.
    """
    located = {
        tuple(location.path): _clean(location.leading_comments)
        for location in file.source_code_info.location
        if location.leading_comments
    }
    out: dict[str, str] = {}

    def note(full_name: str, path: tuple[int, ...]) -> None:
        if path in located:
            out[full_name] = located[path]

    def enum(proto: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], scope: str) -> None:
        name = f"{scope}.{proto.name}"
        note(name, path)
        for index, value in enumerate(proto.value):
            note(f"{name}.{value.name}", (*path, _ENUM.VALUE_FIELD_NUMBER, index))

    def message(proto: descriptor_pb2.DescriptorProto, path: tuple[int, ...], scope: str) -> None:
        name = f"{scope}.{proto.name}"
        note(name, path)
        for index, field_proto in enumerate(proto.field):
            note(f"{name}.{field_proto.name}", (*path, _MESSAGE.FIELD_FIELD_NUMBER, index))
        for index, nested in enumerate(proto.nested_type):
            message(nested, (*path, _MESSAGE.NESTED_TYPE_FIELD_NUMBER, index), name)
        for index, nested_enum in enumerate(proto.enum_type):
            enum(nested_enum, (*path, _MESSAGE.ENUM_TYPE_FIELD_NUMBER, index), name)

    for index, message_proto in enumerate(file.message_type):
        message(message_proto, (_FILE.MESSAGE_TYPE_FIELD_NUMBER, index), file.package)
    for index, enum_proto in enumerate(file.enum_type):
        enum(enum_proto, (_FILE.ENUM_TYPE_FIELD_NUMBER, index), file.package)
    for index, service in enumerate(file.service):
        service_name = f"{file.package}.{service.name}"
        note(service_name, (_FILE.SERVICE_FIELD_NUMBER, index))
        for method_index, method in enumerate(service.method):
            note(
                f"{service_name}.{method.name}",
                (_FILE.SERVICE_FIELD_NUMBER, index, _SERVICE.METHOD_FIELD_NUMBER, method_index),
            )
    return out


def summary(comment: str) -> str:
    """The first sentence of a comment, for an operation's one-line summary."""
    first_paragraph = comment.split("\n\n", 1)[0].replace("\n", " ")
    sentence, dot, _ = first_paragraph.partition(". ")
    return sentence + "." if dot else first_paragraph


def described(schema: Schema, *descriptions: str) -> Schema:
    """The schema with these descriptions (those not empty) as its own, in paragraphs."""
    text = "\n\n".join(part for part in descriptions if part)
    return {**schema, "description": text} if text else schema

"""REST calls derived from the service's google.api.http rules, read from its descriptors.

Adding an RPC with an http rule to the protos adds its REST call; nothing else is written
twice. Each rule says the HTTP method and path template, which field the body fills
(`*` for the whole request, a field name, or none), and which field of the response is
the body; the custom option `http_success_status` says when success is not 200.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from google.api import annotations_pb2 as google_annotations
from google.api import http_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from gateway.protos import annotations_pb2
from gateway.rest.pattern import PathTemplate, TemplateError
from gateway.rest.query import takes_query

_METHODS = ("get", "put", "post", "delete", "patch")


@dataclass(frozen=True, slots=True)
class RestCall:
    """One REST call: an RPC and the HTTP binding of one of its rules."""

    rpc: MethodDescriptor
    http_method: str
    path: PathTemplate
    body: str
    response_body: str
    success_status: int
    request_class: type[Message]
    response_class: type[Message]
    query_fields: dict[str, FieldDescriptor] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.rpc.name

    def location_of(self, field_path: str) -> tuple[str, str]:
        """Where a request field travels in HTTP: ("path"|"query"|"body", name there)."""
        head = field_path.split(".", 1)[0].split("[", 1)[0]
        if any(name == head for _, name in self.path.variables):
            return "path", field_path
        if self.body == "*":
            return "body", field_path
        if self.body and head == self.body:
            # Inside the body its fields go by their own names; the body field itself is "body",
            # as parse errors of the whole body name it (the caller never sees its proto name).
            return "body", field_path[len(self.body) + 1 :] or "body"
        return "query", field_path


def _bindings(rule: http_pb2.HttpRule) -> Iterator[http_pb2.HttpRule]:
    yield rule
    yield from rule.additional_bindings


def _query_fields(request: Descriptor, path: PathTemplate, body: str) -> dict[str, FieldDescriptor]:
    """Fields the query string may set (query.py's `takes_query`: scalars, enums, repeated enums,
    timestamps) bound neither by the path nor the body."""
    if body == "*":
        return {}
    bound = {name for _, name in path.variables} | {body}
    return {f.name: f for f in request.fields if f.name not in bound and takes_query(f)}


def rest_calls(service: ServiceDescriptor) -> list[RestCall]:
    """Every REST call of `service`, in declaration order; raises TemplateError on a rule it cannot serve."""
    calls = []
    for rpc in service.methods:
        options = rpc.GetOptions()
        if not options.HasExtension(google_annotations.http):
            continue
        success: int = options.Extensions[annotations_pb2.http_success_status] or 200  # type: ignore[index]
        for binding in _bindings(options.Extensions[google_annotations.http]):
            pattern = binding.WhichOneof("pattern")
            if pattern not in _METHODS:
                raise TemplateError(f"{rpc.full_name}: unsupported http pattern {pattern!r}")
            template = PathTemplate.compile(getattr(binding, pattern))
            for _, name in template.variables:
                if name not in rpc.input_type.fields_by_name:
                    raise TemplateError(f"{rpc.full_name}: path variable {name!r} is not a request field")
            for role, message, name in (
                ("body", rpc.input_type, binding.body),
                ("response_body", rpc.output_type, binding.response_body),
            ):
                bound = message.fields_by_name.get(name) if name not in ("", "*") else None
                if name not in ("", "*") and (
                    bound is None or bound.message_type is None or bound.is_repeated
                ):
                    raise TemplateError(f"{rpc.full_name}: {role} {name!r} is not a message field")
            calls.append(
                RestCall(
                    rpc=rpc,
                    http_method=pattern.upper(),
                    path=template,
                    body=binding.body,
                    response_body=binding.response_body,
                    success_status=success,
                    request_class=GetMessageClass(rpc.input_type),
                    response_class=GetMessageClass(rpc.output_type),
                    query_fields=_query_fields(rpc.input_type, template, binding.body),
                )
            )
    return calls

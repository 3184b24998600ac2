"""`webhooks`: what the gateway POSTs to an account's webhook URL (OpenAPI 3.1's top-level
`webhooks`), from the parts that own it: the body is an array of the OrderEvent message as the JSON
mapping writes it, the headers and the retry policy are gateway/events' (delivery.py, signing.py).
The receiver is the partner's: no credentials of ours, its answer decides what becomes of the
delivery."""

from __future__ import annotations

from gateway.events.delivery import DELIVERY_ID_HEADER, WebhookSettings
from gateway.events.signing import SCHEME, SIGNATURE_HEADER
from gateway.jsonmap.contracts import Direction, Schema, descriptor_of
from gateway.openapi.errors import JSON
from gateway.openapi.schemas import SchemaRegistry
from gateway.protos import events_pb2

WEBHOOK = "orderEvents"


def webhooks(registry: SchemaRegistry) -> dict[str, Schema]:
    """The document's `webhooks`: one, the order events."""
    policy = WebhookSettings()  # the defaults, which the contract states
    event = registry.message_ref(descriptor_of(events_pb2.OrderEvent), Direction.RESPONSE)
    return {
        WEBHOOK: {
            "post": {
                "operationId": "OrderEventsWebhook",
                "summary": "Order events, sent to the account's webhook URL.",
                "description": "When a cancel, complete or disable changes an order, the gateway "
                "POSTs the event to the URL the account subscribed (`hypertrack-gateway webhooks "
                "set`): a JSON array of one or more events of that account, oldest first. Delivery "
                "is at least once: dedupe on the delivery id, or on `data.order_handle` + "
                "`data.value` + `recorded_at`; order across deliveries is best effort (sort by "
                "`recorded_at`). `GET /orders/{order_handle}/webhooks` replays what was sent.",
                "security": [],
                "parameters": [
                    {
                        "name": DELIVERY_ID_HEADER,
                        "in": "header",
                        "required": True,
                        "description": "The delivery's id: the same on every retry of it.",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": SIGNATURE_HEADER,
                        "in": "header",
                        "required": True,
                        "description": f"`t=<unix seconds>,{SCHEME}=<hex>`: `<hex>` is HMAC-SHA256, "
                        "keyed by the UTF-8 bytes of the account's signing secret, over `<t>.<body "
                        "bytes>`. Compare in constant time and refuse stale timestamps.",
                        "schema": {"type": "string", "pattern": f"^t=[0-9]+,{SCHEME}=[0-9a-f]{{64}}$"},
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {"schema": {"type": "array", "minItems": 1, "items": event}},
                    },
                },
                "responses": {
                    "2XX": {"description": "Delivered: the delivery ends."},
                    "4XX": {"description": "Refused: the delivery ends and is not sent again."},
                    "default": {
                        "description": "Any other answer, or none within "
                        f"{policy.timeout_s:g} s (or no connection): sent again, up to "
                        f"{policy.retries} times {policy.retry_interval_s:g} s apart by default, "
                        "then marked failed."
                    },
                },
            }
        }
    }

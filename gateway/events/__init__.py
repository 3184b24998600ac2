"""Order events on their way out of the gateway: the webhook's signature (signing.py), the worker
that delivers the outbox to each account's webhook (delivery.py), and the fan-out of committed
events to the gRPC watchers (hub.py)."""

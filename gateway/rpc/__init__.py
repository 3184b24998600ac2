"""The grpc.aio server: OrdersService, rich error status, health and reflection."""

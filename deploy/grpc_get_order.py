"""GetOrder over gRPC against the gateway listening in this container, for deploy/smoke.sh, which
pipes this file into `podman exec -i CONTAINER python3 - HANDLE ACCOUNT:SECRET`: the image has the
gateway's own stubs and grpcio, so the host needs no gRPC client. Prints the order's status name
(`ORDER_STATUS_CANCELLED`) and its timeline's event count; exit 1 on any gRPC error."""

import base64
import sys

import grpc

from gateway.gen.hypertrack.orders.v1 import order_pb2, orders_service_pb2, orders_service_pb2_grpc


def main(handle: str, credentials: str) -> int:
    token = base64.b64encode(credentials.encode()).decode()
    with grpc.insecure_channel("127.0.0.1:50051") as channel:
        try:
            answer = orders_service_pb2_grpc.OrdersServiceStub(channel).GetOrder(
                orders_service_pb2.GetOrderRequest(order_handle=handle),
                metadata=[("authorization", f"Basic {token}")],
                timeout=10,
            )
        except grpc.RpcError as error:
            print(f"GetOrder {handle}: {error.code().name} {error.details()}", file=sys.stderr)
            return 1
    print(order_pb2.OrderStatus.Name(answer.order.status), len(answer.order.timeline))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))

from gateway.testing import GatewayStack
import aiohttp


async def test_cancel_demo_order(stack: GatewayStack, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{stack.rest_url}/orders/order-1/cancel", headers=stack.rest_auth()) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        assert body["status"] == "cancelled"

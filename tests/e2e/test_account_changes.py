"""An account created in the process that serves it works at once, even right after a call with
its id was refused (and the refusal kept by the authentication cache)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from gateway.testing import GatewayStack


@pytest.mark.parametrize("backend", ["in-process", "remote"])
async def test_a_new_account_works_at_once_after_its_id_was_refused(tmp_path: Path, backend: str) -> None:
    async with (
        GatewayStack.start(tmp_path, backend=backend) as stack,  # type: ignore[arg-type]
        aiohttp.ClientSession() as http,
    ):
        url = f"{stack.rest_url}/orders/order-1"
        async with http.get(url, headers=stack.rest_auth("newcomer", "not-yet")) as refused:
            assert refused.status == 401
        account_id, secret = await stack.create_account("newcomer")
        async with http.get(url, headers=stack.rest_auth(account_id, secret)) as answered:
            assert answered.status == 404  # authenticated: the account has no order-1

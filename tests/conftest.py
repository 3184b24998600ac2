"""Fixtures shared by the suite: a running gateway (both backends) and HTTP clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.testing import GatewayStack

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO.parent / "shared" / "reference"


@pytest.fixture(params=["in-process", "remote"])
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[GatewayStack]:
    """The whole gateway on free ports, once per REST backend."""
    async with GatewayStack.start(tmp_path, backend=request.param) as running:
        yield running


@pytest.fixture
async def grpc_stack(tmp_path: Path) -> AsyncIterator[GatewayStack]:
    """The whole gateway, for tests of the gRPC surface (the REST backend does not matter)."""
    async with GatewayStack.start(tmp_path) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session

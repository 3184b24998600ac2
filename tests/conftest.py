"""Fixtures shared by the suite: a running gateway (both backends), HTTP clients, PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.testing import GatewayStack
from tests import pg

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO / "tests" / "data"


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


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """The admin DSN of a PostgreSQL server for the whole session (see tests/pg.py).

    Skipped when no server can be had, failed instead when HYPERTRACK_REQUIRE_POSTGRES=1 (CI).
    """
    try:
        server = pg.postgres_server()
    except pg.PostgresMissing as missing:
        if pg.postgres_required():
            pytest.fail(f"{pg.REQUIRE_ENV}=1 but {missing}", pytrace=False)
        pytest.skip(str(missing))
    try:
        yield server.dsn
    finally:
        server.stop()


@pytest.fixture
async def postgres_database(postgres_dsn: str) -> AsyncIterator[str]:
    """The DSN of a new, empty database on that server, dropped after the test."""
    async with pg.fresh_database(postgres_dsn) as dsn:
        yield dsn

"""Test-wide setup: no DNS queries to the machine's resolver, and the common fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from conduwuit.server import Server
from tests.support import nodns
from tests.support.config import make_config
from tests.support.inprocess import running_server

nodns.install()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """A whole server on the default test config, in the test's own nursery."""
    async with running_server(make_config(tmp_path)) as server:
        yield server


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.bound[0]) as client:
        yield client

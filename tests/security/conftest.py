"""sipwake facing a network: a server with users alice, bob and carol on 127.0.0.1, and
hosts "outside" it (sockets on other loopback addresses) that attack it or wait to see
whether anything reaches them."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# The scripted user agent and the server fixture helper of the integration tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from edgewire import USERS, Host, edge_config
from serving import running
from sipua import Ua, udp_address

from sipwake.server import Server


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Server]:
    """sipwake as `sipwake serve` runs it without --open: UDP on 127.0.0.1, memory store."""
    async with running(edge_config(tmp_path)) as server:
        yield server


@pytest.fixture
async def phones(edge: Server) -> AsyncIterator[dict[str, Ua]]:
    """alice, bob and carol's phones (not registered yet)."""
    addr = udp_address(edge)
    agents = {name: await Ua(name, pw, addr, "lab.test").start() for name, pw in USERS.items()}
    try:
        yield agents
    finally:
        for agent in agents.values():
            agent.close()


@pytest.fixture
async def attacker(edge: Server) -> AsyncIterator[Host]:
    """A scanner on 127.0.0.2: sends crafted requests to sipwake."""
    host = await Host.bind("127.0.0.2", udp_address(edge))
    try:
        yield host
    finally:
        host.close()


@pytest.fixture
async def victim(edge: Server) -> AsyncIterator[Host]:
    """A host on 127.0.0.3 (a premium-rate gateway, someone else's PBX): nothing the
    attacker sends may reach it through sipwake."""
    host = await Host.bind("127.0.0.3", udp_address(edge))
    try:
        yield host
    finally:
        host.close()

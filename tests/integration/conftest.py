"""A running sipwake on loopback, and a small scripted SIP user agent to talk to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from serving import running
from sipua import Ua, udp_address

from sipwake.config import Config, ListenerSpec, StoreConfig, TlsConfig, UserConfig
from sipwake.server import Server


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Server]:
    """A sipwake server on 127.0.0.1 (UDP and TCP, ephemeral ports), memory store."""
    config = Config(
        domain="lab.test",
        listen=[
            ListenerSpec(transport="udp", host="127.0.0.1", port=0),
            ListenerSpec(transport="tcp", host="127.0.0.1", port=0),
        ],
        store=StoreConfig(backend="memory"),
        tls=TlsConfig(dir=tmp_path / "tls"),
        users={
            "alice": UserConfig(password="alice-pw"),
            "bob": UserConfig(password="bob-pw"),
            "carol": UserConfig(password="carol-pw"),
        },
        secret_file=tmp_path / "secret",
    )
    async with running(config) as server:
        yield server


@pytest.fixture
async def uas(lab: Server) -> AsyncIterator[dict[str, Ua]]:
    addr = udp_address(lab)
    agents = {
        name: await Ua(name, f"{name}-pw", addr, "lab.test").start()
        for name in ("alice", "bob", "carol")
    }
    try:
        yield agents
    finally:
        for agent in agents.values():
            agent.close()

"""Interop tests: real SIP peers (Debian packages) against a sipwake on loopback.

Each peer is started by the test with a hard time limit (coreutils ``timeout``),
on 127.0.0.1, and stopped by its PID (see peers.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from peers import lab_config

from sipwake.server import Server


@pytest.fixture
async def open_lab(tmp_path: Path) -> AsyncIterator[Server]:
    """sipwake in --open mode (no auth) on a free UDP+TCP port, SQLite store."""
    server = Server(lab_config(tmp_path, open_=True, users={"bob": "x", "caller": "y"}))
    await server.start()
    try:
        yield server
    finally:
        await server.close()

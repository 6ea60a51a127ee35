"""A sipwake server started for a test and closed after it, whatever the test did."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sipwake.config import Config
from sipwake.server import Server


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[Server]:
    server = Server(config)
    await server.start()
    try:
        yield server
    finally:
        await server.close()

"""A small HTTP endpoint on loopback for ``sipwake status`` (and scripts).

``GET /status`` answers JSON: every user with bindings, their presence
(``available``: a device in the foreground; ``away``: only suspended devices,
reachable after a push; ``offline``) and each device's state, contact,
transport, last registration and push target (token masked). ``GET /health``
answers ``ok``.

``POST`` runs a lab action (``action(path)``, e.g. ``/mobile/NUMBER/answer``:
the built-in mobile picks up, ``sipwake mobile answer``); no request body is
read. Nothing else can be changed through it, and it listens on 127.0.0.1
only by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

__all__ = ["AdminServer"]

logger = logging.getLogger("sipwake.admin")

_MAX_HEAD = 8192


class AdminServer:
    """Serves ``snapshot()`` as JSON at ``/status`` on ``host:port``."""

    def __init__(
        self,
        snapshot: Callable[[], dict[str, Any]],
        host: str,
        port: int,
        *,
        action: Callable[[str], tuple[int, dict[str, Any]]] | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._action = action
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=_MAX_HEAD
        )
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split(" ")
            if len(parts) == 3 and parts[0] == "POST" and self._action is not None:
                status, body = self._action(unquote(parts[1]))
                self._write(writer, status, body)
            elif len(parts) != 3 or parts[0] not in ("GET", "HEAD"):
                self._write(writer, 405, {"error": "only GET and POST actions are served"})
            elif parts[1] == "/status":
                self._write(writer, 200, self._snapshot())
            elif parts[1] == "/health":
                self._write(writer, 200, {"status": "ok"})
            else:
                self._write(writer, 404, {"error": f"no such resource: {parts[1][:80]}"})
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except ConnectionError:
            pass
        except Exception:
            logger.exception("admin request failed")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    @staticmethod
    def _write(writer: asyncio.StreamWriter, status: int, body: dict[str, Any]) -> None:
        reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict"}[status]
        data = json.dumps(body, indent=1).encode()
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
            + data
        )

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

Identity. Each server has a random token, written with its URL, domain and folder to
the admin file (``./sipwake-admin``, mode 0600) while it runs. A client sends the token
in ``X-Sipwake-Token``: a wrong one is answered 403 with the server's identity, so a
client never mistakes another server on the machine (another checkout, another user) for
the one of its folder. A ``POST`` needs the token; a ``GET`` without one is served
(scripts, curl, a browser on loopback). Every JSON answer names the server (``server``:
domain, folder, pid).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

__all__ = ["TOKEN_HEADER", "AdminServer", "read_admin_file"]

#: The request header carrying the server's token (from its admin file).
TOKEN_HEADER = "x-sipwake-token"

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
        identity: dict[str, Any] | None = None,
        token: str | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._action = action
        self.host = host
        self.port = port
        self.identity: dict[str, Any] = {**(identity or {}), "pid": os.getpid()}
        self.token = token if token is not None else secrets.token_urlsafe(24)
        self._server: asyncio.Server | None = None
        self._file: Path | None = None

    async def start(self, *, fallback_to_any_port: bool = False) -> None:
        """Listen on ``host:port``; with ``fallback_to_any_port``, on any free port of
        ``host`` when that one is taken (the ``auto`` setting)."""
        try:
            self._server = await asyncio.start_server(
                self._serve, self.host, self.port, limit=_MAX_HEAD
            )
        except OSError:
            if not fallback_to_any_port or self.port == 0:
                raise
            logger.info("admin port %s:%d is taken: using a free port", self.host, self.port)
            self._server = await asyncio.start_server(self._serve, self.host, 0, limit=_MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]

    def write_file(self, path: Path) -> None:
        """Write URL, token and identity to ``path`` (mode 0600) for the client commands."""
        data = json.dumps({"url": self.url, "token": self.token, **self.identity}, indent=1)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(data + "\n")
        self._file = path

    def _remove_file(self) -> None:
        """Remove the admin file if it is still ours (another server may have replaced it)."""
        path, self._file = self._file, None
        if path is None:
            return
        with contextlib.suppress(OSError, ValueError):
            if read_admin_file(path).get("token") == self.token:
                path.unlink()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        self._remove_file()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            token = _header(lines[1:], TOKEN_HEADER)
            if token is not None and not hmac.compare_digest(token, self.token):
                self._write(writer, 403, {"error": "not this server's token"})
            elif len(parts) == 3 and parts[0] == "POST" and token is None:
                self._write(
                    writer, 403, {"error": "an action needs this server's token (its admin file)"}
                )
            elif len(parts) == 3 and parts[0] == "POST" and self._action is not None:
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

    def _write(self, writer: asyncio.StreamWriter, status: int, body: dict[str, Any]) -> None:
        reason = {
            200: "OK",
            403: "Forbidden",
            404: "Not Found",
            405: "Method Not Allowed",
            409: "Conflict",
        }[status]
        data = json.dumps({**body, "server": self.identity}, indent=1).encode()
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
            + data
        )


def _header(lines: list[str], name: str) -> str | None:
    for line in lines:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name:
            return value.strip()
    return None


def read_admin_file(path: Path) -> dict[str, Any]:
    """The admin file's content; ``OSError`` when absent, ``ValueError`` when not ours."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("url"), str):
        raise ValueError(f"{path}: not a sipwake admin file")
    return data

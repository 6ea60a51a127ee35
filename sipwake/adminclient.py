"""Finding and talking to the ``sipwake serve`` of a folder (``sipwake status``, ``mobile``).

A running server writes its admin endpoint's URL, a random token and its identity
(domain, folder, pid) to ``sipwake-admin`` in its folder (sipwake/admin.py). A client
command reads that file in the folder it is told (``--server DIR``, the current one by
default) and sends the token with each request; the server answers 403 to a token that
is not its own. So a client never shows or drives another server that happens to listen
on the address (another checkout, another user, a server started after ours stopped).
``--url`` names an endpoint directly: its answers are shown with the identity they
carry, and an action (POST) still needs the token of a file naming that URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from sipwake.admin import TOKEN_HEADER, read_admin_file

__all__ = ["ADMIN_FILE", "AdminClientError", "AdminTarget", "locate"]

ADMIN_FILE = "sipwake-admin"


class AdminClientError(Exception):
    """No server to talk to, or not the expected one; the message says which and why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminTarget:
    url: str
    token: str | None
    folder: str | None  # the folder whose admin file named this server
    expected: dict[str, Any]  # the identity that file recorded

    def get(self, path: str) -> dict[str, Any]:
        return self._check(self._send("GET", path))[1]

    def post(self, path: str) -> tuple[int, dict[str, Any]]:
        return self._check(self._send("POST", path))

    def _send(self, method: str, path: str) -> httpx.Response:
        headers = {TOKEN_HEADER: self.token} if self.token is not None else {}
        try:
            return httpx.request(method, self.url.rstrip("/") + path, headers=headers, timeout=5)
        except httpx.HTTPError as exc:
            if self.folder is not None:
                raise AdminClientError(
                    f"the sipwake serve of {self.folder} is not running: nothing answers at "
                    f"{self.url} ({exc}); its {ADMIN_FILE} is left from pid "
                    f"{self.expected.get('pid', '?')}"
                ) from exc
            raise AdminClientError(f"no answer from {self.url}: {exc}") from exc

    def _check(self, response: httpx.Response) -> tuple[int, dict[str, Any]]:
        try:
            data = response.json()
        except ValueError as exc:
            raise AdminClientError(
                f"{self.url} is not a sipwake admin endpoint (HTTP {response.status_code}, "
                "not JSON)"
            ) from exc
        if not isinstance(data, dict):
            raise AdminClientError(f"{self.url} is not a sipwake admin endpoint")
        found = data.get("server")
        server: dict[str, Any] = found if isinstance(found, dict) else {}
        if response.status_code == 403 and self.token is not None:
            raise AdminClientError(
                f"the server at {self.url} is not the sipwake serve of {self.folder}: it "
                f"serves {server.get('domain', '?')} from {server.get('folder', '?')} (pid "
                f"{server.get('pid', '?')}); the server of {self.folder} is not running"
            )
        if response.status_code == 403:
            raise AdminClientError(
                f"the server at {self.url} ({server.get('domain', '?')}, folder "
                f"{server.get('folder', '?')}) wants its token for this: run the command in "
                "its folder, or name that folder with --server DIR"
            )
        return response.status_code, data


def locate(url: str | None, server_dir: str | Path) -> AdminTarget:
    """The admin endpoint to talk to: ``url`` when given (with the token of the admin file
    in ``server_dir`` if that file names the same URL), else the one ``server_dir``'s
    admin file names. ``AdminClientError`` when there is none."""
    folder = Path(server_dir)
    path = folder / ADMIN_FILE
    try:
        recorded: dict[str, Any] | None = read_admin_file(path)
    except FileNotFoundError:
        recorded = None
    except (OSError, ValueError) as exc:
        raise AdminClientError(f"cannot read {path}: {exc}") from exc
    shown = str(folder.resolve())
    if url is not None:
        if recorded is not None and recorded["url"].rstrip("/") == url.rstrip("/"):
            return AdminTarget(
                url=url, token=recorded.get("token"), folder=shown, expected=recorded
            )
        return AdminTarget(url=url, token=None, folder=None, expected={})
    if recorded is None:
        raise AdminClientError(
            f"no sipwake serve runs in {shown} ({ADMIN_FILE} not found there): start "
            "`sipwake serve` in that folder, or name the server's folder with --server DIR "
            "or its admin endpoint with --url URL (printed at its start)"
        )
    return AdminTarget(
        url=recorded["url"], token=recorded.get("token"), folder=shown, expected=recorded
    )

"""SIPVicious svwar, the enumerator bots run first, finds no user of sipwake.

svwar (PyPI ``sipvicious``, command ``sipvicious_svwar``) sends a REGISTER or INVITE for a
random name, keeps the answer as "no such user", then tries a word list and reports every
name answered otherwise. The server has alice, bob and carol; the list has them and
others. A leaky responder (404 for unknown names, 401 for known ones, as sipwake answered
before) shows the harness would see them if they leaked.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest
from sipua import udp_address

from sipwake.server import Server
from sipwake.sip.message import Request, make_response
from sipwake.sip.parser import parse_message

pytestmark = pytest.mark.timeout(120)

SVWAR = shutil.which("sipvicious_svwar")
WORDS = ["alice", "bob", "carol", "dave", "eve", "admin", "100", "1000", "root", "test"]
USERS = {"alice", "bob", "carol"}


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


async def svwar(target: tuple[str, int], tmp_path: Path, *args: str) -> tuple[set[str], str]:
    """Run svwar from 127.0.0.2 against ``target`` (at most 40 s); the names it reports."""
    if SVWAR is None:
        pytest.skip("sipvicious_svwar not installed (pip install sipvicious: the dev extras)")
    words = tmp_path / "words.txt"
    words.write_text("\n".join(WORDS) + "\n")
    host, port = target
    proc = await asyncio.create_subprocess_exec(
        "timeout", "40", SVWAR, "-d", str(words), "-p", str(port),
        "-b", "127.0.0.2", "-x", "127.0.0.2", "-P", str(_free_port("127.0.0.2")),
        "--maximumtime", "5", *args, host,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode(errors="replace")
    assert proc.returncode != 124, f"svwar did not finish in 40 s:\n{text}"
    found = set(re.findall(r"extension '([^']+)' (?:exists|probably exists)", text))
    found |= {m for m in re.findall(r"^\| (\S+)\s+\|", text, re.MULTILINE) if m != "Extension"}
    return found, text


@pytest.mark.parametrize(
    "args",
    [
        ("-m", "REGISTER"),
        ("-m", "REGISTER", "--force"),
        ("-m", "INVITE", "--force", "--domain", "lab.test"),
        ("-m", "OPTIONS", "--force", "--domain", "lab.test"),
    ],
    ids=["register", "register-force", "invite-force", "options-force"],
)
async def test_svwar_finds_no_user(edge: Server, tmp_path: Path, args: tuple[str, ...]) -> None:
    found, text = await svwar(udp_address(edge), tmp_path, *args)
    assert not found & USERS, f"svwar listed {sorted(found)}:\n{text}"
    assert not found, f"svwar listed {sorted(found)}:\n{text}"


class _Leaky(asyncio.DatagramProtocol):
    """A registrar that looks users up before challenging: 404 or 401."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = parse_message(data)
        if not isinstance(request, Request):
            return
        user = getattr(request.to.uri, "user", None)
        response = make_response(request, 401 if user in USERS else 404, to_tag="leak")
        if response.status == 401:
            response.headers.add("WWW-Authenticate", 'Digest realm="leak", nonce="n"')
        self.transport.sendto(response.to_bytes(), addr)


@pytest.fixture
async def leaky() -> AsyncIterator[tuple[str, int]]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_Leaky, local_addr=("127.0.0.1", 0))
    try:
        yield transport.get_extra_info("sockname")[:2]
    finally:
        transport.close()


async def test_control_svwar_lists_the_users_of_a_leaky_registrar(
    leaky: tuple[str, int], tmp_path: Path
) -> None:
    found, text = await svwar(leaky, tmp_path, "-m", "REGISTER")
    assert found == USERS, text

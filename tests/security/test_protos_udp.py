"""PROTOS c07-sip over UDP against a running sipwake on loopback.

PROTOS' own pass criterion is robustness: the target keeps running and still serves
after every malformed INVITE and its teardown (``../shared/corpora/protos-c07-sip``,
README). Here all 4,527 cases (9,054 datagrams) go to a real ``Server`` at a steady
1,000 datagrams a second (what one shared core keeps up with while
the edge policy challenges each INVITE), each case with its own Call-ID and our socket's port in its
Via; then the server must answer OPTIONS and an authenticated (digest) REGISTER from
a fresh user agent, must have answered the valid reference case, and must have logged
no internal error (a handler that raised is caught and logged, not crashed: that is the
failure this test catches).
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import re
from collections.abc import AsyncIterator

import pytest

from sipwake.config import Config, ListenerSpec, StoreConfig, TlsConfig, UserConfig
from sipwake.server import Server
from tests.integration.serving import running
from tests.integration.sipua import Ua, udp_address
from tests.unit import protos

pytestmark = pytest.mark.timeout(90)

CASES = 4527
#: Datagrams sent per tick, and the tick: 1,000 datagrams a second (at 2,000 the
#: interpreted server on a busy 2-core machine answered 2,200-3,000 of the cases).
BATCH = 10
TICK = 0.01
_ANSWERED_RE = re.compile(rb"Call-ID: *protos-(\d+)@", re.IGNORECASE)


def _messages(raw: bytes) -> list[bytes]:
    """A case file's messages: ``<length> <bytes>``, twice (INVITE, then teardown)."""
    out = []
    pos = 0
    while pos < len(raw):
        space = raw.index(b" ", pos)
        length = int(raw[pos:space])
        out.append(raw[space + 1 : space + 1 + length])
        pos = space + 1 + length
    return out


def _fill(template: bytes, case: int, port: int) -> bytes:
    """The placeholders filled as ``tests/unit/protos.py`` does, but with this case's own
    Call-ID and branch and our socket's port (so responses come back to us, not to 5061)."""
    template = (
        template.replace(b"<Local-Port>", str(port).encode())
        .replace(b"<Call-ID>", f"protos-{case}".encode())
        .replace(b"<Branch-ID>", str(case).encode())
    )
    template = protos.fill(template)
    head, sep, body = template.partition(b"\n\n")
    if not sep:
        head, sep, body = template.partition(b"\r\n\r\n")
    return (head + sep + body).replace(b"<Content-Length>", str(len(body)).encode())


@pytest.fixture
async def server(tmp_path: pathlib.Path) -> AsyncIterator[Server]:
    config = Config(
        domain="lab.test",
        listen=[ListenerSpec(transport="udp", host="127.0.0.1", port=0)],
        store=StoreConfig(backend="memory"),
        tls=TlsConfig(dir=tmp_path / "tls"),
        users={"bob": UserConfig(password="bob-pw"), "alice": UserConfig(password="alice-pw")},
        secret_file=tmp_path / "secret",
    )
    async with running(config) as running_server:
        yield running_server


class _Collector(asyncio.DatagramProtocol):
    """What the server sent back to the PROTOS socket: the cases it answered."""

    def __init__(self) -> None:
        self.answered: set[int] = set()
        self.datagrams = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.datagrams += 1
        match = _ANSWERED_RE.search(data)
        if match is not None:
            self.answered.add(int(match.group(1)))


async def test_protos_c07_sip_over_udp_leaves_the_server_serving(
    corpora: pathlib.Path, server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="sipwake")
    paths = sorted((corpora / "protos-c07-sip" / "cases").iterdir())
    assert len(paths) == CASES
    loop = asyncio.get_running_loop()
    target = udp_address(server)
    transport, collector = await loop.create_datagram_endpoint(
        _Collector, local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    datagrams = [
        _fill(message, case, port)
        for case, path in enumerate(paths)
        for message in _messages(path.read_bytes())
    ]
    assert len(datagrams) == 2 * CASES
    started = loop.time()
    try:
        for first in range(0, len(datagrams), BATCH):
            for data in datagrams[first : first + BATCH]:
                transport.sendto(data, target)
            # A steady pace from the start, whatever each batch cost.
            await asyncio.sleep(max(0.0, started + (first + BATCH) / BATCH * TICK - loop.time()))
        sent_in = loop.time() - started
        await asyncio.sleep(1.0)  # let the last ones be answered
    finally:
        transport.close()

    # Still serving: OPTIONS from a fresh agent, and a REGISTER through a digest challenge.
    ua = await Ua("alice", "alice-pw", target, "lab.test").start()
    try:
        options = ua.request("OPTIONS", "sip:lab.test", to="<sip:lab.test>")
        assert (await ua.transact(options, 200)).status == 200
        assert (await ua.register()).status == 200
    finally:
        ua.close()

    assert sent_in < 2 * len(datagrams) / BATCH * TICK  # the pace held (about 9 s)
    assert 0 in collector.answered  # the valid reference case was served
    # Most cases parse (tests/unit/test_parser.py) and are answered; many malformed ones
    # are answered 400 where a response can be built.
    assert len(collector.answered) > 3 * CASES // 4, len(collector.answered)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors[:5]]

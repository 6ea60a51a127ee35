"""SIPp (Debian sip-tester) registers and calls through sipwake over UDP and TCP."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

import pytest
from peers import SCENARIOS, Peer, free_port, lab_config, need, sip_port

from sipwake.server import Server
from tests.integration.serving import running

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]


def _sipp(*args: str, cwd: Path, limit: float = 30) -> Peer:
    sipp = need("sipp")
    cp = str(free_port(socket.SOCK_STREAM))  # control port, off SIPp's default 8888
    mp = str(free_port())
    return Peer(
        [sipp, "-i", "127.0.0.1", "-cp", cp, "-mp", mp, "-nostdin", *args], limit=limit, cwd=cwd
    )


def _successes(output: str) -> int:
    m = re.search(r"Successful call\s+\|\s+\d+\s+\|\s+(\d+)", output)
    return int(m.group(1)) if m else -1


async def _finish(peer: Peer, within: float) -> tuple[int, str]:
    return await asyncio.to_thread(peer.wait, within)


@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_sipp_registers_and_calls_through_proxy(
    open_lab: Server, tmp_path: Path, transport: str
) -> None:
    server = f"127.0.0.1:{sip_port(open_lab)}"
    callee_port = str(free_port())
    reg = _sipp(
        server,
        "-sf",
        str(SCENARIOS / "register.xml"),
        "-s",
        "bob",
        "-p",
        callee_port,
        "-t",
        transport,
        "-m",
        "1",
        cwd=tmp_path,
    )
    code, out = await _finish(reg, 20)
    assert code == 0, out
    assert open_lab.node is not None
    bindings = open_lab.node.registrar.lookup("sip:bob@lab.test", 0.0)
    assert len(bindings) == 1
    calls = 20
    uas = _sipp("-sn", "uas", "-p", callee_port, "-t", transport, "-m", str(calls), cwd=tmp_path)
    await asyncio.sleep(0.3)
    uac = _sipp(
        server,
        "-sf",
        str(SCENARIOS / "uac.xml"),
        "-s",
        "bob",
        "-t",
        transport,
        "-p",
        str(free_port()),
        "-m",
        str(calls),
        "-r",
        "20",
        cwd=tmp_path,
    )
    code, out = await _finish(uac, 40)
    uas_code, uas_out = await _finish(uas, 10)
    assert code == 0, out[-3000:]
    assert _successes(out) == calls
    assert uas_code == 0, uas_out[-3000:]


async def test_sipp_cancel_while_ringing(open_lab: Server, tmp_path: Path) -> None:
    server = f"127.0.0.1:{sip_port(open_lab)}"
    callee_port = str(free_port())
    reg = _sipp(
        server,
        "-sf",
        str(SCENARIOS / "register.xml"),
        "-s",
        "bob",
        "-p",
        callee_port,
        "-m",
        "1",
        cwd=tmp_path,
    )
    code, out = await _finish(reg, 20)
    assert code == 0, out
    calls = 5
    uas = _sipp(
        "-sf", str(SCENARIOS / "uas_ring.xml"), "-p", callee_port, "-m", str(calls), cwd=tmp_path
    )
    await asyncio.sleep(0.3)
    uac = _sipp(
        server,
        "-sf",
        str(SCENARIOS / "uac_cancel.xml"),
        "-s",
        "bob",
        "-p",
        str(free_port()),
        "-m",
        str(calls),
        "-r",
        "5",
        cwd=tmp_path,
    )
    code, out = await _finish(uac, 40)
    uas_code, uas_out = await _finish(uas, 10)
    assert code == 0, out[-3000:]
    assert _successes(out) == calls
    assert uas_code == 0, uas_out[-3000:]


async def test_third_party_registered_sipp_callee_gets_200_calls(
    open_lab: Server, tmp_path: Path
) -> None:
    """A REGISTER sent from one port for a Contact on another (RFC 3261 §10.2, no NAT: the
    Via's sent-by is the source) binds the Contact: calls reach the SIPp UAS there, not
    the SIPp that registered it."""
    server = f"127.0.0.1:{sip_port(open_lab)}"
    callee_port = free_port()
    registering_port = free_port()
    reg = _sipp(
        server,
        "-sf",
        str(SCENARIOS / "register_third_party.xml"),
        "-s",
        "bob",
        "-key",
        "contact_port",
        str(callee_port),
        "-p",
        str(registering_port),
        "-m",
        "1",
        cwd=tmp_path,
    )
    code, out = await _finish(reg, 20)
    assert code == 0, out
    assert open_lab.node is not None
    (binding,) = open_lab.node.registrar.lookup("sip:bob@lab.test", 0.0)
    assert binding.source.port == registering_port
    assert binding.contact.port == callee_port
    assert not binding.nat
    calls = 200
    uas = _sipp("-sn", "uas", "-p", str(callee_port), "-m", str(calls), cwd=tmp_path, limit=60)
    await asyncio.sleep(0.3)
    uac = _sipp(
        server,
        "-sf",
        str(SCENARIOS / "uac.xml"),
        "-s",
        "bob",
        "-p",
        str(free_port()),
        "-m",
        str(calls),
        "-r",
        "25",
        cwd=tmp_path,
        limit=60,
    )
    code, out = await _finish(uac, 60)
    uas_code, uas_out = await _finish(uas, 15)
    assert code == 0, out[-3000:]
    assert _successes(out) == calls
    assert uas_code == 0, uas_out[-3000:]


async def test_sipp_uas_answering_pings_stays_foreground_and_takes_its_calls(
    tmp_path: Path,
) -> None:
    # A window of 1 s instead of 120, so that the SIPp UAS idles past it and is pinged.
    # SIPp's built-in uas scenario knows only INVITE: without -aa an OPTIONS is an
    # unexpected message (one failed "call", no answer, so the binding reads offline and
    # calls get 480). With -aa it answers 200, stays foreground and takes every call.
    config = lab_config(tmp_path, open_=True, users={"bob": "x", "caller": "y"})
    config.admin = None
    config.calls.udp_foreground_s = 1.0
    config.calls.udp_qualify_timeout_s = 1.0
    async with running(config) as server:
        address = f"127.0.0.1:{sip_port(server)}"
        callee_port = str(free_port())
        reg = _sipp(
            address,
            "-sf",
            str(SCENARIOS / "register.xml"),
            "-s",
            "bob",
            "-p",
            callee_port,
            "-m",
            "1",
            cwd=tmp_path,
        )
        code, out = await _finish(reg, 20)
        assert code == 0, out
        # No -m: SIPp counts each OPTIONS it auto-answers as a call of its own.
        uas = _sipp("-sn", "uas", "-aa", "-p", callee_port, cwd=tmp_path, limit=40)
        try:
            await asyncio.sleep(3.5)  # idle: pinged every second or so
            assert server.node is not None
            assert server.node.qualifier.pings_sent >= 2
            (user,) = server.node.snapshot(asyncio.get_running_loop().time())
            devices = user["devices"]
            assert isinstance(devices, list)
            assert [d["state"] for d in devices] == ["foreground"]
            calls = 10
            uac = _sipp(
                address,
                "-sf",
                str(SCENARIOS / "uac.xml"),
                "-s",
                "bob",
                "-p",
                str(free_port()),
                "-m",
                str(calls),
                "-r",
                "10",
                cwd=tmp_path,
            )
            code, out = await _finish(uac, 40)
            assert code == 0, out[-3000:]
            assert _successes(out) == calls
        finally:
            uas.stop()

"""The built-in mobile through ``sipwake serve``: with no twin gateway, a user's mobile
number is a UAS sipwake runs itself; the twin branch rings it after the mobile dial
delay, ``sipwake mobile answer`` picks up, and the call record shows the twin branch."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from sipua import Ua, udp_address

from sipwake.config import UserConfig
from sipwake.server import Server
from sipwake.sip.message import Request, Response
from tests.integration.test_wake_serve import _lab_config

pytestmark = pytest.mark.timeout(40)

MOBILE = "+491701234567"


async def _cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sipwake", *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def _in_dialog(alice: Ua, ok: Response, method: str, cseq: int) -> Request:
    """ACK or BYE for the dialog ``ok`` set up, through the proxy (its Record-Route)."""
    contact = ok.contacts[0].uri if ok.contacts else None
    assert contact is not None
    request = alice.request(
        method,
        str(contact),
        to=ok.headers.get("To") or "",
        call_id=ok.call_id,
        cseq=cseq,
    )
    for route in ok.headers.values("Record-Route"):  # UAC: reversed order (RFC 3261 §12.1.2)
        request.headers.insert("Route", route)
    return request


async def test_twin_branch_rings_the_builtin_mobile_which_answers_when_told(
    tmp_path: Path,
) -> None:
    db = tmp_path / "sipwake.db"
    config = _lab_config(
        tmp_path,
        db=db,
        admin="127.0.0.1:0",
        calls={"mobile_dial_delay_s": 0.3, "no_answer_s": 8.0},
    )
    config.users["bob"] = UserConfig(password="b", mobile=MOBILE)
    server = Server(config)
    await server.start()
    assert server.mobile is not None
    assert server.admin is not None
    alice = await Ua("alice", "a", udp_address(server), "lab.test").start()
    try:
        invite = alice.request("INVITE", "sip:bob@lab.test", to="<sip:bob@lab.test>")
        alice.send(invite)
        started = asyncio.get_running_loop().time()
        ringing = await alice.expect(180, within=3)  # the mobile rings
        assert isinstance(ringing, Response)
        assert asyncio.get_running_loop().time() - started >= 0.25  # after the dial delay
        assert server.mobile.status() == [
            {"number": MOBILE, "caller": "sip:alice@lab.test", "state": "ringing"}
        ]
        with pytest.raises(TimeoutError):
            await alice.expect(200, within=0.5)  # never answers by itself by default
        code, out = await _cli("mobile", "answer", MOBILE, "--server", str(tmp_path))
        assert code == 0, out
        assert MOBILE in out
        ok = await alice.expect(200, within=3)
        assert isinstance(ok, Response)
        assert ok.headers.get("Content-Type") == "application/sdp"
        assert ok.contacts
        assert str(ok.contacts[0].uri).startswith(f"sip:{MOBILE}@")
        alice.send(_in_dialog(alice, ok, "ACK", 1))
        alice.send(_in_dialog(alice, ok, "BYE", 2))
        bye_ok = await alice.expect(200, within=3)
        assert isinstance(bye_ok, Response)
        assert bye_ok.cseq.method == "BYE"
        code, out = await _cli("mobile", "answer", MOBILE, "--server", str(tmp_path))
        assert code == 1  # nothing rings any more
        assert "no call" in out or out == ""
    finally:
        alice.close()
        await server.close()  # flushes the call records

    code, out = await _cli("calls", "--db", str(db), "--json")
    assert code == 0
    (call,) = json.loads(out)
    assert call["call_id"] == invite.call_id
    assert call["outcome"] == "answered"
    assert "twin" in call["answered_by"]
    code, ladder = await _cli("calls", "show", call["ref"], "--db", str(db))
    assert code == 0
    assert "twin" in ladder
    assert MOBILE in ladder

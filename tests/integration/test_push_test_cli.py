"""``sipwake push-test``: one real push to a registered device through the configured
provider, the provider's answer printed; against ``sipwake mock-push`` (never Apple or
Google), and against an endpoint where nothing listens."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from pathlib import Path

import pytest
import yaml

from sipwake.registrar.bindings import Binding
from sipwake.sip.parser import parse_uri
from sipwake.sip.peer import Peer
from sipwake.sip.pushtarget import PushTarget
from sipwake.sip.uri import SipUri
from sipwake.store.sqlite import SqliteStore
from tests.integration.test_mock_push_cli import _start

pytestmark = pytest.mark.timeout(60)

TOKEN = "5eed" * 16
PARAM = "TEAM123456.org.lab.phone.voip"


def _store_bob(
    db: Path, *, provider: str = "apns", prid: str = TOKEN, param: str = PARAM, user: str = "bob"
) -> None:
    contact = parse_uri("sip:bob@127.0.0.1:7000;transport=tcp", "contact")
    assert isinstance(contact, SipUri)
    store = SqliteStore(db)
    try:
        store.upsert(
            Binding(
                binding_id=f"b-{user}",
                aor=f"sip:{user}@lab.test",
                contact=contact,
                expires_at=3600.0,
                registered_at=0.0,
                call_id="c1",
                cseq=1,
                source=Peer(transport="tcp", host="127.0.0.1", port=7000),
                push=PushTarget(provider=provider, prid=prid, param=param),
                instance=f"urn:uuid:00000000-0000-4000-8000-0000000000{user[0]}0",
            ),
            0.0,
            time.time(),
        )
    finally:
        store.close()


async def _push_test(*args: str, cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sipwake",
        "push-test",
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_push_test_reaches_the_device_through_the_mock(tmp_path: Path) -> None:
    mock, _ = await _start(tmp_path / "mock")
    assert mock.stdout is not None
    try:
        section = yaml.safe_load((tmp_path / "mock" / "push.yaml").read_text())
        (tmp_path / "lab.yaml").write_text(
            yaml.safe_dump({**section, "store": {"path": "sipwake.db"}})
        )
        _store_bob(tmp_path / "sipwake.db")
        code, out, err = await _push_test("bob", "-c", "lab.yaml", cwd=tmp_path)
        assert code == 0, out + err
        assert "sip:bob@lab.test urn:uuid:00000000-0000-4000-8000-0000000000b0" in out
        assert "call push to apns:5eed…5eed via apns: delivered" in out
        assert "apns-id " in out
        assert TOKEN not in out + err
        line = (await asyncio.wait_for(mock.stdout.readline(), 5)).decode()
        assert "apns voip push to 5eed…5eed: accepted" in line  # the mock got it
        # By device instance and by token prefix too; an alert is an alert push.
        code, out, _ = await _push_test(
            "urn:uuid:00000000-0000-4000-8000-0000000000b0", "-c", "lab.yaml", cwd=tmp_path
        )
        assert code == 0
        # bob's iPhone gave only its VoIP token: no alert can go to it (APNs would refuse
        # an alert on the VoIP topic), and push-test says so instead of trying.
        code, _, err = await _push_test(
            "5eed5eed", "--kind", "message", "-c", "lab.yaml", cwd=tmp_path
        )
        assert code == 2
        assert "no remote-notification token" in err
        # carol's Linphone gave both: the alert goes to the remote token.
        remote = "a1e7" * 16
        _store_bob(
            tmp_path / "sipwake.db",
            user="carol",
            prid=f"{TOKEN}:voip&{remote}:remote",
            param="TEAM123456.org.lab.phone.voip&remote",
        )
        code, out, err = await _push_test(
            "carol", "--kind", "message", "-c", "lab.yaml", cwd=tmp_path
        )
        assert code == 0, out + err
        assert "message push to apns:a1e7…a1e7 via apns: delivered" in out
    finally:
        mock.terminate()
        await asyncio.wait_for(mock.wait(), 10)


async def test_push_test_says_when_the_endpoint_cannot_be_reached(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens there once the socket is closed
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "key.p8").write_bytes(key)
    apns = {
        "team_id": "TEAM123456",
        "key_id": "KEY1234567",
        "key_file": "key.p8",
        "bundle_id": "org.lab.phone",
        "base_url": f"https://127.0.0.1:{closed}",
    }
    (tmp_path / "lab.yaml").write_text(yaml.safe_dump({"push": {"apns": apns}}))
    _store_bob(tmp_path / "sipwake.db")
    code, out, err = await _push_test("bob", "-c", "lab.yaml", cwd=tmp_path)
    assert code == 1, out + err
    assert f"cannot reach apns at https://127.0.0.1:{closed}" in out
    assert "the push was not delivered" in out


async def test_push_test_refuses_what_it_cannot_test(tmp_path: Path) -> None:
    _store_bob(tmp_path / "sipwake.db")
    code, _, err = await _push_test("bob", cwd=tmp_path)  # no push: section at all
    assert code == 2
    assert "no provider for it (push.apns)" in err
    assert "sandbox would take the push and wake nobody" in err
    code, _, err = await _push_test("carol", cwd=tmp_path)
    assert code == 2
    assert "no registered device with push parameters matches 'carol'" in err
    assert "sip:bob@lab.test" in err
    code, _, err = await _push_test("bob", "--db", "missing.db", cwd=tmp_path)
    assert code == 2
    assert "missing.db: no such database" in err

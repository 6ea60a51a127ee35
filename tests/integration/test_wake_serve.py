"""Push-wake through ``sipwake serve`` on loopback: a TCP phone with push parameters is
suspended (its connection closes), a call for it makes a push (sandbox provider), the
phone wakes, re-registers over a new connection and gets the held INVITE; without a wake,
the call diverts to voicemail after the no-answer time."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from serving import running
from sipua import Ua, udp_address

from sipwake.config import Config, ListenerSpec, StoreConfig, TlsConfig, UserConfig
from sipwake.push.mock import MockApns
from sipwake.server import Server
from sipwake.sip.framing import StreamFramer
from sipwake.sip.message import Request, Response, make_response
from sipwake.sip.parser import parse_message

pytestmark = pytest.mark.timeout(30)

TOKEN = "9c8b7a6f" * 8
PUSH = f";pn-provider=apns;pn-param=TEAM123456.org.lab.phone.voip;pn-prid={TOKEN}"


def _lab_config(tmp_path: Path, *, db: Path | None = None, **settings: Any) -> Config:
    """An open lab (unless ``auth`` says otherwise) on ephemeral UDP and TCP ports; memory
    store unless ``db`` is given."""
    base: dict[str, Any] = {"admin": None, "auth": {"open": True}, **settings}
    return Config(
        domain="lab.test",
        listen=[
            ListenerSpec(transport="udp", host="127.0.0.1", port=0),
            ListenerSpec(transport="tcp", host="127.0.0.1", port=0),
        ],
        store=StoreConfig(backend="memory")
        if db is None
        else StoreConfig(backend="sqlite", path=db),
        tls=TlsConfig(dir=tmp_path / "tls"),
        users={"alice": UserConfig(password="a"), "bob": UserConfig(password="b")},
        secret_file=tmp_path / "secret",
        **base,
    )


class TcpPhone:
    """A phone app over TCP: registers with push parameters; closing the connection is
    what iOS does when it suspends the app."""

    def __init__(self, port: int) -> None:
        self.server_port = port
        self.cseq = 0
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.framer = StreamFramer()
        self.pending: list[bytes] = []
        self.local = 0

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.server_port)
        self.local = self.writer.get_extra_info("sockname")[1]
        self.framer = StreamFramer()
        self.pending = []

    async def register(self) -> Response:
        await self.connect()
        self.cseq += 1
        self.send(
            f"REGISTER sip:lab.test SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP 127.0.0.1:{self.local};branch=z9hG4bKph{self.cseq};rport\r\n"
            f"From: <sip:bob@lab.test>;tag=ph\r\nTo: <sip:bob@lab.test>\r\n"
            f"Call-ID: phone-reg\r\nCSeq: {self.cseq} REGISTER\r\n"
            f"Contact: <sip:bob@127.0.0.1:{self.local};transport=tcp{PUSH}>"
            f';+sip.instance="<urn:uuid:00000000-0000-4000-8000-0000000000b0>"\r\n'
            f"Expires: 3600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n".encode()
        )
        response = await self.next()
        assert isinstance(response, Response)
        return response

    def send(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)

    async def next(self, within: float = 5.0) -> Request | Response:
        assert self.reader is not None
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(65536), within)
            assert data, "connection closed"
            self.pending += [f for f in self.framer.feed(data) if isinstance(f, bytes) and f]
        return parse_message(self.pending.pop(0), stream=True)

    async def suspend(self) -> None:
        assert self.writer is not None
        self.writer.close()
        await self.writer.wait_closed()
        await asyncio.sleep(0.1)  # the server notices the closed flow


@pytest.fixture
async def wake_lab(tmp_path: Path) -> AsyncIterator[Server]:
    config = _lab_config(tmp_path, calls={"no_answer_s": 8.0})
    async with running(config) as server:
        yield server


def _tcp_port(server: Server) -> int:
    return next(b.port for b in server.bound if b.transport == "tcp")


async def test_suspended_phone_is_pushed_wakes_and_answers(wake_lab: Server) -> None:
    assert wake_lab.sandbox is not None
    pushes = wake_lab.sandbox.subscribe()
    phone = TcpPhone(_tcp_port(wake_lab))
    assert (await phone.register()).status == 200
    await phone.suspend()
    alice = await Ua("alice", "a", udp_address(wake_lab), "lab.test").start()
    try:
        invite = alice.request("INVITE", "sip:bob@lab.test", to="<sip:bob@lab.test>")
        alice.send(invite)  # open lab: no challenge
        push = await asyncio.wait_for(pushes.get(), 3)
        assert push.kind == "call"
        assert push.target.prid == TOKEN
        assert push.call_id == invite.call_id
        ringing = await alice.expect(180)  # PBX ringback while the phone wakes
        assert isinstance(ringing, Response)
        # The app wakes from the push and registers again over a new connection.
        assert (await phone.register()).status == 200
        incoming = await phone.next()
        assert isinstance(incoming, Request)
        assert incoming.method == "INVITE"
        assert incoming.call_id == invite.call_id
        assert "pn-prid" not in str(incoming.uri)
        ok = make_response(incoming, 200, to_tag="bob1")
        ok.headers.add("Contact", f"<sip:bob@127.0.0.1:{phone.local};transport=tcp>")
        phone.send(ok.to_bytes())
        final = await alice.expect(200, within=5)
        assert isinstance(final, Response)
    finally:
        alice.close()
        await phone.suspend()


async def test_phone_that_never_wakes_diverts_to_voicemail(tmp_path: Path) -> None:
    voicemail = await Ua("vm", "", ("127.0.0.1", 9), "lab.test").start()
    config = _lab_config(
        tmp_path,
        calls={  # type: ignore[arg-type]
            "no_answer_s": 1.5,
            "voicemail": f"sip:vm@127.0.0.1:{voicemail.port}",
        },
    )
    server = Server(config)
    await server.start()
    alice = await Ua("alice", "a", udp_address(server), "lab.test").start()
    phone = TcpPhone(_tcp_port(server))
    try:
        assert (await phone.register()).status == 200
        await phone.suspend()
        invite = alice.request("INVITE", "sip:bob@lab.test", to="<sip:bob@lab.test>")
        alice.send(invite)
        started = asyncio.get_running_loop().time()
        diverted = await voicemail.expect("INVITE", within=4)
        waited = asyncio.get_running_loop().time() - started
        assert 1.3 < waited < 3.0
        assert isinstance(diverted, Request)
        assert "cause=480" in str(diverted.uri)  # no device was reached: unavailable
        assert diverted.headers.get("Diversion", "").startswith("<sip:bob@lab.test>")
        assert diverted.call_id == invite.call_id
        via_port = voicemail.sent_from[diverted.call_id + "INVITE"]
        voicemail.send(make_response(diverted, 200, to_tag="vm1"), via_port)
        final = await alice.expect(200, within=3)
        assert isinstance(final, Response)
    finally:
        alice.close()
        voicemail.close()
        await server.close()


async def test_configured_apns_gets_the_voip_push_and_410_drops_the_token(
    tmp_path: Path,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    key_file = tmp_path / "AuthKey.p8"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    async with MockApns(
        tmp_path / "apns", public_key=public, team_id="TEAM123456", key_id="KEY1234567"
    ) as apns:
        apns.issue_token(TOKEN, "org.lab.phone.voip")  # the phone's PushKit VoIP token
        assert apns.cert_file is not None
        config = _lab_config(
            tmp_path,
            calls={"no_answer_s": 8.0},
            push={  # type: ignore[arg-type]
                "apns": {
                    "team_id": "TEAM123456",
                    "key_id": "KEY1234567",
                    "key_file": str(key_file),
                    "bundle_id": "org.lab.phone",
                    "base_url": apns.base_url,
                    "ca_file": str(apns.cert_file),
                }
            },
        )
        server = Server(config)
        await server.start()
        alice = await Ua("alice", "a", udp_address(server), "lab.test").start()
        phone = TcpPhone(_tcp_port(server))
        try:
            assert (await phone.register()).status == 200
            await phone.suspend()
            invite = alice.request("INVITE", "sip:bob@lab.test", to="<sip:bob@lab.test>")
            alice.send(invite)
            await alice.expect(180)
            for _ in range(50):
                if apns.pushes:
                    break
                await asyncio.sleep(0.05)
            (push,) = apns.pushes
            assert push.token == TOKEN
            assert push.headers["apns-push-type"] == "voip"
            assert push.headers["apns-topic"] == "org.lab.phone.voip"
            assert push.body["call-id"] == invite.call_id
            # The device is uninstalled: APNs answers 410 and the next call fails fast.
            apns.unregister(TOKEN)
            second = alice.request("INVITE", "sip:bob@lab.test", to="<sip:bob@lab.test>")
            started = asyncio.get_running_loop().time()
            final = await alice.transact(second, 480)
            assert asyncio.get_running_loop().time() - started < 2.0  # not the 8 s no-answer
            assert final.status == 480
            assert server.node is not None
            (binding,) = server.node.registrar.lookup("sip:bob@lab.test", 0.0)
            assert binding.push is None  # RFC 8599 hygiene: the dead token is gone
        finally:
            alice.close()
            await server.close()


async def test_device_token_not_for_topic_is_logged_as_configuration_and_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The phone's token is, for APNs, a remote-notification token (the app sent the
    wrong one, or the server's bundle id is not the app's): APNs answers 400
    DeviceTokenNotForTopic. That is not a dead token: sipwake logs it at ERROR with the
    topic and keeps the token."""
    caplog.set_level("INFO", logger="sipwake")
    key = ec.generate_private_key(ec.SECP256R1())
    key_file = tmp_path / "AuthKey.p8"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    async with MockApns(
        tmp_path / "apns", public_key=public, team_id="TEAM123456", key_id="KEY1234567"
    ) as apns:
        apns.issue_token(TOKEN, "org.lab.phone")  # not a PushKit token
        assert apns.cert_file is not None
        config = _lab_config(
            tmp_path,
            calls={"no_answer_s": 8.0},
            push={  # type: ignore[arg-type]
                "apns": {
                    "team_id": "TEAM123456",
                    "key_id": "KEY1234567",
                    "key_file": str(key_file),
                    "bundle_id": "org.lab.phone",
                    "base_url": apns.base_url,
                    "ca_file": str(apns.cert_file),
                }
            },
        )
        server = Server(config)
        await server.start()
        alice = await Ua("alice", "a", udp_address(server), "lab.test").start()
        phone = TcpPhone(_tcp_port(server))
        try:
            assert (await phone.register()).status == 200
            await phone.suspend()
            invite = alice.request("INVITE", "sip:bob@lab.test", to="<sip:bob@lab.test>")
            final = await alice.transact(invite, 480)
            assert final.status == 480  # at once: the only push was refused
            assert apns.rejected == [(400, "DeviceTokenNotForTopic")]
            errors = [r for r in caplog.records if r.levelname == "ERROR"]
            assert any(
                "DeviceTokenNotForTopic" in r.getMessage()
                and "org.lab.phone.voip" in r.getMessage()
                and "configuration error" in r.getMessage()
                for r in errors
            ), [r.getMessage() for r in errors]
            assert TOKEN not in caplog.text
            assert server.node is not None
            (binding,) = server.node.registrar.lookup("sip:bob@lab.test", 0.0)
            assert binding.push is not None  # kept: the token is not dead
            assert binding.push.prid == TOKEN
        finally:
            alice.close()
            await server.close()


async def test_status_shows_client_state_and_presence(tmp_path: Path) -> None:
    config = _lab_config(tmp_path, admin="127.0.0.1:0")
    server = Server(config)
    await server.start()
    alice = await Ua("alice", "a", udp_address(server), "lab.test").start()
    phone = TcpPhone(_tcp_port(server))
    try:
        await alice.register()
        assert (await phone.register()).status == 200
        await phone.suspend()
        assert server.admin is not None
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sipwake",
            "status",
            "--url",
            server.admin.url,
            "--json",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0
        data = json.loads(out)
        users = {u["aor"]: u for u in data["users"]}
        assert users["sip:alice@lab.test"]["presence"] == "available"
        assert users["sip:bob@lab.test"]["presence"] == "away"  # asleep, reachable by push
        (device,) = users["sip:bob@lab.test"]["devices"]
        assert device["state"] == "suspended"
        assert device["push"]["provider"] == "apns"
        assert TOKEN not in out.decode()  # masked
        assert device["push"]["token"] == f"{TOKEN[:4]}…{TOKEN[-4:]}"
        table = await asyncio.create_subprocess_exec(  # found through ./sipwake-admin
            sys.executable, "-m", "sipwake", "status", cwd=tmp_path, stdout=asyncio.subprocess.PIPE
        )
        text, _ = await asyncio.wait_for(table.communicate(), 20)
        assert b"suspended" in text
        assert b"away" in text
    finally:
        alice.close()
        await server.close()


async def test_message_for_a_sleeping_phone_survives_a_restart(tmp_path: Path) -> None:

    config = _lab_config(tmp_path, db=tmp_path / "sipwake.db")
    server = Server(config)
    await server.start()
    alice = await Ua("alice", "a", udp_address(server), "lab.test").start()
    phone = TcpPhone(_tcp_port(server))
    try:
        assert (await phone.register()).status == 200
        await phone.suspend()
        message = alice.request(
            "MESSAGE",
            "sip:bob@lab.test",
            to="<sip:bob@lab.test>",
            body=b"call me back",
            extra="Content-Type: text/plain\r\n",
        )
        accepted = await alice.transact(message, 202)
        assert accepted.status == 202
    finally:
        alice.close()
        await server.close()
    # Restart on the same database (and the same ports, so the phone finds it again).
    config.listen = [
        ListenerSpec(transport=b.transport, host=b.host, port=b.port)  # type: ignore[arg-type]
        for b in server.bound
    ]
    again = Server(config)
    await again.start()
    try:
        assert (await phone.register()).status == 200
        delivered = await phone.next()
        assert isinstance(delivered, Request)
        assert delivered.method == "MESSAGE"
        assert delivered.body == b"call me back"
        assert delivered.call_id == message.call_id
        phone.send(make_response(delivered, 200, to_tag="b1").to_bytes())
        assert again.node is not None
        for _ in range(40):
            if again.node.held_messages("sip:bob@lab.test") == 0:
                break
            await asyncio.sleep(0.05)
        assert again.node.held_messages("sip:bob@lab.test") == 0
    finally:
        await phone.suspend()
        await again.close()


async def test_call_record_and_ladder_of_a_push_wake_call(tmp_path: Path) -> None:
    db = tmp_path / "sipwake.db"
    config = _lab_config(tmp_path, db=db)
    server = Server(config)
    await server.start()
    alice = await Ua("alice", "a", udp_address(server), "lab.test").start()
    phone = TcpPhone(_tcp_port(server))
    try:
        assert (await phone.register()).status == 200
        await phone.suspend()
        invite = alice.request("INVITE", "sip:bob@lab.test", to="<sip:bob@lab.test>")
        alice.send(invite)
        await alice.expect(180)
        await asyncio.sleep(0.2)
        assert (await phone.register()).status == 200
        incoming = await phone.next()
        assert isinstance(incoming, Request)
        ok = make_response(incoming, 200, to_tag="bob1")
        ok.headers.add("Contact", f"<sip:bob@127.0.0.1:{phone.local};transport=tcp>")
        phone.send(ok.to_bytes())
        assert isinstance(await alice.expect(200, within=5), Response)
    finally:
        alice.close()
        await phone.suspend()
        await server.close()  # flushes the call records

    async def cli(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sipwake", *args, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, out
        return out.decode()

    (call,) = json.loads(await cli("calls", "--db", str(db), "--json"))
    assert call["call_id"] == invite.call_id
    assert call["outcome"] == "answered"
    assert call["pushes"] == 1
    ladder = await cli("calls", "show", call["ref"], "--db", str(db))
    for expected in ("INVITE", "push call", "delivered", "180 Ringing", "200 OK", "registered"):
        assert expected in ladder, (expected, ladder)
    assert TOKEN not in ladder


async def test_flexisip_phone_waking_after_the_caller_gave_up_gets_invite_then_cancel(
    tmp_path: Path,
) -> None:
    config = _lab_config(tmp_path, calls={"preset": "flexisip"})
    server = Server(config)
    await server.start()
    assert server.sandbox is not None
    pushes = server.sandbox.subscribe()
    alice = await Ua("alice", "a", udp_address(server), "lab.test").start()
    phone = TcpPhone(_tcp_port(server))
    try:
        assert (await phone.register()).status == 200
        await phone.suspend()
        invite = alice.request("INVITE", "sip:bob@lab.test", to="<sip:bob@lab.test>")
        alice.send(invite)
        await alice.expect(110)  # Flexisip's "110 Push sent"
        assert (await asyncio.wait_for(pushes.get(), 3)).kind == "call"
        alice.send(alice.cancel_last())
        await alice.expect(487)  # the caller is answered at once
        # The iOS app was woken by the VoIP push: it registers and must get a call.
        assert (await phone.register()).status == 200
        incoming = await phone.next()
        assert isinstance(incoming, Request)
        assert incoming.method == "INVITE"
        assert incoming.call_id == invite.call_id
        phone.send(make_response(incoming, 180, to_tag="bob1").to_bytes())
        cancel = await phone.next()
        assert isinstance(cancel, Request)
        assert cancel.method == "CANCEL"
        assert cancel.call_id == invite.call_id
        phone.send(make_response(cancel, 200).to_bytes())
        phone.send(make_response(incoming, 487, to_tag="bob1").to_bytes())
        ack = await phone.next()
        assert isinstance(ack, Request)
        assert ack.method == "ACK"
        assert pushes.empty()  # no "cancel" alert push in this mode
        with pytest.raises(TimeoutError):
            await alice.expect(487, within=0.3)  # nothing more for the caller
    finally:
        alice.close()
        await phone.suspend()
        await server.close()


async def test_push_log_names_the_provider_that_sent_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An APNs device's push that a webhook carries is logged as the webhook's, not as if
    APNs had delivered it (README: Webhook)."""
    from tests.integration.test_push_webhook import HookServer

    hook = HookServer()
    await hook.start()
    config = _lab_config(
        tmp_path,
        calls={"no_answer_s": 8.0},
        push={"webhook": {"url": hook.url, "secret": "hook-secret"}},
    )
    caplog.set_level("INFO", logger="sipwake")
    try:
        async with running(config) as server:
            phone = TcpPhone(_tcp_port(server))
            assert (await phone.register()).status == 200
            await phone.suspend()
            alice = await Ua("alice", "a", udp_address(server), "lab.test").start()
            try:
                alice.send(alice.request("INVITE", "sip:bob@lab.test", to="<sip:bob@lab.test>"))
                for _ in range(50):
                    if hook.received:
                        break
                    await asyncio.sleep(0.05)
                assert hook.received, "the webhook got no push"
                for _ in range(50):
                    if "push call to sip:bob@lab.test" in caplog.text:
                        break
                    await asyncio.sleep(0.05)
            finally:
                alice.close()
    finally:
        await hook.close()
    (line,) = [r.getMessage() for r in caplog.records if "push call to" in r.getMessage()]
    assert "(apns " in line  # the device's push service
    assert "via webhook: delivered" in line  # what carried it
    assert "hook-secret" not in caplog.text
    assert TOKEN not in caplog.text  # masked

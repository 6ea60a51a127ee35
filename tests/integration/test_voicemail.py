"""The built-in voicemail over real UDP sockets on loopback: a caller leaves a message (a
known tone in PCMU), the voicemail hangs up at the maximum length, refuses codecs it cannot
record, and takes calls the sipwake proxy diverts to it; SIPp plays a pcap into it."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import socket
import struct
import subprocess
import sys
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from serving import running
from sipua import Ua, udp_address

from sipwake.config import CallsConfig, Config, ListenerSpec, StoreConfig, TlsConfig, UserConfig
from sipwake.server import Server
from sipwake.sip.message import Request, Response, make_response
from sipwake.voicemail import SavedMessage, VoicemailServer, list_messages
from sipwake.voicemail.g711 import encode_alaw, encode_ulaw
from sipwake.voicemail.rtp import build_rtp
from sipwake.voicemail.sdp import parse_sdp

pytestmark = pytest.mark.timeout(30)

FRAME = 160  # 20 ms at 8000 Hz
FREQ = 440.0


def tone(samples: int, amplitude: int = 8000) -> list[int]:
    return [round(amplitude * math.sin(2 * math.pi * FREQ * n / 8000)) for n in range(samples)]


def correlation(a: list[int], b: list[int]) -> float:
    n = min(len(a), len(b))
    dot = sum(x * y for x, y in zip(a[:n], b[:n], strict=True))
    norm = math.sqrt(sum(x * x for x in a[:n]) * sum(y * y for y in b[:n]))
    return dot / norm if norm else 0.0


def offer(rtp_port: int, formats: str = "0 8 101") -> bytes:
    return (
        "v=0\r\n"
        "o=bob 1 1 IN IP4 127.0.0.1\r\n"
        "s=-\r\n"
        "c=IN IP4 127.0.0.1\r\n"
        "t=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP {formats}\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=sendrecv\r\n"
    ).encode()


class RtpSender:
    """A caller's RTP socket."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    async def stream(
        self, to: tuple[str, int], frames: list[bytes], *, payload_type: int = 0
    ) -> None:
        for i, frame in enumerate(frames):
            packet = build_rtp(
                frame, payload_type=payload_type, sequence=1000 + i, timestamp=i * FRAME, ssrc=42
            )
            self.sock.sendto(packet, to)
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.1)  # let the voicemail read them before the BYE

    def close(self) -> None:
        self.sock.close()


class Voicemail(VoicemailServer):
    """A voicemail on an ephemeral port whose saved messages can be awaited."""

    def __init__(self, directory: Path, **kwargs: float) -> None:
        self.saved_queue: asyncio.Queue[SavedMessage] = asyncio.Queue()
        super().__init__(
            "127.0.0.1", 0, directory, on_message=self.saved_queue.put_nowait, **kwargs
        )

    async def next_message(self, within: float = 5.0) -> SavedMessage:
        return await asyncio.wait_for(self.saved_queue.get(), within)


@pytest.fixture
async def vm(tmp_path: Path) -> AsyncIterator[Voicemail]:
    server = Voicemail(tmp_path / "vm")
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def bob(vm: Voicemail) -> AsyncIterator[Ua]:
    ua = await Ua("bob", "-", ("127.0.0.1", vm.port), "lab.test").start()
    try:
        yield ua
    finally:
        ua.close()


def in_dialog(ua: Ua, method: str, invite: Request, ok: Response, *, cseq: int) -> Request:
    contacts = ok.contacts
    assert contacts
    routes = "".join(f"Route: {r}\r\n" for r in reversed([str(r) for r in ok.record_routes]))
    return ua.request(
        method,
        str(contacts[0].uri),
        to=ok.headers.get("To") or "",
        call_id=invite.call_id,
        cseq=cseq,
        extra=routes,
    )


async def test_message_is_recorded_as_wav_with_json_sidecar(vm: Voicemail, bob: Ua) -> None:
    rtp = RtpSender()
    try:
        invite = bob.request(
            "INVITE",
            f"{vm.uri};target=sip:alice%40lab.test;cause=408",
            to="<sip:alice@lab.test>",
            body=offer(rtp.port),
            extra="Content-Type: application/sdp\r\n",
        )
        bob.send(invite)
        trying = await bob.expect(100)
        assert isinstance(trying, Response)
        ok = await bob.expect(200)
        assert isinstance(ok, Response)
        answer = parse_sdp(ok.body)
        (audio,) = answer.media
        assert audio.formats == ("0",)
        assert audio.port not in (0, vm.port, rtp.port)
        bob.send(in_dialog(bob, "ACK", invite, ok, cseq=1))
        samples = tone(50 * FRAME)
        frames = [encode_ulaw(samples[i : i + FRAME]) for i in range(0, len(samples), FRAME)]
        await rtp.stream((answer.connection or "127.0.0.1", audio.port), frames)
        bob.send(in_dialog(bob, "BYE", invite, ok, cseq=2))
        bye_ok = await bob.expect(200)
        assert bye_ok.cseq.method == "BYE"
        saved = await vm.next_message()
    finally:
        rtp.close()

    assert saved.path.exists()
    assert saved.path.parent == vm.directory / "alice"
    with wave.open(str(saved.path), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
        frames_read = wav.getnframes()
        pcm = wav.readframes(frames_read)
    assert frames_read == 50 * FRAME  # 1.0 s
    recorded = list(struct.unpack(f"<{frames_read}h", pcm))
    assert correlation(recorded, samples) > 0.999
    assert max(abs(s) for s in recorded) == pytest.approx(8000, rel=0.05)

    sidecar = json.loads(saved.sidecar.read_text(encoding="utf-8"))
    assert sidecar["caller"] == "sip:bob@lab.test"
    assert sidecar["callee"] == "sip:alice@lab.test"
    assert sidecar["user"] == "alice"
    assert sidecar["cause"] == 408
    assert sidecar["codec"] == "PCMU"
    assert sidecar["packets"] == 50
    assert sidecar["duration"] == pytest.approx(1.0)
    assert sidecar["ended_by"] == "bye"
    assert sidecar["file"] == saved.path.name
    assert sidecar["started"].endswith("+00:00")

    (listed,) = list_messages(vm.directory)
    assert listed.path == saved.path
    assert [m.id for m in list_messages(vm.directory, "sip:alice@lab.test")] == [saved.id]
    assert list_messages(vm.directory, "bob") == []
    assert len(vm.core) == 0


async def test_voicemail_hangs_up_at_the_maximum_length(tmp_path: Path) -> None:
    server = Voicemail(tmp_path, max_message_s=0.4)
    await server.start()
    ua = await Ua("bob", "-", ("127.0.0.1", server.port), "lab.test").start()
    rtp = RtpSender()
    try:
        invite = ua.request(
            "INVITE",
            server.uri,
            to="<sip:carol@lab.test>",
            body=offer(rtp.port, "8"),
            extra="Content-Type: application/sdp\r\n",
        )
        ua.send(invite)
        ok = await ua.expect(200)
        assert isinstance(ok, Response)
        audio = parse_sdp(ok.body).media[0]
        assert audio.formats == ("8",)
        ua.send(in_dialog(ua, "ACK", invite, ok, cseq=1))
        frames = [encode_alaw(tone(FRAME))] * 5
        await rtp.stream(("127.0.0.1", audio.port), frames, payload_type=8)
        bye = await ua.expect("BYE", within=3.0)
        assert isinstance(bye, Request)
        assert str(bye.uri) == f"sip:bob@127.0.0.1:{ua.port}"
        assert bye.to.tag == "ft"
        assert bye.from_.tag == ok.to.tag
        ua.send(make_response(bye, 200), ua.sent_from[bye.call_id + "BYE"])
        message = await server.next_message()
    finally:
        rtp.close()
        ua.close()
        await server.close()
    assert message.ended_by == "max-length"
    assert message.user == "carol"
    assert message.cause is None
    assert message.codec == "PCMA"
    assert message.packets == 5
    assert message.duration == pytest.approx(0.1)


async def test_offer_without_g711_is_refused_and_opens_no_media(vm: Voicemail, bob: Ua) -> None:
    invite = bob.request(
        "INVITE",
        vm.uri,
        to="<sip:alice@lab.test>",
        body=offer(7078, "9 18"),
        extra="Content-Type: application/sdp\r\n",
    )
    bob.send(invite)
    refused = await bob.expect(488)
    assert isinstance(refused, Response)
    assert "Incompatible media format" in (refused.headers.get("Warning") or "")
    await asyncio.sleep(0.05)
    assert len(vm.core) == 0
    assert list_messages(vm.directory) == []


async def test_close_hangs_up_and_keeps_what_was_recorded(tmp_path: Path) -> None:
    saved: list[SavedMessage] = []
    server = VoicemailServer("127.0.0.1", 0, tmp_path, on_message=saved.append)
    await server.start()
    ua = await Ua("bob", "-", ("127.0.0.1", server.port), "lab.test").start()
    try:
        invite = ua.request(
            "INVITE",
            f"{server.uri};target=sip:dave%40lab.test",
            to="<sip:dave@lab.test>",
            body=offer(7078),
            extra="Content-Type: application/sdp\r\n",
        )
        ua.send(invite)
        ok = await ua.expect(200)
        assert isinstance(ok, Response)
        ua.send(in_dialog(ua, "ACK", invite, ok, cseq=1))
        await asyncio.sleep(0.05)
        await server.close()
        bye = await ua.expect("BYE")
        assert bye.call_id == invite.call_id
    finally:
        ua.close()
        await server.close()
    (message,) = saved
    assert (message.user, message.ended_by, message.packets) == ("dave", "shutdown", 0)
    assert message.path.exists()


# -- through the sipwake proxy ---------------------------------------------------------------


@pytest.fixture
async def pbx(vm: Voicemail, tmp_path: Path) -> AsyncIterator[Server]:
    config = Config(
        domain="lab.test",
        listen=[ListenerSpec(transport="udp", host="127.0.0.1", port=0)],
        store=StoreConfig(backend="memory"),
        tls=TlsConfig(dir=tmp_path / "tls"),
        users={
            "alice": UserConfig(password="alice-pw"),
            "carol": UserConfig(password="carol-pw"),
        },
        calls=CallsConfig(voicemail=vm.uri),
        secret_file=tmp_path / "secret",
    )
    async with running(config) as server:
        yield server


async def test_call_to_an_offline_user_is_diverted_and_recorded(pbx: Server, vm: Voicemail) -> None:
    alice = await Ua("alice", "alice-pw", udp_address(pbx), "lab.test").start()
    rtp = RtpSender()
    try:
        await alice.register()
        invite = alice.request(
            "INVITE",
            "sip:carol@lab.test",
            to="<sip:carol@lab.test>",
            body=offer(rtp.port),
            extra="Content-Type: application/sdp\r\n",
        )
        ok = await alice.transact(invite, 200)
        invite = alice.last_sent or invite  # the INVITE with credentials, if challenged
        answer = parse_sdp(ok.body)
        assert ok.record_routes, "the proxy stays on the dialog's path"
        alice.send(in_dialog(alice, "ACK", invite, ok, cseq=invite.cseq.seq))
        samples = tone(25 * FRAME)
        frames = [encode_ulaw(samples[i : i + FRAME]) for i in range(0, len(samples), FRAME)]
        await rtp.stream(("127.0.0.1", answer.media[0].port), frames)
        alice.send(in_dialog(alice, "BYE", invite, ok, cseq=invite.cseq.seq + 1))
        assert (await alice.expect(200)).cseq.method == "BYE"
        saved = await vm.next_message()
    finally:
        rtp.close()
        alice.close()
    assert (saved.user, saved.callee, saved.caller) == (
        "carol",
        "sip:carol@lab.test",
        "sip:alice@lab.test",
    )
    assert saved.cause == 480
    assert saved.packets == 25
    assert saved.duration == pytest.approx(0.5)


# -- SIPp ---------------------------------------------------------------------------------------

SIPP_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="leave a voicemail">
  <send retrans="500"><![CDATA[
INVITE sip:vm@[remote_ip]:[remote_port];target=sip:erin%40lab.test;cause=486 SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
To: <sip:erin@lab.test>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 8
a=rtpmap:8 PCMA/8000
]]></send>
  <recv response="100" optional="true"/>
  <recv response="200" rtd="true"/>
  <send><![CDATA[
ACK sip:vm@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
To: <sip:erin@lab.test>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0
]]></send>
  <nop><action><exec play_pcap_audio="tone.pcap"/></action></nop>
  <pause milliseconds="800"/>
  <send retrans="500"><![CDATA[
BYE sip:vm@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
To: <sip:erin@lab.test>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="200"/>
</scenario>
"""


def write_pcap(path: Path, payloads: list[bytes], *, payload_type: int) -> None:
    """A libpcap file of RTP over UDP/IPv4/Ethernet, one packet every 20 ms."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i, payload in enumerate(payloads):
        rtp = build_rtp(
            payload, payload_type=payload_type, sequence=i, timestamp=i * FRAME, ssrc=0x5EED
        )
        udp = struct.pack("!HHHH", 6000, 6000, 8 + len(rtp), 0) + rtp
        ip = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(udp),
            i,
            0,
            64,
            17,
            0,
            socket.inet_aton("127.0.0.1"),
            socket.inet_aton("127.0.0.1"),
        )
        frame = b"\x00" * 12 + b"\x08\x00" + ip + udp
        usec = i * 20000
        out.append(
            struct.pack("<IIII", usec // 1_000_000, usec % 1_000_000, len(frame), len(frame))
        )
        out.append(frame)
    path.write_bytes(b"".join(out))


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_sipp_plays_a_pcap_into_the_voicemail(vm: Voicemail, tmp_path: Path) -> None:
    sipp = shutil.which("sipp")
    if sipp is None:
        pytest.skip("sipp is not installed (Debian sip-tester)")
    work = tmp_path / "sipp"
    work.mkdir()
    (work / "vm.xml").write_text(SIPP_SCENARIO, encoding="ascii")
    samples = tone(25 * FRAME)
    write_pcap(
        work / "tone.pcap",
        [encode_alaw(samples[i : i + FRAME]) for i in range(0, len(samples), FRAME)],
        payload_type=8,
    )
    control = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # SIPp's control port
    control.bind(("127.0.0.1", 0))
    control_port = control.getsockname()[1]
    control.close()
    args = [
        "timeout", "-k", "2", "20",
        sipp, f"127.0.0.1:{vm.port}",
        "-sf", "vm.xml", "-m", "1", "-i", "127.0.0.1",
        "-p", str(_free_udp_port()), "-mp", str(_free_udp_port()),
        "-cp", str(control_port), "-nostdin", "-timeout", "15s",
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), 25)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = output.decode(errors="replace")
    if "raw socket" in text.lower() or "operation not permitted" in text.lower():
        pytest.skip(f"SIPp cannot play pcap here: {text[-300:]}")
    assert proc.returncode == 0, text[-2000:]
    saved = await vm.next_message()
    assert (saved.user, saved.cause, saved.codec) == ("erin", 486, "PCMA")
    assert saved.packets == 25
    with wave.open(str(saved.path), "rb") as wav:
        recorded = list(struct.unpack(f"<{wav.getnframes()}h", wav.readframes(wav.getnframes())))
    assert correlation(recorded, samples) > 0.999


# -- sipwake voicemail ---------------------------------------------------------------------------


async def test_cli_lists_messages_as_a_table_and_as_json(vm: Voicemail, bob: Ua) -> None:
    invite = bob.request(
        "INVITE",
        f"{vm.uri};target=sip:alice%40lab.test;cause=408",
        to="<sip:alice@lab.test>",
        body=offer(7078),
        extra="Content-Type: application/sdp\r\n",
    )
    bob.send(invite)
    ok = await bob.expect(200)
    assert isinstance(ok, Response)
    bob.send(in_dialog(bob, "ACK", invite, ok, cseq=1))
    bob.send(in_dialog(bob, "BYE", invite, ok, cseq=2))
    saved = await vm.next_message()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sipwake", "voicemail", "--dir", str(vm.directory), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    table, as_json, nobody = await asyncio.gather(
        asyncio.to_thread(run),
        asyncio.to_thread(run, "--json", "--user", "sip:alice@lab.test"),
        asyncio.to_thread(run, "--user", "zoe"),
    )
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if "sip:bob@lab.test" in line)
    assert "alice" in row
    assert "408" in row
    assert "0.0 s" in row
    assert saved.path.name in table.stdout
    assert as_json.returncode == 0, as_json.stderr
    (entry,) = json.loads(as_json.stdout)
    assert entry["caller"] == "sip:bob@lab.test"
    assert entry["callee"] == "sip:alice@lab.test"
    assert entry["cause"] == 408
    assert entry["file"] == str(saved.path)
    assert nobody.returncode == 0
    assert "no voicemail" in nobody.stdout

"""The voicemail UAS on hand-moved time: answer and SDP choice, 488, CANCEL, BYE, the 2xx
retransmissions, max length, late offers, mailboxes, RTP and the G.711 tables."""

from __future__ import annotations

import ast
import itertools
import math
import pathlib
import warnings

import pytest

from sipwake.ids import SeededIds
from sipwake.sip.message import Request, Response
from sipwake.sip.parser import parse_message
from sipwake.sip.peer import Peer
from sipwake.voicemail.core import CallState, VoicemailCore
from sipwake.voicemail.events import (
    CallLogged,
    CloseMedia,
    Dropped,
    OpenMedia,
    SendDatagram,
    StoreMessage,
    VoicemailOutput,
)
from sipwake.voicemail.g711 import (
    ALAW_TO_LINEAR,
    ULAW_TO_LINEAR,
    alaw_to_linear,
    decode_alaw,
    decode_ulaw,
    encode_alaw,
    encode_ulaw,
    linear_to_alaw,
    linear_to_ulaw,
    ulaw_to_linear,
)
from sipwake.voicemail.mailbox import mailbox_for, safe_user
from sipwake.voicemail.rtp import Recording, build_rtp, parse_rtp
from sipwake.voicemail.sdp import CODECS, answer_offer, parse_sdp

CALLER = Peer(transport="udp", host="127.0.0.1", port=5070)
VM_PORT = 5090
RTP_PORT = 40000
VM_URI = f"sip:vm@127.0.0.1:{VM_PORT};target=sip:alice%40lab.test;cause=408"


def sdp(formats: str = "0 8 101", *extra: str, media: str = "") -> bytes:
    lines = [
        "v=0",
        "o=bob 1 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        *([media] if media else []),
        f"m=audio 7078 RTP/AVP {formats}",
        "a=rtpmap:101 telephone-event/8000",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def invite(
    body: bytes | None = None,
    *,
    uri: str = VM_URI,
    branch: str = "z9hG4bKinv1",
    call_id: str = "call-1",
    headers: str = "",
    content_type: str = "application/sdp",
) -> bytes:
    body = sdp() if body is None else body
    ctype = f"Content-Type: {content_type}\r\n" if body else ""
    return (
        f"INVITE {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        'From: "Bob B" <sip:bob@lab.test>;tag=bob-tag\r\n'
        "To: <sip:alice@lab.test>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:bob@127.0.0.1:5070>\r\n"
        f"{headers}"
        f"{ctype}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def in_dialog(
    method: str,
    to_tag: str,
    *,
    cseq: int = 2,
    branch: str = "z9hG4bKdlg",
    call_id: str = "call-1",
    body: bytes = b"",
) -> bytes:
    ctype = "Content-Type: application/sdp\r\n" if body else ""
    return (
        f"{method} sip:vm@127.0.0.1:{VM_PORT} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        'From: "Bob B" <sip:bob@lab.test>;tag=bob-tag\r\n'
        f"To: <sip:alice@lab.test>;tag={to_tag}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"{ctype}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def new_core(**kwargs: float) -> VoicemailCore:
    return VoicemailCore(host="127.0.0.1", port=VM_PORT, ids=SeededIds(0), **kwargs)


def sent(outputs: list[VoicemailOutput]) -> list[Request | Response]:
    return [parse_message(o.data) for o in outputs if isinstance(o, SendDatagram)]


def statuses(outputs: list[VoicemailOutput]) -> list[int]:
    return [m.status for m in sent(outputs) if isinstance(m, Response)]


def only(outputs: list[VoicemailOutput], kind: type) -> list:  # type: ignore[type-arg]
    return [o for o in outputs if isinstance(o, kind)]


def answered(
    core: VoicemailCore, data: bytes | None = None, now: float = 0.0
) -> tuple[str, Response]:
    """Send the INVITE and open its media: the call's ref and the 200 OK."""
    out = core.receive(data or invite(), CALLER, now)
    assert statuses(out) == [100]
    (open_media,) = only(out, OpenMedia)
    out = core.media_ready(open_media.call_ref, RTP_PORT, now)
    (ok,) = sent(out)
    assert isinstance(ok, Response)
    assert ok.status == 200
    return open_media.call_ref, ok


def recording(core: VoicemailCore, now: float = 0.0) -> tuple[str, str]:
    ref, ok = answered(core, now=now)
    tag = ok.to.tag
    assert tag is not None
    assert core.receive(in_dialog("ACK", tag, cseq=1), CALLER, now + 0.01) == [
        CallLogged(call_ref=ref, step="recording", detail="PCMU, up to 120 s")
    ]
    return ref, tag


def tone(samples: int, *, freq: float = 440.0, amplitude: int = 8000, start: int = 0) -> list[int]:
    return [
        round(amplitude * math.sin(2 * math.pi * freq * (start + n) / 8000)) for n in range(samples)
    ]


# -- INVITE → 100, 200 with an SDP answer ----------------------------------------------


def test_invite_gets_100_then_200_with_an_sdp_answer_on_the_rtp_port() -> None:
    core = new_core()
    out = core.receive(invite(), CALLER, 0.0)
    (trying,) = sent(out)
    assert isinstance(trying, Response)
    assert trying.status == 100
    assert trying.to.tag is None
    (media,) = only(out, OpenMedia)
    assert core.state_of(media.call_ref) is CallState.ANSWERING
    out = core.media_ready(media.call_ref, RTP_PORT, 0.05)
    (ok,) = sent(out)
    assert isinstance(ok, Response)
    assert ok.status == 200
    assert ok.to.tag
    assert ok.headers.get("Contact") == f"<sip:vm@127.0.0.1:{VM_PORT}>"
    assert ok.headers.get("Content-Type") == "application/sdp"
    answer = parse_sdp(ok.body)
    (audio,) = answer.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == (
        "audio",
        RTP_PORT,
        "RTP/AVP",
        ("0",),
    )
    assert audio.rtpmap == {0: "PCMU/8000"}
    assert audio.direction == "recvonly"
    assert answer.connection == "127.0.0.1"
    assert core.state_of(media.call_ref) is CallState.ANSWERED
    steps = [o.step for o in only(out, CallLogged)]
    assert steps == ["answered"]


@pytest.mark.parametrize(
    ("formats", "extra", "pt", "name"),
    [
        ("0 8", (), 0, "PCMU"),
        ("8 0", (), 8, "PCMA"),
        ("9 18 8", (), 8, "PCMA"),
        ("96 0", ("a=rtpmap:96 PCMA/8000",), 96, "PCMA"),
        ("97 8", ("a=rtpmap:97 opus/48000/2",), 8, "PCMA"),
        ("0", ("a=rtpmap:0 PCMA/16000",), None, None),
    ],
)
def test_codec_choice_follows_the_offer_order(
    formats: str, extra: tuple[str, ...], pt: int | None, name: str | None
) -> None:
    answer = answer_offer(
        parse_sdp(sdp(formats, *extra)), host="127.0.0.1", port=4000, session_id=1
    )
    if pt is None:
        assert answer is None
        return
    assert answer is not None
    assert (answer.codec.payload_type, answer.codec.name) == (pt, name)
    assert f"m=audio 4000 RTP/AVP {pt}\r\n".encode() in answer.body
    assert f"a=rtpmap:{pt} {name}/8000".encode() in answer.body


def test_answer_rejects_other_streams_with_port_zero_keeping_their_order() -> None:
    offer = parse_sdp(sdp("8", media="m=video 7080 RTP/AVP 96"))
    answer = answer_offer(offer, host="127.0.0.1", port=4000, session_id=7)
    assert answer is not None
    lines = [line for line in answer.body.decode().split("\r\n") if line.startswith("m=")]
    assert lines == ["m=video 0 RTP/AVP 96", "m=audio 4000 RTP/AVP 8"]


@pytest.mark.parametrize(
    ("direction", "answered_as"),
    [("sendrecv", "recvonly"), ("sendonly", "recvonly"), ("recvonly", "inactive")],
)
def test_answer_direction(direction: str, answered_as: str) -> None:
    offer = parse_sdp(sdp("0", f"a={direction}"))
    answer = answer_offer(offer, host="127.0.0.1", port=4000, session_id=7)
    assert answer is not None
    assert parse_sdp(answer.body).media[0].direction == answered_as


@pytest.mark.parametrize(
    "body",
    [
        sdp("9 18 101"),  # G.722 and G.729 only
        sdp("0").replace(b"RTP/AVP", b"RTP/SAVP"),  # SRTP
        sdp("0").replace(b"m=audio 7078", b"m=audio 0"),  # stream refused by the offerer
    ],
)
def test_offer_without_pcmu_or_pcma_gets_488(body: bytes) -> None:
    core = new_core()
    out = core.receive(invite(body), CALLER, 0.0)
    (response,) = sent(out)
    assert isinstance(response, Response)
    assert response.status == 488
    assert "305" in (response.headers.get("Warning") or "")
    assert only(out, OpenMedia) == []
    assert len(core) == 0


def test_bad_sdp_gets_488_with_the_reason() -> None:
    core = new_core()
    out = core.receive(invite(b"v=1\r\nm=audio\r\n"), CALLER, 0.0)
    (response,) = sent(out)
    assert isinstance(response, Response)
    assert response.status == 488
    assert "expected 'v=0'" in (response.headers.get("Warning") or "")


def test_body_that_is_not_sdp_gets_415_and_unknown_require_420() -> None:
    core = new_core()
    (r415,) = sent(core.receive(invite(b"hello", content_type="text/plain"), CALLER, 0.0))
    assert isinstance(r415, Response)
    assert (r415.status, r415.headers.get("Accept")) == (415, "application/sdp")
    data = invite(branch="z9hG4bKreq", call_id="call-2", headers="Require: 100rel\r\n")
    (r420,) = sent(core.receive(data, CALLER, 0.0))
    assert isinstance(r420, Response)
    assert (r420.status, r420.headers.get("Unsupported")) == (420, "100rel")


# -- CANCEL, BYE -------------------------------------------------------------------------


def test_cancel_before_the_200_gets_487_and_closes_the_media() -> None:
    core = new_core()
    out = core.receive(invite(), CALLER, 0.0)
    (media,) = only(out, OpenMedia)
    cancel = (
        f"CANCEL {VM_URI} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinv1;rport\r\n"
        "Max-Forwards: 70\r\n"
        'From: "Bob B" <sip:bob@lab.test>;tag=bob-tag\r\n'
        "To: <sip:alice@lab.test>\r\n"
        "Call-ID: call-1\r\n"
        "CSeq: 1 CANCEL\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    out = core.receive(cancel, CALLER, 0.02)
    responses = [(m.status, m.cseq.method) for m in sent(out) if isinstance(m, Response)]
    assert responses == [(200, "CANCEL"), (487, "INVITE")]
    assert CloseMedia(call_ref=media.call_ref) in out
    assert only(out, StoreMessage) == []
    assert core.state_of(media.call_ref) is None
    # The RTP socket opened meanwhile is closed at once; no 200 goes out.
    assert core.media_ready(media.call_ref, RTP_PORT, 0.03) == [CloseMedia(call_ref=media.call_ref)]


def test_no_rtp_socket_gets_500() -> None:
    core = new_core()
    (media,) = only(core.receive(invite(), CALLER, 0.0), OpenMedia)
    out = core.media_failed(media.call_ref, "address in use", 0.01)
    assert statuses(out) == [500]
    assert core.state_of(media.call_ref) is None
    assert [o.step for o in only(out, CallLogged)] == ["failed"]


def test_cancel_matching_no_invite_gets_481() -> None:
    core = new_core()
    data = in_dialog("CANCEL", "x").replace(b";tag=x", b"")
    (response,) = sent(core.receive(data, CALLER, 0.0))
    assert isinstance(response, Response)
    assert response.status == 481


def test_bye_gets_200_and_ends_the_call_with_a_stored_message() -> None:
    core = new_core()
    ref, tag = recording(core, now=10.0)
    out = core.receive(in_dialog("BYE", tag), CALLER, 12.0)
    assert statuses(out) == [200]
    (bye_ok,) = sent(out)
    assert isinstance(bye_ok, Response)
    assert bye_ok.to.tag == tag
    (store,) = only(out, StoreMessage)
    message = store.message
    assert message.user == "alice"
    assert message.callee == "sip:alice@lab.test"
    assert message.caller == "sip:bob@lab.test"
    assert message.caller_name == "Bob B"
    assert message.cause == 408
    assert message.codec == "PCMU"
    assert (message.packets, message.duration_s, store.pcm) == (0, 0.0, b"")
    assert message.started == pytest.approx(10.01)
    assert message.ended_by == "bye"
    assert CloseMedia(call_ref=ref) in out
    assert core.state_of(ref) is None
    assert len(core) == 0
    assert core.next_deadline() is None or core.next_deadline() > 12.0


def test_bye_for_an_unknown_dialog_gets_481() -> None:
    core = new_core()
    recording(core)
    (response,) = sent(core.receive(in_dialog("BYE", "not-ours"), CALLER, 1.0))
    assert isinstance(response, Response)
    assert response.status == 481
    assert len(core) == 1


def test_options_200_and_other_methods_405() -> None:
    core = new_core()
    options = in_dialog("OPTIONS", "x").replace(b";tag=x", b"")
    (ok,) = sent(core.receive(options, CALLER, 0.0))
    assert isinstance(ok, Response)
    assert (ok.status, ok.headers.get("Allow")) == (200, "INVITE, ACK, BYE, CANCEL, OPTIONS")
    message = in_dialog("MESSAGE", "x", branch="z9hG4bKm").replace(b";tag=x", b"")
    (refused,) = sent(core.receive(message, CALLER, 0.0))
    assert isinstance(refused, Response)
    assert refused.status == 405


def test_unparsable_request_gets_400_and_garbage_is_dropped() -> None:
    core = new_core()
    bad = invite().replace(b"CSeq: 1 INVITE", b"CSeq: one INVITE")
    (response,) = core.receive(bad, CALLER, 0.0)
    assert isinstance(response, SendDatagram)
    assert response.data.startswith(b"SIP/2.0 400 CSeq: expected")
    (dropped,) = core.receive(b"\x00\x01 not sip", CALLER, 0.0)
    assert isinstance(dropped, Dropped)


# -- recording -----------------------------------------------------------------------------


def test_rtp_is_decoded_in_arrival_order_without_duplicates_or_other_payload_types() -> None:
    core = new_core()
    ref, tag = recording(core)
    samples = tone(480)
    frames = [encode_ulaw(samples[i : i + 160]) for i in range(0, 480, 160)]
    packets = [
        build_rtp(frame, payload_type=0, sequence=65534 + i, timestamp=160 * i, ssrc=7)
        for i, frame in enumerate(frames)
    ]
    for packet in [packets[0], packets[1], packets[1], packets[2]]:
        assert core.rtp_received(ref, packet, 0.5) == []
    dtmf = build_rtp(b"\x01\x0a\x00\xa0", payload_type=101, sequence=9, timestamp=0, ssrc=7)
    core.rtp_received(ref, dtmf, 0.6)
    core.rtp_received(ref, b"\x00" * 40, 0.6)  # not RTP
    out = core.receive(in_dialog("BYE", tag), CALLER, 1.0)
    (store,) = only(out, StoreMessage)
    assert store.message.packets == 3
    assert store.message.duration_s == pytest.approx(0.06)
    assert store.pcm == b"".join(decode_ulaw(f) for f in frames)


def test_recording_stops_growing_at_the_limit() -> None:
    rec = Recording(CODECS[8], max_samples=200)
    for seq in range(3):
        rec.add(build_rtp(b"\xd5" * 160, payload_type=8, sequence=seq, timestamp=0, ssrc=1))
    assert rec.samples == 200
    assert rec.packets == 2
    assert rec.pcm[:2] == (8).to_bytes(2, "little", signed=True)


def test_max_length_sends_bye_in_the_dialog_and_stores_the_message() -> None:
    core = new_core(max_message_s=5.0)
    data = invite(
        headers="Record-Route: <sip:127.0.0.1:5060;lr>, <sip:10.0.0.1:5060;transport=tcp;lr>\r\n"
    )
    ref, ok = answered(core, data, now=100.0)
    tag = ok.to.tag
    assert tag is not None
    assert ok.headers.get_all("Record-Route") == [
        "<sip:127.0.0.1:5060;lr>, <sip:10.0.0.1:5060;transport=tcp;lr>"
    ]
    core.receive(in_dialog("ACK", tag, cseq=1), CALLER, 100.1)
    assert core.next_deadline() == pytest.approx(105.1)
    out = core.handle_timeout(105.1)
    (bye,) = sent(out)
    assert isinstance(bye, Request)
    assert bye.method == "BYE"
    assert str(bye.uri) == "sip:bob@127.0.0.1:5070"
    assert bye.headers.values("Route") == [
        "<sip:127.0.0.1:5060;lr>",
        "<sip:10.0.0.1:5060;transport=tcp;lr>",
    ]
    assert bye.from_.tag == tag
    assert str(bye.from_.uri) == "sip:alice@lab.test"
    assert bye.to.tag == "bob-tag"
    assert bye.call_id == "call-1"
    assert bye.cseq.method == "BYE"
    assert bye.top_via.sent_by == ("127.0.0.1", VM_PORT)
    (send,) = only(out, SendDatagram)
    assert (send.peer.host, send.peer.port) == ("127.0.0.1", 5060)  # the first Route
    (store,) = only(out, StoreMessage)
    assert store.message.ended_by == "max-length"
    assert CloseMedia(call_ref=ref) in out
    assert len(core) == 0


def test_200_is_retransmitted_until_the_ack_then_given_up_with_a_bye() -> None:
    core = new_core()
    ref, ok = answered(core, now=0.0)
    times = []
    now = 0.0
    while len(core):
        deadline = core.next_deadline()
        assert deadline is not None
        now = deadline
        out = core.handle_timeout(now)
        for message in sent(out):
            if isinstance(message, Response):
                assert message.status == 200
                assert message.to.tag == ok.to.tag
                times.append(now)
            else:
                assert message.method == "BYE"
                bye_at = now
    # T1 = 0.5, doubling up to T2 = 4 (RFC 3261 §13.3.1.4), given up after 64*T1.
    assert times[:6] == pytest.approx([0.5, 1.5, 3.5, 7.5, 11.5, 15.5])
    assert all(b - a == pytest.approx(4.0) for a, b in itertools.pairwise(times[3:]))
    assert bye_at == pytest.approx(32.0)
    assert core.state_of(ref) is None


def test_ack_stops_the_retransmissions() -> None:
    core = new_core()
    recording(core)
    out = core.handle_timeout(0.6)
    assert [m for m in sent(out) if isinstance(m, Response) and m.status == 200] == []


def test_retransmitted_invite_is_absorbed() -> None:
    core = new_core()
    ref, _ = answered(core)
    assert sent(core.receive(invite(), CALLER, 0.1)) == []
    assert len(core) == 1
    assert core.state_of(ref) is CallState.ANSWERED


def test_reinvite_keeps_the_codec_or_gets_488() -> None:
    core = new_core()
    ref, tag = recording(core)
    out = core.receive(in_dialog("INVITE", tag, cseq=2, body=sdp("8 0")), CALLER, 1.0)
    (ok,) = sent(out)
    assert isinstance(ok, Response)
    assert ok.status == 200
    assert parse_sdp(ok.body).media[0].formats == ("0",)  # still PCMU
    core.receive(in_dialog("ACK", tag, cseq=2, branch="z9hG4bKack2"), CALLER, 1.1)
    out = core.receive(
        in_dialog("INVITE", tag, cseq=3, branch="z9hG4bKre3", body=sdp("8")), CALLER, 2.0
    )
    assert statuses(out) == [488]
    assert core.state_of(ref) is CallState.RECORDING


# -- late offer ----------------------------------------------------------------------------


def test_invite_without_sdp_gets_our_offer_and_the_ack_answer_picks_the_codec() -> None:
    core = new_core()
    ref, ok = answered(core, invite(b""))
    offer = parse_sdp(ok.body)
    assert offer.media[0].formats == ("0", "8")
    assert offer.media[0].port == RTP_PORT
    tag = ok.to.tag
    assert tag is not None
    answer = sdp("8")
    out = core.receive(in_dialog("ACK", tag, cseq=1, body=answer), CALLER, 0.1)
    assert [o.step for o in only(out, CallLogged)] == ["recording"]
    core.rtp_received(
        ref, build_rtp(b"\x55" * 160, payload_type=8, sequence=1, timestamp=0, ssrc=1), 0.2
    )
    (store,) = only(core.receive(in_dialog("BYE", tag, cseq=2), CALLER, 0.3), StoreMessage)
    assert store.message.codec == "PCMA"
    assert store.pcm[:2] == (-8).to_bytes(2, "little", signed=True)


def test_ack_without_an_answer_to_our_offer_hangs_up() -> None:
    core = new_core()
    ref, ok = answered(core, invite(b""))
    tag = ok.to.tag
    assert tag is not None
    out = core.receive(in_dialog("ACK", tag, cseq=1), CALLER, 0.1)
    (bye,) = sent(out)
    assert isinstance(bye, Request)
    assert bye.method == "BYE"
    assert only(out, StoreMessage) == []
    assert core.state_of(ref) is None


# -- shutdown, determinism --------------------------------------------------------------------


def test_close_hangs_up_recording_calls_and_refuses_the_ones_being_answered() -> None:
    core = new_core()
    ref1, _ = recording(core)
    out = core.receive(invite(branch="z9hG4bKsecond", call_id="call-2"), CALLER, 1.0)
    (media,) = only(out, OpenMedia)
    out = core.close(2.0)
    kinds = [(m.method if isinstance(m, Request) else m.status) for m in sent(out)]
    assert kinds == ["BYE", 503]
    (store,) = only(out, StoreMessage)
    assert store.message.ended_by == "shutdown"
    assert {o.call_ref for o in only(out, CloseMedia)} == {ref1, media.call_ref}
    assert len(core) == 0


def test_same_seed_same_bytes() -> None:
    def run() -> list[bytes]:
        core = new_core()
        _, ok = answered(core)
        tag = ok.to.tag or ""
        out = core.receive(in_dialog("ACK", tag, cseq=1), CALLER, 0.1)
        out += core.handle_timeout(200.0)
        return [ok.to_bytes()] + [o.data for o in out if isinstance(o, SendDatagram)]

    assert run() == run()


# -- whose mailbox ---------------------------------------------------------------------------


def _request(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def test_mailbox_from_rfc4458_target_and_cause() -> None:
    box = mailbox_for(_request(invite(uri="sip:vm@127.0.0.1;target=sip:bob%40lab.test;cause=486")))
    assert (box.callee, box.user, box.cause, box.found_in) == (
        "sip:bob@lab.test",
        "bob",
        486,
        "target",
    )


def test_mailbox_from_history_info_then_diversion_then_to() -> None:
    history = (
        "History-Info: <sip:carol@lab.test>;index=1\r\n"
        "History-Info: <sip:vm@127.0.0.1:5090?Reason=SIP%3Bcause%3D480>;index=1.1;mp=1\r\n"
    )
    box = mailbox_for(_request(invite(uri="sip:vm@127.0.0.1:5090", headers=history)))
    assert (box.callee, box.user, box.cause, box.found_in) == (
        "sip:carol@lab.test",
        "carol",
        480,
        "history-info",
    )
    diversion = "Diversion: <sip:dave@lab.test>;reason=user-busy;counter=1\r\n"
    box = mailbox_for(_request(invite(uri="sip:vm@127.0.0.1:5090", headers=diversion)))
    assert (box.user, box.cause, box.found_in) == ("dave", 486, "diversion")
    box = mailbox_for(_request(invite(uri="sip:vm@127.0.0.1:5090")))
    assert (box.user, box.cause, box.found_in) == ("alice", None, "to")


def test_mailbox_names_cannot_escape_the_directory() -> None:
    assert safe_user("../../etc") == "_.._etc"
    assert safe_user("+49 170") == "+49_170"
    assert safe_user("") == "unknown"
    box = mailbox_for(_request(invite(uri="sip:vm@h;target=sip:..%2F..%2Fx%40lab.test")))
    assert "/" not in box.user
    assert not box.user.startswith(".")


# -- RTP -------------------------------------------------------------------------------------


def test_rtp_header_csrc_extension_and_padding() -> None:
    plain = parse_rtp(
        build_rtp(b"abc", payload_type=0, sequence=5, timestamp=9, ssrc=3, marker=True)
    )
    assert plain is not None
    assert (plain.payload_type, plain.sequence, plain.timestamp, plain.ssrc, plain.marker) == (
        0,
        5,
        9,
        3,
        True,
    )
    assert plain.payload == b"abc"
    # CC=1, X=1 with one extension word, P=1 with 2 octets of padding.
    header = bytes([0x80 | 0x20 | 0x10 | 1, 8]) + (1).to_bytes(2, "big") + bytes(8)
    packet = header + bytes(4) + b"\xbe\xde\x00\x01" + bytes(4) + b"xy" + b"\x00\x02"
    parsed = parse_rtp(packet)
    assert parsed is not None
    assert parsed.payload == b"xy"
    assert parsed.payload_type == 8
    assert parse_rtp(b"\x40" + bytes(20)) is None  # version 1
    assert parse_rtp(b"\x80\xc8" + bytes(20)) is None  # RTCP sender report
    assert parse_rtp(b"\x80\x00") is None


# -- G.711 -----------------------------------------------------------------------------------


def test_ulaw_known_values() -> None:
    assert ulaw_to_linear(0xFF) == 0
    assert ulaw_to_linear(0x7F) == 0
    assert ulaw_to_linear(0x00) == -32124
    assert ulaw_to_linear(0x80) == 32124
    assert ulaw_to_linear(0xFE) == 8  # the smallest step
    assert ulaw_to_linear(0xEF) == 132  # exponent 1 starts at the bias
    assert decode_ulaw(b"\xff\x00") == b"\x00\x00" + (-32124).to_bytes(2, "little", signed=True)


def test_alaw_known_values() -> None:
    assert alaw_to_linear(0xD5) == 8
    assert alaw_to_linear(0x55) == -8
    assert alaw_to_linear(0xAA) == 32256
    assert alaw_to_linear(0x2A) == -32256
    assert decode_alaw(b"\xd5\x55") == (8).to_bytes(2, "little") + (-8).to_bytes(
        2, "little", signed=True
    )


def test_g711_tables_are_odd_symmetric_and_monotonic() -> None:
    assert len(ULAW_TO_LINEAR) == len(ALAW_TO_LINEAR) == 256
    for b in range(128):
        assert ULAW_TO_LINEAR[b] == -ULAW_TO_LINEAR[b | 0x80]
        assert ALAW_TO_LINEAR[b] == -ALAW_TO_LINEAR[b | 0x80]
    positives = sorted(ULAW_TO_LINEAR[0x80:], reverse=True)
    assert positives == list(ULAW_TO_LINEAR[0x80:])


def test_g711_round_trip_every_code_and_close_for_every_sample() -> None:
    assert all(linear_to_alaw(alaw_to_linear(b)) == b for b in range(256))
    assert all(linear_to_ulaw(ulaw_to_linear(b)) == b for b in range(256) if b != 0x7F)
    for sample in range(-32768, 32768, 37):
        step = max(16, abs(sample) // 16)
        assert abs(ulaw_to_linear(linear_to_ulaw(sample)) - sample) <= step
        assert abs(alaw_to_linear(linear_to_alaw(sample)) - sample) <= step


def test_g711_matches_audioop_where_python_still_has_it() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop", reason="audioop left Python in 3.13")
    every = bytes(range(256))
    assert decode_ulaw(every) == audioop.ulaw2lin(every, 2)
    assert decode_alaw(every) == audioop.alaw2lin(every, 2)
    samples = list(range(-32768, 32768, 5))
    pcm = b"".join(s.to_bytes(2, "little", signed=True) for s in samples)
    assert encode_ulaw(samples) == audioop.lin2ulaw(pcm, 2)
    assert encode_alaw(samples) == audioop.lin2alaw(pcm, 2)


# -- layering ------------------------------------------------------------------------------------

PURE_MODULES = ("core", "dialog", "events", "g711", "mailbox", "rtp", "sdp")
FORBIDDEN = {"asyncio", "socket", "ssl", "time", "random", "uuid", "os", "wave", "select"}


@pytest.mark.parametrize("module", PURE_MODULES)
def test_voicemail_core_modules_do_no_io(module: str) -> None:
    import sipwake.voicemail

    path = pathlib.Path(sipwake.voicemail.__file__).parent / f"{module}.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    assert names & FORBIDDEN == set()


def test_server_advertises_loopback_when_bound_to_a_wildcard(tmp_path: pathlib.Path) -> None:
    from sipwake.voicemail import VoicemailServer

    assert VoicemailServer("0.0.0.0", 5090, tmp_path).uri == "sip:vm@127.0.0.1:5090"
    assert VoicemailServer("127.0.0.2", 5091, tmp_path).uri == "sip:vm@127.0.0.2:5091"
    server = VoicemailServer("0.0.0.0", 5090, tmp_path, advertise="192.0.2.1")
    assert server.uri == "sip:vm@192.0.2.1:5090"
    with pytest.raises(ValueError, match="max_message_s"):
        VoicemailServer("127.0.0.1", 0, tmp_path, max_message_s=0)

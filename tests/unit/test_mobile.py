"""The built-in mobile (twin branch far end) on hand-moved time."""

from __future__ import annotations

from sipwake.ids import SeededIds
from sipwake.mobile import MobileCore, MobileState
from sipwake.sip.message import Request, Response
from sipwake.sip.parser import parse_message
from sipwake.sip.peer import Peer
from sipwake.voicemail.events import SendDatagram

PROXY = Peer(transport="udp", host="127.0.0.1", port=5060)
NUMBER = "+491701234567"
OFFER = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
)


def _core(answer_after: float | None = None) -> MobileCore:
    return MobileCore(
        host="127.0.0.1",
        port=5095,
        media_port=40000,
        ids=SeededIds(0),
        answer_after=lambda number: answer_after if number == NUMBER else None,
    )


def _invite(branch: str = "z9hG4bKt1") -> bytes:
    head = (
        f"INVITE sip:{NUMBER}@127.0.0.1:5095 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch={branch};rport\r\n"
        "Record-Route: <sip:127.0.0.1:5060;lr>\r\n"
        'From: "Carol" <sip:carol@lab.test>;tag=c1\r\nTo: <sip:bob@lab.test>\r\n'
        "Call-ID: twin-1\r\nCSeq: 1 INVITE\r\nContact: <sip:carol@127.0.0.1:6000>\r\n"
        f"Max-Forwards: 69\r\nContent-Type: application/sdp\r\nContent-Length: {len(OFFER)}\r\n\r\n"
    )
    return head.encode() + OFFER


def _sent(outputs: list[object]) -> list[Request | Response]:
    return [parse_message(o.data) for o in outputs if isinstance(o, SendDatagram)]


def _statuses(outputs: list[object]) -> list[int]:
    return [m.status for m in _sent(outputs) if isinstance(m, Response)]


def test_rings_and_never_answers_by_itself_by_default() -> None:
    core = _core(answer_after=None)
    out = core.receive(_invite(), PROXY, 0.0)
    assert _statuses(out) == [100, 180]
    (call,) = core.calls()
    assert call.number == NUMBER
    assert call.state is MobileState.RINGING
    assert core.next_deadline() is None  # nothing pending: it rings until told


def test_answers_after_its_delay_with_sdp_and_talks_until_bye() -> None:
    core = _core(answer_after=8.0)
    core.receive(_invite(), PROXY, 0.0)
    assert core.next_deadline() == 8.0
    out = core.handle_timeout(8.0)
    (ok,) = [m for m in _sent(out) if isinstance(m, Response)]
    assert ok.status == 200
    assert ok.headers.get("Content-Type") == "application/sdp"
    assert b"m=audio 40000 RTP/AVP 0" in ok.body
    assert ok.headers.get_all("Record-Route") == ["<sip:127.0.0.1:5060;lr>"]
    assert _statuses(core.handle_timeout(8.5)) == [200]  # retransmitted until the ACK
    tag = ok.to.tag
    ack = (
        f"ACK sip:{NUMBER}@127.0.0.1:5095 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKack\r\n"
        f"From: <sip:carol@lab.test>;tag=c1\r\nTo: <sip:bob@lab.test>;tag={tag}\r\n"
        "Call-ID: twin-1\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    core.receive(ack, PROXY, 8.6)
    assert core.calls()[0].state is MobileState.TALKING
    assert _statuses(core.handle_timeout(10.0)) == []
    bye = ack.replace(b"ACK sip", b"BYE sip").replace(b"1 ACK", b"2 BYE")
    bye = bye.replace(b"z9hG4bKack", b"z9hG4bKbye")
    assert _statuses(core.receive(bye, PROXY, 20.0)) == [200]
    assert len(core) == 0


def test_answer_command_and_cancel() -> None:
    core = _core()
    core.receive(_invite(), PROXY, 0.0)
    assert _statuses(core.answer("+0000", 1.0)) == []  # another number: nothing rings there
    assert _statuses(core.answer(NUMBER, 1.0)) == [200]
    other = _core()
    other.receive(_invite(), PROXY, 0.0)
    cancel = (
        f"CANCEL sip:{NUMBER}@127.0.0.1:5095 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKt1;rport\r\n"
        'From: "Carol" <sip:carol@lab.test>;tag=c1\r\nTo: <sip:bob@lab.test>\r\n'
        'Call-ID: twin-1\r\nCSeq: 1 CANCEL\r\nReason: SIP;cause=200;text="Call completed elsewhere"'
        "\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    assert sorted(_statuses(other.receive(cancel, PROXY, 2.0))) == [200, 487]
    assert len(other) == 0


def test_reject_answers_busy() -> None:
    core = _core()
    core.receive(_invite(), PROXY, 0.0)
    assert _statuses(core.reject(NUMBER, 1.0)) == [486]
    assert len(core) == 0


def test_config_picks_the_builtin_mobile_and_its_answer_time() -> None:
    from sipwake.config import Config, UserConfig

    config = Config(
        users={
            "bob": UserConfig(mobile=NUMBER),
            "dave": UserConfig(mobile="+4930111", mobile_answer_after_s=8),
        },
        mobile_box={"answer_after_s": "never"},  # type: ignore[arg-type]
    )
    assert config.uses_builtin_mobile
    assert config.mobile_answer_after(NUMBER) is None  # never, by default
    assert config.mobile_answer_after("+4930111") == 8.0
    assert config.call_plan("bob").twin is None  # no gateway: the server routes it
    gateway = Config(
        users={"bob": UserConfig(mobile=NUMBER)},
        calls={"twin_gateway": "sip:{number}@127.0.0.1:5070"},  # type: ignore[arg-type]
    )
    assert not gateway.uses_builtin_mobile
    assert gateway.call_plan("bob").twin == f"sip:{NUMBER}@127.0.0.1:5070"


def test_unparsable_request_gets_400_with_the_reason() -> None:
    core = _core()
    broken = _invite().replace(b"Max-Forwards: 69", b"Max-Forwards: many")
    out = core.receive(broken, PROXY, 0.0)
    (response,) = _sent(out)
    assert isinstance(response, Response)
    assert response.status == 400
    assert "Max-Forwards" in response.reason
    assert core.calls() == []

"""The node core on hand-moved time: REGISTER waits for its changes to be stored."""

from __future__ import annotations

import pytest

from sipwake.node import Node, PersistChanges, SendBytes
from sipwake.overload import LoadMeter
from sipwake.proxy.routing import LocalAddress
from sipwake.sip.message import Response
from sipwake.sip.parser import parse_message
from sipwake.sip.peer import Peer
from tests.unit.wakelab import open_node

LISTENER = LocalAddress(transport="udp", host="127.0.0.1", port=5060)
PHONE = Peer(transport="udp", host="127.0.0.1", port=5070)
REGISTER = (
    b"REGISTER sip:lab.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKn1;rport\r\n"
    b"From: <sip:alice@lab.test>;tag=a\r\nTo: <sip:alice@lab.test>\r\n"
    b"Call-ID: node-1\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@127.0.0.1:5070>\r\n"
    b"Expires: 600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


@pytest.fixture
def node() -> Node:
    return open_node(LISTENER)


def _responses(outputs: list[object]) -> list[Response]:
    out = []
    for o in outputs:
        if isinstance(o, SendBytes):
            msg = parse_message(o.data)
            if isinstance(msg, Response):
                out.append(msg)
    return out


def test_register_response_waits_for_the_store(node: Node) -> None:
    outputs = node.receive(REGISTER, PHONE, LISTENER, 1.0)
    assert len(outputs) == 1
    persist = outputs[0]
    assert isinstance(persist, PersistChanges)
    assert persist.token is not None
    assert _responses(outputs) == []  # nothing is answered before the store says so
    sent = node.changes_stored(persist.token, True, 1.01)
    (ok,) = _responses(sent)
    assert ok.status == 200
    assert len(node.registrar.lookup("sip:alice@lab.test", 1.02)) == 1


def test_store_failure_reverts_and_answers_500(node: Node) -> None:
    (persist,) = node.receive(REGISTER, PHONE, LISTENER, 1.0)
    assert isinstance(persist, PersistChanges)
    assert persist.token is not None
    sent = node.changes_stored(persist.token, False, 1.01)
    (failed,) = _responses(sent)
    assert failed.status == 500
    assert failed.headers.get("Retry-After") == "5"
    assert node.registrar.lookup("sip:alice@lab.test", 1.02) == []
    # a retransmission of the REGISTER gets the same 500 from the transaction, no new write
    again = node.receive(REGISTER, PHONE, LISTENER, 1.5)
    assert [r.status for r in _responses(again)] == [500]
    assert not any(isinstance(o, PersistChanges) for o in again)


def test_a_store_too_far_behind_reverts_and_answers_503_with_retry_after(node: Node) -> None:
    """RFC 3261 §21.5.4: 503 is the temporary overload answer; Retry-After says when to
    come back. The binding is not kept: no 200 lists it."""
    (persist,) = node.receive(REGISTER, PHONE, LISTENER, 1.0)
    assert isinstance(persist, PersistChanges)
    assert persist.token is not None
    sent = node.changes_stored(persist.token, False, 1.01, busy=True)
    (busy,) = _responses(sent)
    assert busy.status == 503
    assert busy.headers.get("Retry-After") == str(node.settings.retry_after_s)
    assert node.registrar.lookup("sip:alice@lab.test", 1.02) == []


def test_unknown_token_is_ignored(node: Node) -> None:
    assert node.changes_stored(12345, True, 1.0) == []


def test_load_meter_sheds_after_sustained_overload_and_recovers() -> None:
    meter = LoadMeter(high=0.9, low=0.5, sustain=2, step_up=0.2, step_down=0.1)
    meter.observe(1.0)
    assert not meter.overloaded  # one full sample is a burst, not overload
    meter.observe(1.0)
    assert meter.overloaded
    assert meter.shed_fraction == pytest.approx(0.2)
    admitted = sum(meter.admit() for _ in range(100))
    assert admitted == 80  # exactly the shed fraction is refused, spread evenly
    meter.observe(0.95)
    meter.observe(0.95)
    assert meter.shed_fraction == pytest.approx(0.6)
    meter.observe(0.7)  # between low and high: hold
    assert meter.shed_fraction == pytest.approx(0.6)
    for _ in range(6):
        meter.observe(0.1)
    assert not meter.overloaded
    assert all(meter.admit() for _ in range(10))


def test_single_burst_does_not_shed() -> None:
    meter = LoadMeter(high=0.9, low=0.5, sustain=2)
    meter.observe(1.0)
    meter.observe(0.2)
    meter.observe(1.0)
    assert not meter.overloaded


def test_overloaded_node_answers_new_requests_503_but_not_dialogs(node: Node) -> None:
    meter = LoadMeter(high=0.9, low=0.5, sustain=1, step_up=1.0)
    meter.observe(1.0)
    assert meter.shed_fraction == 1.0
    node.load = meter
    outputs = node.receive(REGISTER, PHONE, LISTENER, 1.0)
    (busy,) = _responses(outputs)
    assert busy.status == 503
    assert busy.headers.get("Retry-After") == "2"
    bye = (
        b"BYE sip:alice@127.0.0.1:5070 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKbye1;rport\r\n"
        b"From: <sip:bob@lab.test>;tag=b\r\nTo: <sip:alice@lab.test>;tag=a\r\n"
        b"Call-ID: dialog-1\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    statuses = [r.status for r in _responses(node.receive(bye, PHONE, LISTENER, 1.1))]
    assert 503 not in statuses
    assert node.shed == 1


def test_a_request_the_transport_could_not_send_fails_the_branch_at_once(node: Node) -> None:
    """RFC 3261 §17.1.4 / §16.9: a branch whose connection cannot be opened counts as a
    503 now, so the caller hears back at once instead of after Timer B (32 s)."""
    bob = Peer(transport="tcp", host="127.0.0.1", port=5090, flow=7)
    register = (
        b"REGISTER sip:lab.test SIP/2.0\r\n"
        b"Via: SIP/2.0/TCP 127.0.0.1:5090;branch=z9hG4bKb1;rport\r\n"
        b"From: <sip:bob@lab.test>;tag=b\r\nTo: <sip:bob@lab.test>\r\n"
        b"Call-ID: node-b\r\nCSeq: 1 REGISTER\r\n"
        b"Contact: <sip:bob@127.0.0.1:5090;transport=tcp>\r\n"
        b"Expires: 600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    out = node.receive(register, bob, LISTENER, 0.0)
    token = next(o.token for o in out if isinstance(o, PersistChanges))
    node.changes_stored(token, True, 0.0)
    invite = (
        b"INVITE sip:bob@lab.test SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKinv1;rport\r\n"
        b"From: <sip:alice@lab.test>;tag=a1\r\nTo: <sip:bob@lab.test>\r\n"
        b"Call-ID: node-call\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5070>\r\n"
        b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    out = node.receive(invite, PHONE, LISTENER, 1.0)
    forwarded = next(o for o in out if isinstance(o, SendBytes) and o.peer == bob)
    assert forwarded.data.startswith(b"INVITE ")
    assert [r.status for r in _responses(out)] == [100]

    out = node.send_failed(forwarded.data, 1.1)
    finals = [r for r in _responses(out) if r.status >= 200]
    assert [r.status for r in finals] == [480], [r.status for r in _responses(out)]
    assert finals[0].call_id == "node-call"
    # The client transaction is gone: nothing will retransmit or time out later.
    assert node.send_failed(forwarded.data, 1.2) == []


CALLER = Peer(transport="udp", host="127.0.0.1", port=5080)
MESSAGE = (
    b"MESSAGE sip:alice@lab.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKm1;rport\r\n"
    b"From: <sip:bob@lab.test>;tag=b\r\nTo: <sip:alice@lab.test>\r\n"
    b"Call-ID: msg-1\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
)


def _sent_to(outputs: list[object], peer: Peer) -> list[bytes]:
    return [o.data for o in outputs if isinstance(o, SendBytes) and o.peer == peer]


def test_a_finished_non_invite_context_is_forgotten_while_its_transactions_linger(
    node: Node,
) -> None:
    """The proxy keeps nothing of a MESSAGE once the 200 went back; the transactions,
    which linger 32 s, still answer the caller's retransmission and absorb the device's."""
    persist = node.receive(REGISTER, PHONE, LISTENER, 1.0)[0]
    assert isinstance(persist, PersistChanges)
    assert persist.token is not None
    node.changes_stored(persist.token, True, 1.0)
    (forwarded,) = _sent_to(node.receive(MESSAGE, CALLER, LISTENER, 2.0), PHONE)
    request = parse_message(forwarded)
    vias = [f"Via: {v}\r\n" for v in request.headers.values("via")]
    ok = (
        "SIP/2.0 200 OK\r\n" + "".join(vias) + "From: <sip:bob@lab.test>;tag=b\r\n"
        "To: <sip:alice@lab.test>;tag=a1\r\nCall-ID: msg-1\r\nCSeq: 1 MESSAGE\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    answered = _responses(node.receive(ok, PHONE, LISTENER, 2.1))
    assert [r.status for r in answered] == [200]
    assert len(node.proxy) == 0
    assert len(node.layer) == 3  # REGISTER and MESSAGE NISTs, our NICT to the phone
    again = _responses(node.receive(MESSAGE, CALLER, LISTENER, 2.5))
    assert [r.status for r in again] == [200]
    assert _responses(node.receive(ok, PHONE, LISTENER, 2.6)) == []


def test_next_deadline_is_the_earliest_of_every_core(node: Node) -> None:
    assert node.next_deadline() is None  # nothing pending anywhere
    outputs = node.receive(REGISTER, PHONE, LISTENER, 1.0)
    persist = outputs[0]
    assert isinstance(persist, PersistChanges)
    assert persist.token is not None
    node.changes_stored(persist.token, True, 1.0)
    cores = [
        node.layer.next_deadline(),  # Timer J of the REGISTER's transaction
        node.proxy.next_deadline(),
        node.registrar.next_deadline(),  # the binding's expiry
        node.wake.next_deadline(),
        node.presence.next_deadline(),
        node.qualifier.next_deadline(),  # the UDP binding's first OPTIONS ping
    ]
    assert node.layer.next_deadline() is not None
    assert node.registrar.next_deadline() == 601.0
    assert node.qualifier.next_deadline() == 121.0
    assert node.next_deadline() == min(d for d in cores if d is not None)
    now = node.layer.next_deadline()
    assert now is not None
    node.handle_timeout(now)  # the transaction ends: the ping is next, then the expiry
    assert node.layer.next_deadline() is None
    assert node.next_deadline() == 121.0

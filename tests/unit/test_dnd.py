"""Runtime DND (``sipwake.proxy.dnd``): feature codes ``*78``/``*79`` from the phone and
``set_dnd`` from the admin change what the next call does; the plan's ``dnd`` decides it
(no push, straight to the no-answer target)."""

from __future__ import annotations

from wakelab import CALLER, UDP, Phone, WakeLab

from sipwake.proxy.dnd import DndState, feature_code, feature_reply
from sipwake.proxy.plan import CallPlan, plan_for
from sipwake.sip.message import Response

TOKEN = "a1b2" * 16


def _asleep(lab: WakeLab) -> Phone:
    phone = Phone(user="bob", port=7001, instance="urn:uuid:bob-1", token=TOKEN)
    assert lab.register(phone).status == 200
    lab.suspend(phone)
    return phone


def _final_to_caller(lab: WakeLab) -> Response:
    finals = [
        s.message
        for s in lab.sent()
        if s.peer.port == 6000 and isinstance(s.message, Response) and s.message.status >= 200
    ]
    return finals[-1]


def test_feature_codes_are_78_on_and_79_off() -> None:
    assert feature_code("*78") is True
    assert feature_code("*79") is False
    assert feature_code("bob") is None
    assert feature_code(None) is None
    assert feature_reply(True)[:2] == (603, "DND On")
    assert feature_reply(False)[:2] == (603, "DND Off")


def test_dnd_state_overrides_the_configured_plan_both_ways() -> None:
    state = DndState()
    configured_on = plan_for("sipwake", dnd=True)
    assert state.apply("bob", configured_on).dnd is True
    state.set("bob", False)
    assert state.apply("bob", configured_on).dnd is False
    assert state.apply("alice", configured_on).dnd is True
    assert state.set("bob", False) is False  # no change
    assert state.set("bob", True) is True


def test_star78_answers_603_and_the_next_call_pushes_nobody() -> None:
    lab = WakeLab()
    _asleep(lab)
    lab.call("*78", caller="bob")
    answer = _final_to_caller(lab)
    assert (answer.status, answer.reason) == (603, "DND On")
    assert lab.pushes() == []  # a feature code is no call to anyone
    lab.call("bob")
    assert lab.pushes() == []
    assert lab.to_caller()[-1] == 480
    assert "no-answer" in lab.steps()


def test_star79_turns_it_off_and_calls_push_again() -> None:
    lab = WakeLab(plan=CallPlan(dnd=True))  # DND in the configuration
    _asleep(lab)
    lab.call("*79", caller="bob")
    assert _final_to_caller(lab).reason == "DND Off"
    lab.call("bob")
    assert len(lab.pushes("call")) == 1


def test_feature_code_from_another_domain_is_refused() -> None:
    lab = WakeLab()
    _asleep(lab)
    data = (
        b"INVITE sip:*78@lab.test SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKx1;rport\r\n"
        b"From: <sip:mallory@evil.example>;tag=m\r\nTo: <sip:*78@lab.test>\r\n"
        b"Call-ID: fc-1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )

    lab._keep(lab.node.receive(data, CALLER, UDP, lab.now))
    assert _final_to_caller(lab).status == 403
    assert lab.node.plan_of("mallory").dnd is False
    lab.call("bob")
    assert len(lab.pushes("call")) == 1


def test_admin_set_dnd_shows_in_status_and_stops_the_push() -> None:
    lab = WakeLab()
    _asleep(lab)
    assert lab.node.set_dnd("bob", True)
    (user,) = lab.node.snapshot(lab.now)
    assert user["dnd"] is True
    lab.call("bob")
    assert lab.pushes() == []
    assert lab.node.set_dnd("bob", False)
    lab.call("bob")
    assert len(lab.pushes("call")) == 1

"""The call-wake engine on hand-moved time: push, hold, late forking, twinning, diversion."""

from __future__ import annotations

import dataclasses
import re

from sipwake.cli import _push_cell
from sipwake.node import ForgetMessage, KeepMessage, PersistChanges
from sipwake.proxy.plan import PRESETS, CallPlan, plan_for
from sipwake.proxy.wake import CallEvent
from sipwake.registrar.events import PushTargetRemoved
from sipwake.sip.message import Request
from tests.unit.wakelab import Phone, WakeLab

TOKEN = "a1b2c3d4" * 8
TOKEN2 = "0f0e0d0c" * 8
REMOTE = "e5f6a7b8" * 8
VM = "sip:vm@127.0.0.1:5090"
TWIN = "sip:+491701234567@127.0.0.1:5095"


def _iphone(
    port: int = 7001,
    token: str = TOKEN,
    instance: str = "urn:uuid:phone-1",
    remote: str | None = REMOTE,
) -> Phone:
    """An iOS app with its PushKit VoIP token and its remote-notification token."""
    return Phone(user="bob", port=port, instance=instance, token=token, remote=remote)


def _suspended(lab: WakeLab, phone: Phone) -> None:
    assert lab.register(phone).status == 200
    lab.suspend(phone)


def test_foreground_device_rings_at_once_and_gets_no_push() -> None:
    lab = WakeLab()
    phone = _iphone()
    assert lab.register(phone).status == 200
    lab.call("bob")
    assert len(lab.invites_to(phone.port)) == 1
    assert lab.pushes() == []
    assert lab.to_caller() == [100]  # the device's own 180 is the ringback


def test_suspended_device_is_pushed_held_and_forked_when_it_registers() -> None:
    lab = WakeLab()
    phone = _iphone()
    _suspended(lab, phone)
    lab.call("bob")
    (push,) = lab.pushes("call")
    assert push.request.target.prid == TOKEN
    assert push.request.caller == "Carol C"
    assert push.request.call_id == "call-1"
    assert lab.invites_to(phone.port) == []  # nothing sent over the dead flow
    assert lab.to_caller() == [100, 180]  # PBX ringback while the phone wakes
    lab.push_result(push, "delivered")
    lab.advance(2.5)  # iOS wakes and re-registers over a new connection
    assert lab.register(phone).status == 200
    (invite,) = lab.invites_to(phone.port)
    assert invite.peer.flow == phone.flow  # over the new flow
    assert isinstance(invite.message, Request)
    assert "pn-prid" not in str(invite.message.uri)  # push parameters never forwarded
    lab.answer(invite, 200)
    assert lab.to_caller()[-1] == 200
    assert lab.steps()[:4] == ["received", "push-sent", "ringback", "push-result"]
    assert lab.steps()[-3:] == ["registered", "forked", "answered"]


def test_each_call_has_its_own_random_v4_uuid_in_its_pushes() -> None:
    """CallKit identifies a call by the push's UUID: one per call, random (RFC 9562 §5.4),
    the same in every push of that call (the call push and the cancel push)."""
    lab = WakeLab()
    phone = _iphone()
    _suspended(lab, phone)
    uuids = []
    call_id = ""
    for _ in range(3):
        call_id = lab.call("bob")
        uuids.append(lab.pushes("call")[-1].request.call_uuid)
    assert len(set(uuids)) == 3
    for value in uuids:
        assert value is not None
        assert re.fullmatch(
            r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", value
        )
        digits = value.replace("-", "")
        assert len(set(digits)) > 6  # not a padded or ASCII-derived value
        assert not digits.endswith("0000")
    lab.cancel(call_id)
    (cancel,) = lab.pushes("cancel")
    assert cancel.request.call_uuid == uuids[-1]


def test_register_answer_is_sent_before_the_held_invite() -> None:
    lab = WakeLab()
    phone = _iphone()
    _suspended(lab, phone)
    lab.call("bob")
    lab.outputs.clear()
    lab.register(phone)
    kinds = [
        getattr(s.message, "method", None) or s.message.status  # type: ignore[union-attr]
        for s in lab.sent_to(phone)
    ]
    assert kinds == [200, "INVITE"]


def test_udp_push_binding_is_foreground_only_within_its_window() -> None:
    lab = WakeLab(plan=CallPlan(udp_foreground_s=60))
    phone = Phone(user="bob", port=7001, transport="udp", token=TOKEN)
    lab.register(phone)
    lab.call("bob")
    assert len(lab.invites_to(7001)) == 1
    assert lab.pushes() == []
    lab.advance(61)
    lab.call("bob")
    assert len(lab.pushes("call")) == 1
    assert len(lab.invites_to(7001)) == 1  # the second call was not sent to the stale contact


def test_no_answer_diverts_to_voicemail_with_history() -> None:
    lab = WakeLab(plan=CallPlan(no_answer_s=20, voicemail=VM))
    ringing = Phone(user="bob", port=7002, instance="urn:uuid:desk")
    lab.register(ringing)
    lab.call("bob")
    (invite,) = lab.invites_to(7002)
    lab.answer(invite, 180)
    lab.advance(19.9)
    assert lab.invites_to(5090) == []
    lab.advance(0.2)
    assert len(lab.invites_to(7002, "CANCEL")) == 1
    (vm,) = lab.invites_to(5090)
    assert isinstance(vm.message, Request)
    uri = str(vm.message.uri)
    assert "target=sip:bob%40lab.test" in uri
    assert "cause=408" in uri
    assert vm.message.headers.get("Diversion") == "<sip:bob@lab.test>;reason=no-answer;counter=1"
    history = vm.message.headers.get_all("History-Info")
    assert history[0] == "<sip:bob@lab.test>;index=1"
    assert history[1].startswith(f"<{VM}?Reason=SIP%3Bcause%3D408>;index=1.1")
    lab.answer(vm, 200, tag="vm")
    assert lab.to_caller()[-1] == 200
    assert "diverted" in lab.steps()


def test_no_answer_without_target_answers_480_and_sends_missed_call_push() -> None:
    lab = WakeLab(plan=CallPlan(no_answer_s=20))
    phone = _iphone()
    _suspended(lab, phone)
    lab.call("bob")
    (push,) = lab.pushes("call")
    lab.push_result(push, "delivered")
    lab.advance(20.1)  # the phone never woke
    assert lab.to_caller()[-1] == 480
    (cancel,) = lab.pushes("cancel")
    assert cancel.request.body == "missed call"
    assert cancel.request.call_id == push.request.call_id


def test_flexisip_preset_times_out_with_408_after_90s() -> None:
    lab = WakeLab(plan=plan_for("flexisip"))
    phone = _iphone()
    _suspended(lab, phone)
    lab.call("bob")
    assert lab.to_caller() == [100, 110]  # "110 Push sent"
    lab.advance(89)
    assert lab.to_caller()[-1] == 110
    lab.advance(1.5)
    assert lab.to_caller()[-1] == 408


def test_twin_branch_after_mobile_dial_delay() -> None:
    lab = WakeLab(plan=CallPlan(no_answer_s=30, mobile_dial_delay_s=10, twin=TWIN))
    phone = _iphone()
    _suspended(lab, phone)
    lab.call("bob")
    lab.advance(9.9)
    assert lab.invites_to(5095) == []
    lab.advance(0.2)
    (twin,) = lab.invites_to(5095)
    assert isinstance(twin.message, Request)
    assert str(twin.message.uri) == TWIN
    lab.answer(twin, 200, tag="gsm")
    assert lab.to_caller()[-1] == 200
    # The phone still waking is told the call was taken elsewhere (CallKit stops ringing).
    (cancel,) = lab.pushes("cancel")
    assert cancel.request.body == "answered elsewhere"


def test_permanent_push_failure_drops_the_token_and_fails_fast() -> None:
    lab = WakeLab(plan=CallPlan(no_answer_s=30))
    phone = _iphone(remote=None)
    _suspended(lab, phone)
    lab.call("bob")
    (push,) = lab.pushes("call")
    lab.advance(0.05)
    lab.push_result(push, "invalid_target", reason="Unregistered", http_status=410)
    removed = [e for o in lab.outputs if isinstance(o, PersistChanges) for e in o.events]
    assert any(isinstance(e, PushTargetRemoved) for e in removed)
    binding = lab.node.registrar.lookup("sip:bob@lab.test", lab.now)[0]
    assert binding.push is None
    assert lab.to_caller()[-1] == 480  # at once, not after 30 s
    assert lab.now < 101


def test_transient_push_failure_is_retried_with_backoff_and_retry_after() -> None:
    lab = WakeLab(plan=CallPlan(no_answer_s=30, push_attempts=3, push_backoff_s=1.0))
    phone = _iphone()
    _suspended(lab, phone)
    lab.call("bob")
    (first,) = lab.pushes("call")
    lab.push_result(first, "retry", reason="ServiceUnavailable")
    lab.advance(0.9)
    assert len(lab.pushes("call")) == 1
    lab.advance(0.2)
    second = lab.pushes("call")[1]
    lab.push_result(second, "retry", reason="TooManyRequests", retry_after=5.0)
    lab.advance(4.8)
    assert len(lab.pushes("call")) == 2
    lab.advance(0.3)
    third = lab.pushes("call")[2]
    lab.push_result(third, "retry")
    lab.advance(10)
    assert len(lab.pushes("call")) == 3  # three attempts, then it gives up
    assert lab.to_caller()[-1] == 480  # and nothing is left to wait for


def test_caller_cancel_during_wake_answers_487_and_pushes_cancel() -> None:
    lab = WakeLab()
    phone = _iphone()
    _suspended(lab, phone)
    call_id = lab.call("bob")
    (push,) = lab.pushes("call")
    lab.push_result(push, "delivered")
    lab.advance(1)
    lab.cancel(call_id)
    assert 487 in lab.to_caller()
    (cancel,) = lab.pushes("cancel")
    assert cancel.request.body == "missed call"
    lab.register(phone)  # it wakes anyway: no INVITE for a call that is over
    assert lab.invites_to(phone.port) == []


def test_busy_everywhere_diverts_on_busy() -> None:
    lab = WakeLab(plan=CallPlan(voicemail=VM))
    desk = Phone(user="bob", port=7002, instance="urn:uuid:desk")
    lab.register(desk)
    lab.call("bob")
    (invite,) = lab.invites_to(7002)
    lab.answer(invite, 486)
    (vm,) = lab.invites_to(5090)
    assert isinstance(vm.message, Request)
    assert "cause=486" in str(vm.message.uri)
    assert vm.message.headers.get("Diversion", "").endswith("reason=user-busy;counter=1")


def test_busy_without_target_forwards_486() -> None:
    lab = WakeLab()
    desk = Phone(user="bob", port=7002)
    lab.register(desk)
    lab.call("bob")
    (invite,) = lab.invites_to(7002)
    lab.answer(invite, 486)
    assert lab.to_caller()[-1] == 486


def test_busy_waits_for_a_device_still_waking() -> None:
    lab = WakeLab(plan=CallPlan(no_answer_s=30))
    desk = Phone(user="bob", port=7002, instance="urn:uuid:desk")
    lab.register(desk)
    phone = _iphone()
    _suspended(lab, phone)
    lab.call("bob")
    (invite,) = lab.invites_to(7002)
    lab.answer(invite, 486)
    assert lab.to_caller()[-1] == 180  # the iPhone may still answer
    lab.register(phone)
    (woken,) = lab.invites_to(phone.port)
    lab.answer(woken, 200, tag="ios")
    assert lab.to_caller()[-1] == 200


def test_dnd_pushes_nobody_and_goes_to_voicemail() -> None:
    lab = WakeLab(plan=CallPlan(dnd=True, voicemail=VM))
    phone = _iphone()
    _suspended(lab, phone)
    lab.call("bob")
    assert lab.pushes() == []
    assert len(lab.invites_to(5090)) == 1


def test_device_registering_late_is_forked_too() -> None:
    lab = WakeLab()
    phone = _iphone()
    _suspended(lab, phone)
    lab.call("bob")
    lab.advance(3)
    tablet = Phone(user="bob", port=7003, instance="urn:uuid:tablet")
    lab.register(tablet)
    assert len(lab.invites_to(7003)) == 1
    assert lab.invites_to(phone.port) == []


def test_one_ios_device_per_user_pushes_only_the_last_registered() -> None:
    lab = WakeLab(plan=dataclasses.replace(plan_for("avaya-ip-office"), push_requires_tls=False))
    old = _iphone(port=7001, token=TOKEN, instance="urn:uuid:old")
    _suspended(lab, old)
    lab.advance(5)
    new = _iphone(port=7004, token=TOKEN2, instance="urn:uuid:new")
    _suspended(lab, new)
    lab.call("bob")
    (push,) = lab.pushes("call")
    assert push.request.target.prid == TOKEN2


def test_one_ios_device_per_user_newest_in_foreground_rings_and_nobody_is_pushed() -> None:
    """Avaya IP Office: the one iOS device of a user is the last to register among all of
    them; when that one is in the foreground it rings, and the older suspended iPhone is
    not pushed (it is no longer the user's iOS device)."""
    lab = WakeLab(plan=dataclasses.replace(plan_for("avaya-ip-office"), push_requires_tls=False))
    old = _iphone(port=7001, token=TOKEN, instance="urn:uuid:old")
    _suspended(lab, old)
    lab.advance(5)
    new = _iphone(port=7004, token=TOKEN2, instance="urn:uuid:new")
    assert lab.register(new).status == 200  # stays in the foreground
    lab.call("bob")
    assert len(lab.invites_to(new.port)) == 1
    assert lab.pushes() == []


def test_one_ios_device_rule_leaves_android_devices_alone() -> None:
    lab = WakeLab(plan=dataclasses.replace(plan_for("avaya-ip-office"), push_requires_tls=False))
    android = Phone(user="bob", port=7002, instance="urn:uuid:a", token="fcm-1", provider="fcm")
    _suspended(lab, android)
    lab.advance(5)
    new = _iphone(port=7004, token=TOKEN2, instance="urn:uuid:new")
    assert lab.register(new).status == 200
    lab.call("bob")
    assert [p.request.target.prid for p in lab.pushes("call")] == ["fcm-1"]


def test_avaya_pushes_only_tls_clients_and_waits_20s() -> None:
    lab = WakeLab(plan=plan_for("avaya-ip-office"))
    tcp = _iphone(port=7001)
    _suspended(lab, tcp)
    tls = Phone(user="bob", port=7005, transport="tls", instance="urn:uuid:t", token=TOKEN2)
    _suspended(lab, tls)
    lab.call("bob")
    assert [p.request.target.prid for p in lab.pushes("call")] == [TOKEN2]
    lab.advance(19.5)  # No Answer Time 15 s raised to 20 s with a push client
    assert lab.to_caller()[-1] == 180
    lab.advance(1)
    assert lab.to_caller()[-1] == 480


def test_cisco_pushes_foreground_ios_devices_too() -> None:
    lab = WakeLab(plan=plan_for("cisco-cucm"))
    phone = _iphone()
    lab.register(phone)  # foreground
    lab.call("bob")
    assert len(lab.invites_to(phone.port)) == 1
    assert len(lab.pushes("call")) == 1


def test_decline_ends_the_call_and_tells_waking_devices() -> None:
    lab = WakeLab(plan=CallPlan(voicemail=VM))
    desk = Phone(user="bob", port=7002, instance="urn:uuid:desk")
    lab.register(desk)
    phone = _iphone()
    _suspended(lab, phone)
    lab.call("bob")
    (invite,) = lab.invites_to(7002)
    lab.answer(invite, 603)
    assert lab.to_caller()[-1] == 603
    assert lab.invites_to(5090) == []
    assert [p.request.body for p in lab.pushes("cancel")] == ["declined"]


def test_unregistered_user_goes_straight_to_voicemail() -> None:
    lab = WakeLab(plan=CallPlan(voicemail=VM))
    lab.call("bob")
    (vm,) = lab.invites_to(5090)
    assert isinstance(vm.message, Request)
    assert "cause=480" in str(vm.message.uri)


def test_failed_voicemail_ends_the_call() -> None:
    lab = WakeLab(plan=CallPlan(voicemail=VM))
    lab.call("bob")
    (vm,) = lab.invites_to(5090)
    lab.answer(vm, 503)
    assert lab.to_caller()[-1] >= 400


def test_engine_forgets_calls_when_they_end() -> None:
    lab = WakeLab()
    phone = _iphone()
    _suspended(lab, phone)
    call_id = lab.call("bob")
    lab.cancel(call_id)
    lab.advance(64)
    assert len(lab.node.wake) == 0


def test_every_preset_builds_and_warns_about_inconsistent_timers() -> None:
    for name in PRESETS:
        assert plan_for(name).preset == name
    bad = CallPlan(no_answer_s=5, mobile_dial_delay_s=10, twin=TWIN)
    warnings = bad.warnings()
    assert any("twin never rings" in w for w in warnings)
    assert any("too little time" in w for w in warnings)


def test_message_to_a_suspended_device_is_kept_pushed_and_delivered_on_wake() -> None:
    lab = WakeLab()
    phone = _iphone()
    _suspended(lab, phone)
    call_id = lab.message("bob", "are you there?")
    assert lab.to_caller() == [202]  # RFC 3428: accepted, not yet delivered
    (push,) = lab.pushes("message")  # an alert push, not a VoIP push (iOS 13+)
    assert push.request.body == "are you there?"
    assert lab.pushes("call") == []
    (kept,) = [o for o in lab.outputs if isinstance(o, KeepMessage)]
    assert b"are you there?" in kept.data
    assert lab.node.held_messages("sip:bob@lab.test") == 1
    lab.advance(30)
    lab.register(phone)
    (delivered,) = lab.invites_to(phone.port, "MESSAGE")
    assert isinstance(delivered.message, Request)
    assert delivered.message.call_id == call_id
    assert delivered.message.body == b"are you there?"
    assert delivered.peer.flow == phone.flow
    lab.answer(delivered, 200)
    (forgot,) = [o for o in lab.outputs if isinstance(o, ForgetMessage)]
    assert forgot.message_id == kept.message_id
    assert lab.node.held_messages("sip:bob@lab.test") == 0


def test_refused_delivery_keeps_the_message_for_the_next_registration() -> None:
    lab = WakeLab()
    phone = _iphone()
    _suspended(lab, phone)
    lab.message("bob", "hello")
    lab.register(phone)
    (first,) = lab.invites_to(phone.port, "MESSAGE")
    lab.answer(first, 480)
    assert lab.node.held_messages("sip:bob@lab.test") == 1
    lab.suspend(phone)
    lab.register(phone)
    second = lab.invites_to(phone.port, "MESSAGE")[-1]
    lab.answer(second, 200)
    assert lab.node.held_messages("sip:bob@lab.test") == 0


def test_message_to_an_awake_device_is_proxied_at_once() -> None:
    lab = WakeLab()
    phone = _iphone()
    lab.register(phone)
    lab.message("bob", "hi")
    assert len(lab.invites_to(phone.port, "MESSAGE")) == 1
    assert lab.pushes() == []
    assert lab.node.held_messages("sip:bob@lab.test") == 0


# -- Flexisip's INVITE + CANCEL for devices that wake after the call ended ---------------
def _flexisip(**overrides: object) -> CallPlan:
    return dataclasses.replace(plan_for("flexisip"), **overrides)  # type: ignore[arg-type]


def test_invite_cancel_mode_replays_a_cancelled_call_when_the_device_registers() -> None:
    lab = WakeLab(plan=_flexisip())
    phone = _iphone()
    _suspended(lab, phone)
    call_id = lab.call("bob")
    (push,) = lab.pushes("call")
    lab.push_result(push, "delivered")
    lab.advance(1)
    lab.cancel(call_id)
    assert lab.to_caller()[-1] == 487  # the caller is answered at once
    assert lab.pushes("cancel") == []  # no alert push in this mode
    lab.advance(2)
    to_caller = len(lab.to_caller())
    lab.register(phone)  # the iOS app wakes: it must report a call to CallKit
    (invite,) = lab.invites_to(phone.port)
    assert isinstance(invite.message, Request)
    assert invite.message.call_id == call_id  # the Call-ID the push carried
    assert invite.peer.flow == phone.flow
    assert len(invite.message.via) == 1  # only ours: nothing goes back to the caller
    assert lab.invites_to(phone.port, "CANCEL") == []  # RFC 3261 §9.1: after a provisional
    lab.answer(invite, 180)
    (cancel,) = lab.invites_to(phone.port, "CANCEL")
    assert isinstance(cancel.message, Request)
    assert cancel.message.call_id == call_id
    assert cancel.message.top_via.branch == invite.message.top_via.branch
    # The caller gave up without a Reason: Flexisip's "Call completed elsewhere" (issue 5).
    assert cancel.message.headers.get("Reason") == 'SIP;cause=200;text="Call completed elsewhere"'
    lab.answer(invite, 487)
    assert len(lab.to_caller()) == to_caller
    assert lab.steps().count("invite-cancel") == 2  # owed, then sent
    lab.register(phone)  # a refresh: nothing is owed any more
    assert len(lab.invites_to(phone.port)) == 1


def test_invite_cancel_after_another_device_answered_says_completed_elsewhere() -> None:
    lab = WakeLab(plan=_flexisip())
    desk = Phone(user="bob", port=7002, instance="urn:uuid:desk")
    lab.register(desk)
    phone = _iphone()
    _suspended(lab, phone)
    lab.call("bob")
    (ringing,) = lab.invites_to(7002)
    lab.answer(ringing, 200, tag="desk")
    assert lab.to_caller()[-1] == 200
    lab.register(phone)
    (invite,) = lab.invites_to(phone.port)
    lab.answer(invite, 100)
    lab.answer(invite, 180)
    (cancel,) = lab.invites_to(phone.port, "CANCEL")
    assert isinstance(cancel.message, Request)
    assert cancel.message.headers.get("Reason") == ('SIP;cause=200;text="Call completed elsewhere"')


def test_invite_cancel_is_owed_only_within_its_window() -> None:
    lab = WakeLab(plan=_flexisip(cancel_replay_s=30.0))
    phone = _iphone()
    _suspended(lab, phone)
    call_id = lab.call("bob")
    lab.cancel(call_id)
    lab.advance(30.5)
    lab.register(phone)
    assert lab.invites_to(phone.port) == []


def test_invite_cancel_passes_on_the_callers_reason() -> None:
    lab = WakeLab(plan=_flexisip())
    phone = _iphone()
    _suspended(lab, phone)
    call_id = lab.call("bob")
    lab.cancel(call_id, reason='Q.850;cause=16;text="Terminated"')
    assert lab.to_caller()[-1] == 487
    lab.register(phone)
    (invite,) = lab.invites_to(phone.port)
    lab.answer(invite, 180)
    (cancel,) = lab.invites_to(phone.port, "CANCEL")
    assert isinstance(cancel.message, Request)
    assert cancel.message.headers.get("Reason") == 'Q.850;cause=16;text="Terminated"'


def test_branches_cancelled_because_one_answered_carry_an_rfc3326_reason() -> None:
    lab = WakeLab()
    desk = Phone(user="bob", port=7002, instance="urn:uuid:desk")
    tablet = Phone(user="bob", port=7003, instance="urn:uuid:tablet")
    lab.register(desk)
    lab.register(tablet)
    lab.call("bob")
    (to_desk,) = lab.invites_to(7002)
    (to_tablet,) = lab.invites_to(7003)
    lab.answer(to_tablet, 180, tag="tab")
    lab.answer(to_desk, 200, tag="desk")
    (cancel,) = lab.invites_to(7003, "CANCEL")
    assert isinstance(cancel.message, Request)
    assert cancel.message.headers.get("Reason") == ('SIP;cause=200;text="Call completed elsewhere"')


# -- two tokens: calls to the VoIP token, alerts to the remote one (issue 19) -----------------
def test_cancel_notice_goes_to_the_remote_token_never_to_the_voip_token() -> None:
    lab = WakeLab()
    phone = _iphone()
    _suspended(lab, phone)
    call_id = lab.call("bob")
    (push,) = lab.pushes("call")
    assert push.request.target.prid == TOKEN
    assert push.request.target.apns_topic == "org.lab.phone.voip"
    lab.cancel(call_id)
    (cancel,) = lab.pushes("cancel")
    assert cancel.request.target.prid == REMOTE
    assert cancel.request.target.apns_topic == "org.lab.phone"


def test_voip_only_device_gets_no_alert_push() -> None:
    """APNs refuses an alert to a VoIP token (DeviceTokenNotForTopic) and PushKit wants
    every VoIP push reported as a call: a device that gave only its VoIP token gets no
    cancel, missed-call or message push, and the wait is written down."""
    lab = WakeLab()
    phone = _iphone(remote=None)
    _suspended(lab, phone)
    call_id = lab.call("bob")
    lab.cancel(call_id)
    assert lab.pushes("cancel") == []
    assert any(
        e.step == "push-refused" and "no alert token" in e.detail
        for e in lab.outputs
        if isinstance(e, CallEvent)
    )
    lab.message("bob", "hi")
    assert lab.pushes("message") == []
    assert lab.node.held_messages("sip:bob@lab.test") == 1  # delivered on its next REGISTER
    (user,) = lab.node.snapshot(lab.now)
    push_view = user["devices"][0]["push"]  # type: ignore[index]
    assert push_view["alert"] == "no alert token"
    assert _push_cell(push_view).endswith("(no alert token)")  # the sipwake status column


def test_a_dead_remote_token_leaves_the_voip_token() -> None:
    lab = WakeLab()
    phone = _iphone()
    _suspended(lab, phone)
    call_id = lab.call("bob")
    lab.cancel(call_id)
    (cancel,) = lab.pushes("cancel")
    lab.push_result(cancel, "invalid_target", reason="BadDeviceToken", http_status=400)
    (binding,) = lab.node.registrar.lookup("sip:bob@lab.test", lab.now)
    assert binding.push is not None
    assert binding.push.prid == TOKEN
    assert binding.push.channel("alert") is None
    lab.call("bob")
    assert lab.pushes("call")[-1].request.target.prid == TOKEN  # the next call still wakes it


def test_a_dead_voip_token_leaves_the_remote_token() -> None:
    lab = WakeLab(plan=CallPlan(no_answer_s=30))
    phone = _iphone()
    _suspended(lab, phone)
    lab.call("bob")
    (push,) = lab.pushes("call")
    lab.push_result(push, "invalid_target", reason="BadDeviceToken", http_status=400)
    (binding,) = lab.node.registrar.lookup("sip:bob@lab.test", lab.now)
    assert binding.push is not None
    assert binding.push.prid == REMOTE


def test_configuration_refusal_keeps_the_token() -> None:
    lab = WakeLab(plan=CallPlan(no_answer_s=30))
    phone = _iphone()
    _suspended(lab, phone)
    lab.call("bob")
    (push,) = lab.pushes("call")
    lab.push_result(push, "error", reason="DeviceTokenNotForTopic", http_status=400)
    (binding,) = lab.node.registrar.lookup("sip:bob@lab.test", lab.now)
    assert binding.push is not None
    assert binding.push.tokens() == {"voip": TOKEN, "remote": REMOTE}


WALL = 1_800_000_000.0


def test_apns_410_older_than_the_last_register_keeps_the_token() -> None:
    """Apple: stop pushing a token only if it was not registered again after the 410's
    timestamp. Registered at lab time 100 (= WALL - 5 s in wall time), answered 410 with
    a timestamp 60 s before that: the device registered since, the token stays."""
    lab = WakeLab(plan=CallPlan(no_answer_s=30))
    _suspended(lab, _iphone())
    lab.advance(5)
    lab.call("bob")
    (push,) = lab.pushes("call")
    stamp = WALL - 65
    lab.push_result(
        push, "invalid_target", reason="Unregistered", http_status=410,
        unregistered_at=stamp, wall=WALL,
    )  # fmt: skip
    (binding,) = lab.node.registrar.lookup("sip:bob@lab.test", lab.now)
    assert binding.push is not None
    assert binding.push.channel("call") is not None


def test_apns_410_newer_than_the_last_register_drops_the_token() -> None:
    lab = WakeLab(plan=CallPlan(no_answer_s=30))
    _suspended(lab, _iphone())
    lab.advance(5)
    lab.call("bob")
    (push,) = lab.pushes("call")
    lab.push_result(
        push, "invalid_target", reason="Unregistered", http_status=410,
        unregistered_at=WALL - 1, wall=WALL,
    )  # fmt: skip
    (binding,) = lab.node.registrar.lookup("sip:bob@lab.test", lab.now)
    assert binding.push is not None
    assert binding.push.channel("call") is not None
    assert binding.push.prid == REMOTE  # the VoIP token went; the remote one stays


def test_repush_sends_the_call_push_again_until_the_device_registers() -> None:
    # Flexisip call-remote-push-interval: a push the service took may still be lost (an
    # app the system killed); the device gets it again, same call UUID, until it registers.
    lab = WakeLab(plan=CallPlan(no_answer_s=30, repush_interval_s=10))
    phone = _iphone()
    _suspended(lab, phone)
    lab.call("bob")
    (first,) = lab.pushes("call")
    lab.advance(0.05)
    lab.push_result(first, "delivered")
    lab.advance(9.9)
    assert len(lab.pushes("call")) == 1
    lab.advance(0.1)
    second = lab.pushes("call")[1]
    assert second.request.target.prid == TOKEN
    assert second.request.call_uuid == first.request.call_uuid
    assert second.request.call_id == first.request.call_id
    sent = [e.detail for e in lab.events() if e.step == "push-sent"]
    assert sent == ["call to apns (try 1)", "call to apns (try 2)"]
    lab.push_result(second, "delivered")
    lab.advance(2)
    assert lab.register(phone).status == 200  # woken by the second push
    (invite,) = lab.invites_to(phone.port)
    lab.advance(15)
    assert len(lab.pushes("call")) == 2  # registered: no more re-pushes
    lab.answer(invite, 200)
    assert lab.to_caller()[-1] == 200


def test_repush_stops_at_the_no_answer_time() -> None:
    lab = WakeLab(plan=CallPlan(no_answer_s=30, repush_interval_s=10))
    _suspended(lab, _iphone())
    lab.call("bob")
    for _ in range(5):
        lab.advance(0.05)
        pending = lab.pushes("call")[-1]
        lab.push_result(pending, "delivered")
        lab.advance(9.95)
    # pushes at 0, 10, 20; the one due at 30 would come with the no-answer time
    assert len(lab.pushes("call")) == 3
    assert lab.to_caller()[-1] == 480


def test_repush_waits_while_the_push_is_still_out() -> None:
    lab = WakeLab(plan=CallPlan(no_answer_s=30, repush_interval_s=5))
    _suspended(lab, _iphone())
    lab.call("bob")
    (first,) = lab.pushes("call")
    lab.advance(6)  # no answer from the push service yet: nothing to repeat
    assert len(lab.pushes("call")) == 1
    lab.push_result(first, "delivered")
    lab.advance(4.1)  # looked at again 5 s after the first look: now it is re-pushed
    assert len(lab.pushes("call")) == 2


def test_repush_off_in_rfc8599_on_in_flexisip() -> None:
    assert plan_for("rfc8599").repush_after is None
    assert plan_for("flexisip").repush_after == 5.0
    assert plan_for("sipwake").repush_after == 10.0
    assert plan_for("sipwake", repush_interval_s=0).repush_after is None
    lab = WakeLab(plan=plan_for("rfc8599"))
    _suspended(lab, _iphone())
    lab.call("bob")
    lab.advance(0.05)
    lab.push_result(lab.pushes("call")[0], "delivered")
    lab.advance(40)
    assert len(lab.pushes("call")) == 1
    lab = WakeLab(plan=plan_for("flexisip"))
    _suspended(lab, _iphone())
    lab.call("bob")
    for _ in range(3):
        lab.advance(0.05)
        lab.push_result(lab.pushes("call")[-1], "delivered")
        lab.advance(4.95)
    assert len(lab.pushes("call")) == 4  # at 0, 5, 10, 15

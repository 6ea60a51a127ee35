"""The replay's push service answers as APNs and FCM would (``PushSandbox`` with
``sipwake.push.apns_rules``): a token belongs to one topic or project."""

from __future__ import annotations

from sipwake.push.base import PushKind, PushRequest
from sipwake.scenario.virtual import FaultWindow, PushSandbox
from sipwake.sip.pushtarget import PushTarget

VOIP, REMOTE = "aa" * 32, "bb" * 32
WALL = 1_700_000_000.0


def _sandbox(*faults: FaultWindow) -> PushSandbox:
    sandbox = PushSandbox(
        latency_s=0.05, faults=list(faults), bundle_id="org.lab.phone", wall_at_zero=WALL
    )
    sandbox.issue_apns(VOIP, "org.lab.phone.voip")
    sandbox.issue_apns(REMOTE, "org.lab.phone")
    sandbox.issue_fcm("fcm:APA91b-1", "lab-phone")
    return sandbox


def _push(kind: PushKind, prid: str, param: str, provider: str = "apns") -> PushRequest:
    target = PushTarget(provider=provider, prid=prid, param=param)
    return PushRequest(kind=kind, target=target, call_id="c1", caller="Carol")


def test_calls_and_alerts_on_their_own_tokens_are_delivered() -> None:
    two = _push("call", f"{VOIP}:voip&{REMOTE}:remote", "T.org.lab.phone.voip&remote")
    assert _sandbox().answer(two, at=1.0, device=None).status == "delivered"
    cancel = _push("cancel", f"{VOIP}:voip&{REMOTE}:remote", "T.org.lab.phone.voip&remote")
    assert _sandbox().answer(cancel, at=1.0, device=None).status == "delivered"


def test_an_alert_built_for_a_voip_token_is_refused_as_apns_would() -> None:
    """What the old engine did: an alert on topic org.lab.phone to the VoIP token."""
    wrong = _push("call", VOIP, "T.org.lab.phone")  # says remote, holds the VoIP token
    outcome = _sandbox().answer(wrong, at=1.0, device=None)
    assert (outcome.status, outcome.http_status, outcome.reason) == (
        "error",  # a configuration error: the token is kept
        400,
        "DeviceTokenNotForTopic",
    )


def test_a_token_never_issued_is_bad_device_token() -> None:
    outcome = _sandbox().answer(_push("call", "cc" * 32, "T.org.lab.phone.voip"), at=1, device=None)
    assert (outcome.status, outcome.reason) == ("invalid_target", "BadDeviceToken")


def test_fcm_token_through_another_project_is_sender_id_mismatch() -> None:
    push = _push("call", "fcm:APA91b-1", "other-project", provider="fcm")
    outcome = _sandbox().answer(push, at=1.0, device=None)
    assert (outcome.status, outcome.reason) == ("error", "SENDER_ID_MISMATCH")


def test_a_410_carries_its_timestamp_in_wall_milliseconds() -> None:
    fault = FaultWindow(start=0, end=10, status=410, reason="Unregistered", unregistered_at=-60)
    outcome = _sandbox(fault).answer(_push("call", VOIP, "T.org.lab.phone.voip"), at=1, device=None)
    assert outcome.status == "invalid_target"
    assert outcome.unregistered_at == WALL - 60
    now = _sandbox(FaultWindow(start=0, end=10, status=410, reason="Unregistered"))
    answered = now.answer(_push("call", VOIP, "T.org.lab.phone.voip"), at=2.5, device=None)
    assert answered.unregistered_at == WALL + 2.5
    assert answered.reason == "Unregistered"

"""Scenario expectations about what a waking phone is told: Flexisip's INVITE + CANCEL
(``device_cancelled``) and sealed call details (``push: {encrypted: true}``). Each one
passes on its scenario and fails, saying why, when the behaviour is not there."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sipwake.push.base import PushRequest
from sipwake.push.seal import open_sealed
from sipwake.scenario import ScenarioFileError, parse_scenario, run_scenario
from sipwake.scenario.model import scenario_json_schema
from sipwake.scenario.pushview import clear_details, device_payload, open_push
from sipwake.scenario.suite import ScenarioResult
from sipwake.sip.pushtarget import push_target_from_uri
from sipwake.sip.uri import SipUri, parse_uri

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
GAVE_UP = SCENARIOS / "flexisip-invite-cancel-after-caller-gives-up.yaml"
DECLINED = SCENARIOS / "flexisip-invite-cancel-after-decline.yaml"
SEALED = SCENARIOS / "innovaphone-encrypted-call-push.yaml"


def _run(text: str) -> ScenarioResult:
    return run_scenario(parse_scenario(text))


def _with(text: str, old: str, new: str) -> str:
    assert old in text, f"{old!r} not in the scenario"
    return text.replace(old, new)


def _missed(result: ScenarioResult) -> dict[str, str]:
    return {c.kind: c.got for c in result.missed}


# -- device_cancelled -------------------------------------------------------------------------
def test_the_woken_phone_gets_the_invite_then_cancel_with_cause_200() -> None:
    result = _run(GAVE_UP.read_text())
    assert result.passed, [c.got for c in result.missed]
    assert result.replay is not None
    call = result.replay.calls["call1"]
    ((invited, device),) = call.device_invites
    ((cancelled, same, reason),) = call.device_cancels
    assert device == same == "bob.iphone"
    assert reason == 'SIP;cause=200;text="Call completed elsewhere"'
    assert call.final is not None
    assert call.final[0] < invited < cancelled  # it rang for a call that had ended


def test_a_decline_elsewhere_is_cause_603() -> None:
    result = _run(DECLINED.read_text())
    assert result.passed, [c.got for c in result.missed]


def test_without_invite_cancel_the_expectation_fails_saying_nothing_came() -> None:
    # The sipwake preset tells a waking phone with a "missed call" push instead.
    text = _with(GAVE_UP.read_text(), "preset: flexisip", "preset: flexisip\n  cancel_notice: push")
    missed = _missed(_run(text))
    assert set(missed) == {"no_push", "device_cancelled"}
    assert missed["device_cancelled"] == (
        "no INVITE of call1 reached bob.iphone; the caller got 487 at 3.004 s"
    )


def test_the_wrong_cause_fails_and_shows_the_reason_header() -> None:
    text = _with(GAVE_UP.read_text(), "cause: 200", "cause: 603")
    missed = _missed(_run(text))
    assert list(missed) == ["device_cancelled"]
    assert 'Reason: SIP;cause=200;text="Call completed elsewhere"' in missed["device_cancelled"]


def test_after_end_fails_when_the_phone_rang_while_the_call_was_alive() -> None:
    # Woken in 1 s, the phone gets the INVITE during the call; the caller's CANCEL then
    # reaches it as an ordinary CANCEL, before the caller's 487.
    text = _with(GAVE_UP.read_text(), "wake_delay_s: 5", "wake_delay_s: 1")
    missed = _missed(_run(text))
    assert "device_cancelled" in missed
    assert "INVITE at 2.056 s" in missed["device_cancelled"]
    assert "the caller's final 487 came at 3.004 s" in missed["device_cancelled"]
    assert "(Reason: none)" in missed["device_cancelled"]  # the caller's CANCEL had none
    relaxed = _with(text, "cause: 200, within: 5.5, after_end: true", "within: 5.5")
    assert "device_cancelled" not in _missed(_run(relaxed))


def test_a_cancel_too_late_fails() -> None:
    text = _with(GAVE_UP.read_text(), "within: 5.5", "within: 4")
    missed = _missed(_run(text))
    assert list(missed) == ["device_cancelled"]
    assert "CANCEL at 6.060 s" in missed["device_cancelled"]


def test_device_cancelled_is_validated_and_in_the_schema() -> None:
    with pytest.raises(ScenarioFileError, match=r"expect\.3\.device_cancelled\.to: no device"):
        parse_scenario(_with(GAVE_UP.read_text(), "{to: bob.iphone, cause", "{to: nobody, cause"))
    with pytest.raises(ScenarioFileError, match=r"device_cancelled\.cause"):
        parse_scenario(_with(GAVE_UP.read_text(), "cause: 200", "cause: 42"))
    with pytest.raises(ScenarioFileError, match=r"device_cancelled\.within"):
        parse_scenario(_with(GAVE_UP.read_text(), ", within: 5.5", ""))
    schema = scenario_json_schema()
    assert "device_cancelled" in schema["$defs"]["Expect"]["properties"]
    fields = schema["$defs"]["DeviceCancelledExpect"]["properties"]
    assert {"to", "within", "cause", "after_end", "call"} <= set(fields)
    assert "encrypted" in schema["$defs"]["PushExpect"]["properties"]


# -- encrypted call details -------------------------------------------------------------------
def test_the_phone_opens_the_sealed_call_details_with_its_register_key() -> None:
    result = _run(SEALED.read_text())
    assert result.passed, [c.got for c in result.missed]
    assert result.replay is not None
    (push,) = [p for p in result.replay.pushes if p.kind == "call"]
    assert push.payload is not None
    assert set(push.payload) == {"type", "enc", "aps"}
    assert push.clear == ()
    call = result.replay.calls["call1"]
    assert push.opened is not None
    assert push.opened["call_id"] == call.call_id
    assert push.opened["caller"] == "carol"
    assert push.opened["name"] == "Carol"


def test_encrypted_fails_when_the_caller_travels_in_clear() -> None:
    text = _with(SEALED.read_text(), "preset: innovaphone", "preset: sipwake")
    missed = _missed(_run(text))
    assert list(missed) == ["push"]
    assert missed["push"].endswith("no enc in the payload (name, call-id, uuid in clear)")


def test_encrypted_fails_for_a_phone_without_a_push_key() -> None:
    # Registered over TCP: no key, so the push carries no details at all, and no enc.
    text = _with(SEALED.read_text(), "transport: tls", "transport: tcp")
    missed = _missed(_run(text))
    assert list(missed) == ["push"]
    assert missed["push"].endswith("no enc in the payload (no call details in clear)")
    text = _with(text, "encrypted: true", "encrypted: false")
    assert _run(text).passed


def test_a_push_the_phone_cannot_open_does_not_wake_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # The phone kept a wrong key: it cannot open enc, so it does not wake or answer.
    monkeypatch.setattr("sipwake.scenario.world.push_key_of", lambda response: bytes(32))
    missed = _missed(_run(SEALED.read_text()))
    assert set(missed) == {"push", "answered", "final_status"}
    assert missed["push"].endswith(
        "enc, but bob.iphone could not open it: enc does not open with this key"
    )
    assert missed["answered"].startswith("not answered")


# -- pushview, the pure part -----------------------------------------------------------------
def _request(*, private: bool, key: bytes | None, provider: str = "apns") -> PushRequest:
    if provider == "apns":
        params = ";pn-provider=apns;pn-param=TEAM123456.org.lab.phone.voip;pn-prid=" + "ab" * 32
    else:
        params = ";pn-provider=fcm;pn-param=lab-phone;pn-prid=tok_abcdefghij:APA91bxyz"
    uri = parse_uri(f"sip:bob@127.0.0.1:7001{params}")
    assert isinstance(uri, SipUri)
    target = push_target_from_uri(uri)
    assert target is not None
    return PushRequest(
        kind="call",
        target=target,
        call_id="cid-1@lab.test",
        caller="Alice",
        caller_number="+15551230001",
        call_uuid="00000000-0000-4000-8000-000000000001",
        private=private,
        seal_key=key,
    )


@pytest.mark.parametrize("provider", ["apns", "fcm"])
def test_device_payload_is_what_the_provider_carries(provider: str) -> None:
    key = os.urandom(32)
    sealed = _request(private=True, key=key, provider=provider)
    payload = device_payload(sealed, bundle="org.lab.phone", project="lab-phone")
    assert payload is not None
    assert payload["type"] == "call"
    assert clear_details(payload, sealed) == ()
    assert json.loads(open_sealed(key, payload["enc"]))["caller"] == "+15551230001"
    assert open_push(payload, key)["call_id"] == "cid-1@lab.test"
    with pytest.raises(ValueError, match="does not open with this key"):
        open_push(payload, bytes(32))
    with pytest.raises(ValueError, match="no push key"):
        open_push(payload, None)
    clear = _request(private=False, key=None, provider=provider)
    payload = device_payload(clear, bundle="org.lab.phone", project="lab-phone")
    assert payload is not None
    assert clear_details(payload, clear) == ("name", "call-id", "uuid")
    with pytest.raises(ValueError, match="has no enc"):
        open_push(payload, key)

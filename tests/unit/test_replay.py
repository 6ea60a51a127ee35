"""Scenario replay on the virtual clock: the library passes, a broken timing fails with
a reason, runs repeat exactly, and the simulated phones speak real SIP."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sipwake.ids import SeededIds
from sipwake.scenario import (
    ScenarioResult,
    junit_xml,
    ladder,
    load_scenario,
    parse_scenario,
    run_file,
    run_scenario,
    verdict_text,
)
from sipwake.scenario.agents import AnswerPlan, DeviceAgent
from sipwake.sip.message import Request
from sipwake.sip.parser import parse_message
from sipwake.sip.pushtarget import push_target_from_uri
from sipwake.sip.uri import SipUri

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
FILES = sorted(SCENARIOS.glob("*.yaml"))
IOS = SCENARIOS / "ios-suspended-wakes-and-answers.yaml"


def test_the_library_has_the_scenarios_the_issue_names() -> None:
    names = {p.name for p in FILES}
    for required in (
        "ios-suspended-wakes-and-answers.yaml",
        "foreground-rings-at-once.yaml",
        "no-answer-diverts-to-voicemail.yaml",
        "twinning-after-mobile-dial-delay.yaml",
        "caller-cancels-during-wake.yaml",
        "apns-410-drops-token.yaml",
        "busy-diverts-to-voicemail.yaml",
        "dnd-skips-push.yaml",
        "avaya-last-ios-device-wins.yaml",
        "flexisip-110-push-sent.yaml",
        "message-stored-until-wake.yaml",
        "server-restart-keeps-bindings.yaml",
        "network-loss-call-waits-for-reconnect.yaml",
        "innovaphone-dnd-stops-push.yaml",
        # issue 19: tokens by service, Linphone's two-token form, APNs 410 timestamps
        "ios-voip-token-only-gets-no-alert.yaml",
        "linphone-two-tokens-missed-call-then-call.yaml",
        "linphone-two-tokens-remote-first.yaml",
        "apns-410-older-than-register-keeps-token.yaml",
        "avaya-newest-ios-in-foreground-rings-alone.yaml",
        "dnd-feature-code-then-call.yaml",
        "logout-removes-push-target.yaml",
        "rotate-token-pushes-the-new-token.yaml",
    ):
        assert required in names


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_every_scenario_passes(path: Path) -> None:
    result = run_file(path)
    assert result.error is None, str(result.error)
    assert result.passed, verdict_text(result)
    assert result.wall_s < 1.0


def _with(text: str, old: str, new: str) -> str:
    assert old in text, f"{old!r} not in the scenario"
    return text.replace(old, new)


def test_a_timing_that_cannot_hold_fails_naming_the_expectation_and_why(tmp_path: Path) -> None:
    # The phone now takes 20 s to wake: it cannot be answered at 5.56 s any more.
    slow = tmp_path / "slow-wake.yaml"
    slow.write_text(_with(IOS.read_text(), "wake_delay_s: 2.5", "wake_delay_s: 20"))
    result = run_file(slow)
    assert not result.passed
    (missed,) = result.missed
    assert missed.kind == "answered"
    message = str(missed.error())
    assert message == (
        "expect[2] answered: expected call1 answered by bob.iphone at 5.56 ± 0.1 s, "
        "got answered by bob.iphone at 23.056 s, 17.496 s late"
    )
    text = verdict_text(result)
    assert text.startswith(f"FAIL {slow}")
    assert "MISSED  answered: expected call1 answered by bob.iphone at 5.56" in text


def test_an_expectation_on_something_that_never_happened_says_what_did(tmp_path: Path) -> None:
    text = _with(IOS.read_text(), "wake_delay_s: 2.5", "wake_delay_s: never")
    text = _with(text, "duration_s: 30", "duration_s: 40")
    result = run_scenario(parse_scenario(text))
    by_kind = {c.kind: c for c in result.missed}
    assert set(by_kind) == {"answered", "final_status", "no_push"}
    assert by_kind["answered"].got == "not answered: the caller got 480 at 31.004 s"
    assert by_kind["final_status"].got == "480 at 31.004 s"
    # The phone never woke: when the no-answer time ran out it got a "missed call" push.
    assert by_kind["no_push"].got == "pushes sent: cancel push to bob.iphone at 31.002 s"


def test_two_runs_give_identical_ladders() -> None:
    scenario = load_scenario(SCENARIOS / "no-answer-diverts-to-voicemail.yaml")
    first = run_scenario(scenario)
    second = run_scenario(scenario)
    assert first.replay is not None
    assert second.replay is not None
    assert ladder(first.replay) == ladder(second.replay)
    assert first.replay.rows == second.replay.rows
    assert len(first.replay.rows) > 20


def test_the_ladder_shows_messages_pushes_and_call_steps() -> None:
    result = run_file(IOS)
    assert result.replay is not None
    drawing = ladder(result.replay).splitlines()
    assert drawing[0].split() == ["time", "carol", "sipwake", "bob.iphone", "push"]
    assert any("-INVITE-" in line and line.lstrip().startswith("1.000 ") for line in drawing)
    assert any("call push (apns) for bob.iphone" in line for line in drawing)
    assert any("sipwake: forked bob.iphone" in line for line in drawing)
    assert any("bob.iphone: woken by the push" in line for line in drawing)


def test_a_60_s_scenario_runs_in_well_under_a_second() -> None:
    scenario = parse_scenario(
        _with(IOS.read_text(), "duration_s: 30", "duration_s: 60").replace(
            "  - at: 1\n    call: {from: carol, to: bob}",
            "  - at: 1\n    call: {from: carol, to: bob}\n"
            "  - at: 40\n    hangup: call1\n"
            "  - at: 42\n    suspend: bob.iphone\n"
            "  - at: 45\n    call: {from: carol, to: bob, id: again}",
        )
    )
    started = time.perf_counter()
    result = run_scenario(scenario)
    elapsed = time.perf_counter() - started
    assert result.passed, verdict_text(result)
    assert result.replay is not None
    # Suspended again after the first call, the phone is pushed and woken a second time.
    assert [p.at for p in result.replay.pushes if p.kind == "call"] == [1.002, 45.002]
    assert result.replay.calls["again"].answers == [(49.556, "bob.iphone")]
    assert elapsed < 0.5


def test_transient_push_failure_is_retried_and_the_phone_still_answers() -> None:
    text = _with(
        IOS.read_text(),
        "timeline:\n",
        "timeline:\n  - push_fails: {provider: apns, status: 503, reason: ServiceUnavailable,"
        " from: 0, to: 1.5}\n",
    )
    text = _with(text, "at: 5.56, tolerance: 0.1", "at: 6.61, tolerance: 0.1")
    result = run_scenario(parse_scenario(text))
    assert result.passed, verdict_text(result)
    assert result.replay is not None
    pushes = [(p.at, p.outcome.status if p.outcome else None) for p in result.replay.pushes]
    # First push refused 503 (retry), the retry 1 s after the answer goes through.
    assert pushes == [(1.002, "retry"), (2.052, "delivered")]


def test_callee_hangs_up_with_bye_through_the_proxy() -> None:
    text = _with(
        IOS.read_text(),
        "    call: {from: carol, to: bob}\n",
        "    call: {from: carol, to: bob}\n  - at: 9\n    hangup: {by: callee}\n",
    )
    result = run_scenario(parse_scenario(text))
    assert result.passed, verdict_text(result)
    assert result.replay is not None
    rows = [(r.src, r.dst, r.label) for r in result.replay.rows if r.at >= 9]
    assert rows[:4] == [
        ("bob.iphone", "sipwake", "BYE"),
        ("sipwake", "carol", "BYE"),
        ("carol", "sipwake", "200 (BYE)"),
        ("sipwake", "bob.iphone", "200 (BYE)"),
    ]


def test_device_agent_registers_with_rfc8599_parameters_and_instance() -> None:
    device = DeviceAgent(
        name="bob.iphone",
        user="bob",
        domain="lab.test",
        transport="tls",
        port=7001,
        ids=SeededIds(1),
        push_params=";pn-provider=apns;pn-param=TEAM123456.org.lab.phone.voip;pn-prid=ab12cd34",
        instance="urn:uuid:00000000-0000-4000-8000-000000000001",
        platform="ios",
        answer=AnswerPlan(ring=True, status=200, after=1.0),
    )
    device.flow = 3
    (transmit,) = device.register(100.0)
    assert transmit.peer.port == 5061
    assert transmit.peer.flow == 3
    message = parse_message(transmit.message.to_bytes(), stream=True)
    assert isinstance(message, Request)
    assert message.method == "REGISTER"
    assert message.top_via.transport == "TLS"
    (contact,) = message.contacts or []
    assert contact.param("+sip.instance") == '"<urn:uuid:00000000-0000-4000-8000-000000000001>"'
    assert isinstance(contact.uri, SipUri)
    target = push_target_from_uri(contact.uri)
    assert target is not None
    assert (target.provider, target.prid, target.topic) == (
        "apns",
        "ab12cd34",
        "org.lab.phone.voip",
    )


def test_junit_has_a_failure_with_the_reason(tmp_path: Path) -> None:
    slow = tmp_path / "slow.yaml"
    slow.write_text(_with(IOS.read_text(), "wake_delay_s: 2.5", "wake_delay_s: 20"))
    results: list[ScenarioResult] = [run_file(IOS), run_file(slow)]
    xml = junit_xml(results)
    assert 'tests="2" failures="1" errors="0"' in xml
    assert "expect[2] answered: expected call1 answered by bob.iphone at 5.56 ± 0.1 s" in xml


MESSAGE = SCENARIOS / "message-stored-until-wake.yaml"


def test_a_message_is_held_then_delivered_after_the_wake() -> None:
    result = run_file(MESSAGE)
    assert result.passed, verdict_text(result)
    assert result.replay is not None
    note = result.replay.calls["note"]
    assert note.final == (1.004, 202)
    assert note.delivered == [(3.056, "bob.iphone")]
    assert result.replay.wakes == [(3.052, "bob.iphone")]
    assert any(r.label == "keeps a message for sip:bob@lab.test" for r in result.replay.rows)


def test_a_message_that_came_before_any_wake_misses_after_wake() -> None:
    # The phone is in the foreground: the message is delivered at once, no wake.
    text = _with(MESSAGE.read_text(), "state: suspended", "state: foreground")
    result = run_scenario(parse_scenario(text))
    by_kind = {c.kind: c for c in result.missed}
    assert set(by_kind) == {"final_status", "push", "message_delivered"}
    assert str(by_kind["message_delivered"].error()) == (
        "expect[2] message_delivered: expected message note delivered to bob.iphone after a "
        "push woke it at 3.06 ± 0.2 s, got delivered at 1.004 s, but bob.iphone was not "
        "woken by a push before"
    )
    assert by_kind["final_status"].got == "200 at 1.008 s"


def test_the_restart_reads_bindings_back_and_drops_connections() -> None:
    result = run_file(SCENARIOS / "server-restart-keeps-bindings.yaml")
    assert result.passed, verdict_text(result)
    assert result.replay is not None
    notes = [(r.at, r.src, r.label) for r in result.replay.rows if not r.dst]
    assert (1.0, "sipwake", "restarts (down for 0.5 s)") in notes
    assert (1.5, "sipwake", "started: 2 bindings and 0 held messages from the store") in notes
    assert (1.5, "alice.pixel", "server back: new connection, REGISTER") in notes


def test_without_the_store_the_restarted_server_would_not_know_bob(tmp_path: Path) -> None:
    # The same timeline, but Bob's binding expires before the restart reads it back:
    # nobody to push, the call fails. The store is what the scenario shows working.
    text = (SCENARIOS / "server-restart-keeps-bindings.yaml").read_text()
    scenario = parse_scenario(text)
    from sipwake.scenario.runner import _Runner

    runner = _Runner(scenario, tmp_path)
    runner.store = None  # a server without a store
    record = runner.run()
    assert record.calls["call1"].final is not None
    assert record.calls["call1"].final[1] == 480
    assert not [p for p in record.pushes if p.device == "bob.iphone"]


def test_network_loss_loses_the_connection_and_the_push_waits() -> None:
    result = run_file(SCENARIOS / "network-loss-call-waits-for-reconnect.yaml")
    assert result.passed, verdict_text(result)
    assert result.replay is not None
    notes = [(r.at, r.src, r.label) for r in result.replay.rows if not r.dst]
    assert (1.0, "alice.pixel", "loses its network for 4 s") in notes
    assert (2.052, "alice.pixel", "call push waits: no network") in notes
    assert (5.0, "alice.pixel", "network back: new connection, REGISTER") in notes


def test_the_html_page_has_the_verdict_and_an_svg_ladder(tmp_path: Path) -> None:
    from sipwake.scenario.htmlreport import write_html

    slow = tmp_path / "slow.yaml"
    slow.write_text(_with(IOS.read_text(), "wake_delay_s: 2.5", "wake_delay_s: 20"))
    pages = write_html([run_file(IOS), run_file(slow)], tmp_path / "html")
    good, bad = (p.read_text() for p in pages)
    assert '<span class="pass">PASS</span>' in good
    assert "<script" not in good
    assert "<svg" in good
    assert ">bob.iphone</text>" in good
    assert "call push (apns) for bob.iphone" in good
    assert '<span class="fail">FAIL</span>' in bad
    assert "17.496 s late" in bad
    index = (tmp_path / "html" / "index.html").read_text()
    assert "1/2 scenarios passed" in index
    assert 'href="slow.html"' in index

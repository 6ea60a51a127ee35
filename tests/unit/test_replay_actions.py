"""Timeline actions ``suspend`` and ``resume``, and the ``forwarded`` expectation, on the
virtual clock: what the phones and the server do, and that a changed timing or a
missing action fails naming the expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipwake.scenario import ScenarioFileError, parse_scenario, run_scenario, verdict_text
from sipwake.scenario.live import horizon
from sipwake.scenario.model import scenario_json_schema
from sipwake.scenario.record import Replay

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
SUSPEND = SCENARIOS / "suspend-then-call-wakes-by-push.yaml"
LATE = SCENARIOS / "late-registering-device-joins-ringing-call.yaml"
FORWARD = SCENARIOS / "forward-on-no-answer-to-colleague.yaml"


def _with(text: str, *edits: tuple[str, str]) -> str:
    for old, new in edits:
        assert old in text, f"{old!r} not in the scenario"
        text = text.replace(old, new)
    return text


def _run(text: str) -> tuple[bool, Replay, str]:
    result = run_scenario(parse_scenario(text))
    assert result.replay is not None, verdict_text(result)
    return result.passed, result.replay, verdict_text(result)


def _notes(replay: Replay, where: str) -> list[tuple[float, str]]:
    return [(r.at, r.label) for r in replay.rows if r.src == where and not r.dst]


def _missed(verdict: str) -> list[str]:
    return [line.strip() for line in verdict.splitlines() if line.strip().startswith("MISSED")]


# -- suspend ---------------------------------------------------------------------------
def test_a_suspended_phone_is_pushed_and_not_rung_on_its_closed_connection() -> None:
    passed, replay, verdict = _run(SUSPEND.read_text())
    assert passed, verdict
    assert (5.0, "suspended (connection closed)") in _notes(replay, "bob.iphone")
    # The INVITE reached the phone only after the push woke it and it registered again.
    assert [p.at for p in replay.pushes if p.kind == "call"] == [10.002]
    assert replay.wakes == [(12.052, "bob.iphone")]
    assert replay.calls["call1"].device_invites == [(12.056, "bob.iphone")]


def test_without_the_suspend_the_phone_rings_at_once_and_the_push_expectation_fails() -> None:
    text = _with(SUSPEND.read_text(), ("  - at: 5\n    suspend: bob.iphone\n", ""))
    passed, replay, verdict = _run(text)
    assert not passed
    missed = _missed(verdict)
    assert missed[0].startswith("MISSED  push: expected a call push to bob.iphone within 0.1 s")
    assert "no call push to bob.iphone; no push was sent" in missed[0]
    # Foreground, it rang at once and was answered a second later, not at 13.06 s.
    assert any(m.startswith("MISSED  answered:") and "2.056 s early" in m for m in missed)
    assert replay.calls["call1"].device_invites == [(10.004, "bob.iphone")]


def test_a_suspended_udp_phone_stays_reachable_until_udp_foreground_s() -> None:
    text = _with(SUSPEND.read_text(), ("transport: tls", "transport: udp"))
    passed, replay, _ = _run(text)
    assert not passed  # the server still counts it as foreground: no push
    (note,) = [n for at, n in _notes(replay, "bob.iphone") if at == 5.0]
    assert note.startswith("suspended (UDP: the server counts it as foreground")
    assert not replay.pushes


def test_suspending_a_device_twice_or_an_offline_one_changes_nothing() -> None:
    text = _with(
        LATE.read_text(),
        ("  - at: 3\n    resume: bob.desk\n", "  - at: 2\n    suspend: bob.desk\n"),
    )
    text = _with(text, ("timeline:\n", "timeline:\n  - at: 0.5\n    suspend: bob.iphone\n"))
    _, replay, _ = _run(text)
    assert (0.5, "suspend: already suspended, nothing changes") in _notes(replay, "bob.iphone")
    assert (2.0, "suspend: already offline, nothing changes") in _notes(replay, "bob.desk")
    # Only the iPhone's wake brings the call to a device.
    assert replay.calls["call1"].device_invites == [(9.056, "bob.iphone")]


# -- resume ----------------------------------------------------------------------------
def test_a_device_that_comes_online_during_the_call_gets_a_branch_and_answers() -> None:
    passed, replay, verdict = _run(LATE.read_text())
    assert passed, verdict
    assert (3.0, "comes online: new connection, REGISTER") in _notes(replay, "bob.desk")
    call = replay.calls["call1"]
    # Late forking: the desk phone was never pushed, it registered while the call rang.
    assert call.device_invites == [(3.004, "bob.desk")]
    assert (3.002, "forked bob.desk") in _notes(replay, "sipwake")
    assert [p.device for p in replay.pushes] == ["bob.iphone", "bob.iphone"]
    assert call.answers == [(4.504, "bob.desk")]


def test_without_the_resume_the_desk_phone_never_rings_and_the_answer_is_missed() -> None:
    text = _with(LATE.read_text(), ("  - at: 3\n    resume: bob.desk\n", ""))
    passed, replay, verdict = _run(text)
    assert not passed
    answered = next(m for m in _missed(verdict) if m.startswith("MISSED  answered:"))
    assert "expected call1 answered by bob.desk at 4.51 ± 0.1 s" in answered
    assert "not answered" in answered
    assert all(who != "bob.desk" for _, who in replay.calls["call1"].device_invites)


def test_a_resume_later_than_the_expectation_allows_fails_naming_it() -> None:
    text = _with(
        LATE.read_text(), ("  - at: 3\n    resume: bob.desk", "  - at: 3.5\n    resume: bob.desk")
    )
    passed, _, verdict = _run(text)
    assert not passed
    (missed,) = [m for m in _missed(verdict) if m.startswith("MISSED  answered:")]
    assert "answered by bob.desk at 5.004 s, 0.494 s late" in missed


def test_resume_brings_a_suspended_phone_back_without_a_push() -> None:
    text = _with(
        SUSPEND.read_text(),
        ("  - at: 10\n    call:", "  - at: 7\n    resume: bob.iphone\n  - at: 10\n    call:"),
    )
    _, replay, _ = _run(text)
    assert (7.0, "back in the foreground: new connection, REGISTER") in _notes(replay, "bob.iphone")
    assert not replay.pushes  # foreground again: the call rings it directly
    assert replay.calls["call1"].device_invites == [(10.004, "bob.iphone")]
    assert replay.calls["call1"].answers == [(11.004, "bob.iphone")]


def test_resume_without_network_registers_when_the_network_is_back() -> None:
    text = _with(
        LATE.read_text(),
        (
            "  - at: 3\n    resume: bob.desk\n",
            "  - at: 2\n    network_loss: {device: bob.desk, for_s: 2}\n"
            "  - at: 3\n    resume: bob.desk\n",
        ),
    )
    _, replay, _ = _run(text)
    notes = _notes(replay, "bob.desk")
    assert (3.0, "no network: it registers when the network is back") in notes
    assert (4.0, "network back: new connection, REGISTER") in notes
    assert replay.calls["call1"].device_invites == [(4.004, "bob.desk")]


def test_resume_of_an_unknown_device_names_file_line_and_field() -> None:
    text = _with(LATE.read_text(), ("resume: bob.desk", "resume: bob.deskphone"))
    with pytest.raises(ScenarioFileError) as info:
        parse_scenario(text, "lab/late.yaml")
    error = info.value
    assert (error.path, error.key) == ("lab/late.yaml", "timeline.1.resume")
    assert error.line == text.splitlines().index("    resume: bob.deskphone") + 1
    assert error.message == "no device 'bob.deskphone' (devices: bob.desk, bob.iphone)"


# -- forwarded ---------------------------------------------------------------------------
def test_the_call_is_forwarded_to_the_colleague_with_diversion_and_history_info() -> None:
    passed, replay, verdict = _run(FORWARD.read_text())
    assert passed, verdict
    ((at, device, diversion, history),) = replay.calls["call1"].forwards
    assert (at, device) == (13.004, "alice.desk")
    assert diversion == ("<sip:bob@lab.test>;reason=no-answer;counter=1",)
    assert history[0] == "<sip:bob@lab.test>;index=1"
    assert history[1].startswith("<sip:alice@lab.test?Reason=SIP%3Bcause%3D408>;index=1.1")


def test_without_the_forward_the_expectation_fails_naming_it() -> None:
    text = _with(FORWARD.read_text(), ("    forward_no_answer: alice\n", ""))
    passed, _, verdict = _run(text)
    assert not passed
    missed = _missed(verdict)
    assert missed[0] == (
        "MISSED  forwarded: expected call1 forwarded to alice.desk at 13 ± 0.1 s, Diversion "
        "reason=no-answer and History-Info naming bob, got no INVITE of call1 reached "
        "alice.desk; the caller got 480 at 13.004 s"
    )


def test_a_forward_at_another_time_or_from_another_user_fails() -> None:
    late = _with(FORWARD.read_text(), ("no_answer_s: 12", "no_answer_s: 14"))
    passed, _, verdict = _run(late)
    assert not passed
    (missed,) = [m for m in _missed(verdict) if m.startswith("MISSED  forwarded:")]
    assert "INVITE at 15.004 s" in missed
    assert missed.endswith("2.004 s late")

    other = _with(FORWARD.read_text(), ("diversion: bob", "diversion: alice"))
    passed, _, verdict = _run(other)
    assert not passed
    (missed,) = [m for m in _missed(verdict) if m.startswith("MISSED  forwarded:")]
    assert "naming alice" in missed
    assert "Diversion: <sip:bob@lab.test>;reason=no-answer;counter=1" in missed

    reason = _with(FORWARD.read_text(), ("reason: no-answer", "reason: user-busy"))
    assert not _run(reason)[0]


def test_a_plain_invite_is_not_a_forward() -> None:
    text = _with(
        FORWARD.read_text(),
        ("forwarded: {to: alice.desk, at: 13.0,", "forwarded: {to: bob.iphone, at: 3.05,"),
    )
    passed, _, verdict = _run(text)
    assert not passed
    (missed,) = [m for m in _missed(verdict) if m.startswith("MISSED  forwarded:")]
    assert missed.endswith("got INVITE at 3.056 s, without Diversion or History-Info")


def test_forward_targets_must_be_other_users_of_the_scenario() -> None:
    text = FORWARD.read_text()
    for bad, message in (
        ("forward_no_answer: dave", "'dave': no such user (users: bob, alice)"),
        ("forward_no_answer: bob", "'bob': the user itself (users: bob, alice)"),
    ):
        with pytest.raises(ScenarioFileError) as info:
            parse_scenario(_with(text, ("forward_no_answer: alice", bad)), "lab/fwd.yaml")
        assert info.value.key == "users.bob.forward_no_answer"
        assert info.value.line == 14
        assert info.value.message == message
    with pytest.raises(ScenarioFileError) as info:
        parse_scenario(_with(text, ("diversion: bob", "diversion: dave")), "lab/fwd.yaml")
    assert info.value.key == "expect.2.forwarded.diversion"
    assert info.value.message == "no user 'dave' (users: bob, alice)"


def test_forward_busy_diverts_when_every_device_is_busy() -> None:
    text = _with(
        FORWARD.read_text(),
        ("forward_no_answer: alice", "forward_busy: alice"),
        ("        wake_delay_s: 2\n", "        wake_delay_s: 2\n        busy: true\n"),
        (
            "at: 13.0, tolerance: 0.1, diversion: bob, reason: no-answer",
            "at: 3.06, tolerance: 0.1, diversion: bob, reason: user-busy",
        ),
        ("answered: {by: alice.desk, at: 15.0", "answered: {by: alice.desk, at: 5.06"),
    )
    passed, _, verdict = _run(text)
    assert passed, verdict


# -- schema and the real-time replay's horizon --------------------------------------------
def test_the_json_schema_has_the_actions_and_the_expectation() -> None:
    schema = scenario_json_schema()
    step = schema["$defs"]["Step"]["properties"]
    assert "closes its" in step["suspend"]["description"]
    assert "comes online" in step["resume"]["description"]
    forwarded = schema["$defs"]["ForwardedExpect"]["properties"]
    assert {"to", "at", "tolerance", "diversion", "reason"} <= set(forwarded)
    user = schema["$defs"]["User"]["properties"]
    assert {"forward_no_answer", "forward_busy"} <= set(user)


def test_the_real_time_horizon_counts_device_cancelled_within() -> None:
    text = (SCENARIOS / "flexisip-invite-cancel-after-caller-gives-up.yaml").read_text()
    scenario = parse_scenario(text)
    within = max(e.device_cancelled.within for e in scenario.expect if e.device_cancelled)
    start = scenario.calls()[0][1].at
    assert horizon(scenario) >= start + within
    longer = parse_scenario(_with(text, (f"within: {within:g}", "within: 25")))
    assert horizon(longer) == start + 25


# -- dnd, logout, rotate_token (issue 19 finding 8) -------------------------------------
DND = SCENARIOS / "dnd-feature-code-then-call.yaml"
LOGOUT = SCENARIOS / "logout-removes-push-target.yaml"
ROTATE = SCENARIOS / "rotate-token-pushes-the-new-token.yaml"


def test_dnd_is_dialled_as_a_feature_code_and_answered_by_the_server() -> None:
    passed, replay, verdict = _run(DND.read_text())
    assert passed, verdict
    labels = [r.label for r in replay.rows if r.src == "sipwake" and r.dst == "bob.iphone"]
    assert "603 DND On" in labels
    assert "603 DND Off" in labels


def test_without_the_dnd_step_the_sleeping_phone_is_pushed_and_the_expectation_fails() -> None:
    text = _with(DND.read_text(), ("  - at: 1\n    dnd: bob on\n", ""))
    passed, _, verdict = _run(text)
    assert not passed
    assert any("no_push" in line for line in _missed(verdict)), verdict


def test_without_the_logout_the_iphone_is_pushed_too() -> None:
    passed, _, verdict = _run(LOGOUT.read_text())
    assert passed, verdict
    text = _with(LOGOUT.read_text(), ("  - at: 1\n    logout: bob.iphone\n", ""))
    passed, replay, _ = _run(text)
    assert not passed
    assert "bob.iphone" in {p.device for p in replay.pushes}


def test_a_push_to_the_old_token_reaches_nobody() -> None:
    """The control: the app's token changes but it does not register the new one; the
    server still pushes the old token, which no device holds any more."""
    passed, replay, verdict = _run(ROTATE.read_text())
    assert passed, verdict
    (push,) = [p for p in replay.pushes if p.kind == "call"]
    assert push.device == "bob.iphone"
    from sipwake.scenario.world import World

    def rotate_without_register(self: World, device: object, params: str, tokens: dict) -> None:
        for token in [t for t, d in self.by_token.items() if d is device]:
            del self.by_token[token]
        for token in tokens:
            self.by_token[token] = device  # type: ignore[assignment]

    original = World._rotate_token
    try:
        World._rotate_token = rotate_without_register  # type: ignore[method-assign,assignment]
        passed, replay, _ = _run(ROTATE.read_text())
    finally:
        World._rotate_token = original  # type: ignore[method-assign]
    assert not passed
    devices = [p.device for p in replay.pushes if p.kind == "call"]
    assert devices  # pushed (and re-pushed: calls.repush_interval_s), always the old token
    assert set(devices) == {None}


def test_new_actions_name_their_errors_and_are_in_the_schema() -> None:
    base = LOGOUT.read_text()
    for edit, where in (
        (("logout: bob.iphone", "logout: bob.nokia"), "timeline.0.logout"),
        (("logout: bob.iphone", "dnd: dave on"), "timeline.0.dnd"),
        (("logout: bob.iphone", "dnd: bob maybe"), "timeline.0.dnd"),
        (("logout: bob.iphone", "rotate_token: bob.nokia"), "timeline.0.rotate_token"),
    ):
        with pytest.raises(ScenarioFileError) as err:
            parse_scenario(_with(base, edit))
        assert where in str(err.value)
    step = scenario_json_schema()["$defs"]["Step"]["properties"]
    assert "*78" in step["dnd"]["description"]
    assert "Expires: 0" in step["logout"]["description"]
    assert "pn-prid" in step["rotate_token"]["description"]


def test_the_caller_hangs_up_a_call_diverted_to_voicemail_through_the_recorded_route() -> None:
    """The simulated voicemail (a UAS) copies the Record-Route into its 200 (RFC 3261
    §12.1.1), so the caller's BYE follows sipwake's route set with its dialog token and
    reaches the voicemail: before, the BYE went without Route and the edge policy answered
    404 Not Here (a made-up To-tag to no registered device)."""
    text = (SCENARIOS / "dnd-feature-code-then-call.yaml").read_text()
    text = _with(
        text,
        (
            "  - at: 8\n    dnd: bob off",
            "  - at: 6\n    hangup: during-dnd\n  - at: 8\n    dnd: bob off",
        ),
    )
    passed, replay, verdict = _run(text)
    assert passed, verdict
    byes = [(r.at, r.src, r.dst, r.label) for r in replay.rows if "BYE" in r.label]
    assert [label for *_, label in byes] == ["BYE", "BYE", "200 (BYE)", "200 (BYE)"], byes


def test_a_scenario_of_days_is_refused_in_real_time_not_run_for_days() -> None:
    from sipwake.scenario.suite import MAX_REAL_S, run_file

    path = SCENARIOS / "asleep-three-days-still-reachable.yaml"
    result = run_file(path, clock="real")
    assert result.error is not None
    assert "of real time" in str(result.error)
    assert str(int(MAX_REAL_S)) in str(result.error).replace(",", "")
    assert not result.passed

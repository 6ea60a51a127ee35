"""Scenario files: what is accepted, and errors that name the file, the line and the field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sipwake.errors import ScenarioError
from sipwake.scenario import ScenarioFileError, load_scenario, parse_scenario, run_paths
from sipwake.scenario.model import scenario_json_schema

GOOD = textwrap.dedent(
    """\
    name: minimal
    users:
      bob:
        devices:
          - name: iphone
            platform: ios
            transport: tls
            state: suspended
            wake_delay_s: 2
            answer_after_s: 1
    timeline:
      - at: 1
        call: {from: carol, to: bob}
      - at: 2
        suspend: bob.iphone
    expect:
      - push: {to: bob.iphone, within: 0.1}
      - final_status: 200
    """
)


def _error(text: str, path: str = "lab/bad.yaml") -> ScenarioFileError:
    with pytest.raises(ScenarioFileError) as info:
        parse_scenario(text, path)
    return info.value


def test_a_good_file_is_read_with_its_defaults() -> None:
    scenario = parse_scenario(GOOD)
    device = scenario.users["bob"].devices[0]
    assert device.provider == "apns"  # the platform's provider
    assert device.wake_delay_s == 2.0
    assert scenario.pbx.preset == "sipwake"
    assert [cid for cid, _ in scenario.calls()] == ["call1"]
    assert scenario.timeline[0].call is not None
    assert scenario.timeline[0].call.from_ == "carol"
    assert scenario.expect[1].final_status is not None
    assert scenario.expect[1].final_status.status == 200  # the integer shorthand
    assert scenario.resolve_device("iphone") == "bob.iphone"


def test_unknown_field_names_file_line_and_field() -> None:
    error = _error(GOOD.replace("wake_delay_s: 2", "wake_dely_s: 2"))
    assert error.path == "lab/bad.yaml"
    assert error.line == 9
    assert error.key == "users.bob.devices.0.wake_dely_s"
    assert str(error) == "lab/bad.yaml:9: users.bob.devices.0.wake_dely_s: unknown field"
    assert isinstance(error, ScenarioError)


def test_a_bad_value_says_what_was_expected_and_what_came() -> None:
    error = _error(GOOD.replace("wake_delay_s: 2", "wake_delay_s: soon"))
    assert error.line == 9
    assert error.key == "users.bob.devices.0.wake_delay_s"
    assert "expected seconds (a number ≥ 0) or 'never', got 'soon'" in error.message


def test_never_is_a_wake_delay() -> None:
    scenario = parse_scenario(GOOD.replace("wake_delay_s: 2", "wake_delay_s: never"))
    assert scenario.users["bob"].devices[0].wake_delay_s == "never"


def test_out_of_range_value_names_its_line() -> None:
    error = _error(GOOD.replace("within: 0.1", "within: -1"))
    assert error.line == 17
    assert error.key == "expect.0.push.within"
    assert "greater than or equal to 0" in error.message
    assert "got -1" in error.message


def test_missing_section_is_named() -> None:
    text = GOOD.split("expect:")[0]
    error = _error(text)
    assert error.key == "expect"
    assert error.message == "Field required"


def test_reference_to_an_unknown_device_names_the_known_ones() -> None:
    error = _error(GOOD.replace("suspend: bob.iphone", "suspend: bob.ipad"))
    assert error.line == 15
    assert error.key == "timeline.1.suspend"
    assert error.message == "no device 'bob.ipad' (devices: bob.iphone)"


def test_call_to_an_unknown_user_and_expectation_on_an_unknown_call() -> None:
    error = _error(GOOD.replace("to: bob}", "to: bobby}"))
    assert (error.line, error.key) == (13, "timeline.0.call.to")
    assert "no user 'bobby'" in error.message
    error = _error(GOOD.replace("final_status: 200", "final_status: {call: c9, status: 200}"))
    assert (error.line, error.key) == (18, "expect.1.final_status.call")
    assert error.message == "no call 'c9' (calls: call1)"


def test_a_step_needs_exactly_one_action() -> None:
    error = _error(
        GOOD.replace("suspend: bob.iphone", "suspend: bob.iphone\n    resume: bob.iphone")
    )
    assert error.key == "timeline.1"
    assert error.line == 14
    assert "exactly one action" in error.message
    assert "got suspend, resume" in error.message


def test_platform_and_provider_must_agree() -> None:
    error = _error(GOOD.replace("platform: ios", "platform: ios\n        push: fcm"))
    assert error.key == "users.bob.devices.0"
    assert error.line == 5
    assert "a ios device pushes with apns (or none), not fcm" in error.message


def test_a_suspended_device_needs_a_push_provider() -> None:
    error = _error(GOOD.replace("platform: ios", "platform: desk"))
    assert "needs a push provider" in error.message


def test_yaml_syntax_error_has_its_line() -> None:
    error = _error("name: x\nusers: {bob: [\n")
    assert error.line == 3
    assert "not valid YAML" in error.message


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioFileError) as info:
        load_scenario(tmp_path / "nope.yaml")
    assert str(info.value).startswith(f"{tmp_path / 'nope.yaml'}: cannot read")


def test_directory_run_continues_after_a_bad_file(tmp_path: Path) -> None:
    (tmp_path / "a-bad.yaml").write_text(GOOD.replace("platform: ios", "platfrom: ios"))
    (tmp_path / "b-good.yaml").write_text(GOOD)
    results = run_paths([tmp_path])
    assert [Path(r.path).name for r in results] == ["a-bad.yaml", "b-good.yaml"]
    assert results[0].error is not None
    assert results[0].error.key == "users.bob.devices.0.platfrom"
    assert results[0].error.message == "unknown field (did you mean 'platform'?)"
    assert results[1].error is None
    assert results[1].passed, [c.got for c in results[1].checks]


def test_json_schema_spells_keys_as_files_do() -> None:
    schema = scenario_json_schema()
    assert schema["title"] == "sipwake scenario"
    assert schema["additionalProperties"] is False
    call = schema["$defs"]["CallAction"]
    assert "from" in call["properties"]
    assert call["required"] == ["from", "to"]
    wake = schema["$defs"]["Device"]["properties"]["wake_delay_s"]
    assert {"const": "never", "type": "string"} in wake["anyOf"]


def test_new_actions_are_read() -> None:
    text = GOOD.replace(
        "  - at: 2\n    suspend: bob.iphone\n",
        "  - at: 2\n    network_loss: {device: iphone, for_s: 3}\n"
        "  - at: 3\n    restart_server: true\n"
        "  - at: 4\n    message: {from: carol, to: bob, text: hi}\n",
    )
    text += "  - message_delivered: {to: bob.iphone}\n"
    scenario = parse_scenario(text)
    actions = [step.action for step in scenario.timeline]
    assert actions == ["call", "network_loss", "restart_server", "message"]
    assert scenario.timeline[2].restart_server is not None
    assert scenario.timeline[2].restart_server.down_s == 0.5  # `true`: the default
    assert [mid for mid, _ in scenario.messages()] == ["msg1"]
    assert scenario.restarts


def test_new_actions_name_what_they_point_to() -> None:
    lost = _error(GOOD.replace("suspend: bob.iphone", "network_loss: {device: bob.ipad, for_s: 3}"))
    assert str(lost).startswith("lab/bad.yaml:15: timeline.1.network_loss.device: no device")
    to_nobody = _error(GOOD.replace("suspend: bob.iphone", "message: {from: carol, to: eve}"))
    assert "timeline.1.message.to: no user 'eve' (users: bob)" in str(to_nobody)
    no_message = _error(GOOD + "  - message_delivered: {to: bob.iphone}\n")
    assert "expect.2.message_delivered.message: there is no message in the timeline" in str(
        no_message
    )
    zero = _error(GOOD.replace("suspend: bob.iphone", "network_loss: {device: iphone, for_s: 0}"))
    assert "timeline.1.network_loss.for_s" in str(zero)

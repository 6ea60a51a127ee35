"""``sipwake replay`` and ``sipwake schema`` as a user (or CI) runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"

pytestmark = pytest.mark.timeout(60)


def run(*args: str, cwd: Path = ROOT, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sipwake", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


def test_replay_the_library_writes_junit_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "out.xml"
    html = tmp_path / "html"
    result = run("replay", "scenarios/", "--junit", str(out), "--html", str(html))
    assert result.returncode == 0, result.stdout + result.stderr
    files = sorted(SCENARIOS.glob("*.yaml"))
    assert f"{len(files)}/{len(files)} scenarios passed" in result.stdout
    assert "PASS scenarios/ios-suspended-wakes-and-answers.yaml" in result.stdout
    assert "sipwake: forked bob.iphone" in result.stdout  # the ladder is printed
    suite = ET.parse(out).getroot().find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert sorted(c.get("name") for c in cases) == [f"scenarios/{p.name}" for p in files]
    assert all(c.find("failure") is None and c.find("error") is None for c in cases)
    assert suite.get("failures") == "0"
    # Piped, not a terminal: plain output, no progress bar.
    assert "\x1b[" not in result.stdout
    index = (html / "index.html").read_text()
    assert f"{len(files)}/{len(files)} scenarios passed" in index
    assert len(list(html.glob("*.html"))) == len(files) + 1


def test_a_failing_and_a_bad_file_do_not_stop_the_others(tmp_path: Path) -> None:
    shutil.copy(SCENARIOS / "dnd-skips-push.yaml", tmp_path / "a-ok.yaml")
    slow = (SCENARIOS / "ios-suspended-wakes-and-answers.yaml").read_text()
    (tmp_path / "b-slow.yaml").write_text(slow.replace("wake_delay_s: 2.5", "wake_delay_s: 20"))
    bad = slow.replace("answer_after_s: 2", "answer_after: 2")
    (tmp_path / "c-bad.yaml").write_text(bad)
    out = tmp_path / "out.xml"
    result = run("replay", str(tmp_path), "--quiet", "--junit", str(out))
    assert result.returncode == 2, result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"PASS {tmp_path / 'a-ok.yaml'}")
    assert lines[1].startswith(f"FAIL {tmp_path / 'b-slow.yaml'}")
    assert lines[2].startswith("  MISSED  answered: expected call1 answered by bob.iphone at 5.56")
    assert lines[3] == f"ERROR {tmp_path / 'c-bad.yaml'}"
    assert lines[4] == (
        f"  {tmp_path / 'c-bad.yaml'}:19: users.bob.devices.0.answer_after: unknown field"
    )
    assert "1/3 scenarios passed, 1 invalid" in result.stdout
    suite = ET.parse(out).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "1")


def test_a_missed_expectation_alone_exits_1(tmp_path: Path) -> None:
    slow = (SCENARIOS / "ios-suspended-wakes-and-answers.yaml").read_text()
    path = tmp_path / "slow.yaml"
    path.write_text(slow.replace("wake_delay_s: 2.5", "wake_delay_s: 20"))
    result = run("replay", str(path), "--quiet")
    assert result.returncode == 1
    assert "17.496 s late" in result.stdout


#: A representative real-clock subset: a push wakes a phone, a push service fails (mock
#: APNs), a phone loses its network, the server restarts (a message held for a sleeping
#: phone in real time: test_replay_live.py).
REAL_SUBSET = (
    "ios-suspended-wakes-and-answers.yaml",
    "apns-410-drops-token.yaml",
    "network-loss-call-waits-for-reconnect.yaml",
    "server-restart-keeps-bindings.yaml",
)


@pytest.mark.timeout(90)
def test_real_clock_subset_passes_over_loopback_sockets(tmp_path: Path) -> None:
    for name in REAL_SUBSET:
        shutil.copy(SCENARIOS / name, tmp_path / name)
    out = tmp_path / "real.xml"
    html = tmp_path / "html"
    started = time.monotonic()
    result = run(
        "replay",
        str(tmp_path),
        "--clock",
        "real",
        "--junit",
        str(out),
        "--html",
        str(html),
        timeout=80,
    )
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(REAL_SUBSET)}/{len(REAL_SUBSET)} scenarios passed" in result.stdout
    assert "in real time" in result.stdout
    # The embedded server's own call engine speaks: its steps are in the ladder.
    assert "sipwake: forked bob.iphone" in result.stdout
    assert "sipwake: started again on the same ports: 2 bindings from the store" in result.stdout
    assert took < 60
    suite = ET.parse(out).getroot().find("testsuite")
    assert suite is not None
    assert suite.get("failures") == "0"
    page = (html / "ios-suspended-wakes-and-answers.html").read_text()
    assert "<svg" in page
    assert "PASS" in page


def test_real_clock_names_the_missed_expectation(tmp_path: Path) -> None:
    text = (SCENARIOS / "foreground-rings-at-once.yaml").read_text()
    assert "answered: {by: bob.desk, at: 4.0, tolerance: 0.05}" in text
    path = tmp_path / "early.yaml"
    path.write_text(text.replace("at: 4.0, tolerance: 0.05", "at: 3.0, tolerance: 0.05"))
    result = run("replay", str(path), "--clock", "real", "--quiet")
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "MISSED  answered: expected call1 answered by bob.desk at 3 ± 0.05 s, "
        "got answered by bob.desk at 4.0" in result.stdout
    )
    assert " s late" in result.stdout


def test_bad_target_is_refused() -> None:
    result = run("replay", "scenarios/", "--target", "nowhere")
    assert result.returncode == 2
    assert "expected HOST:PORT" in result.stderr


def test_schema_prints_the_json_schema() -> None:
    result = run("schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["title"] == "sipwake scenario"
    assert set(schema["required"]) == {"name", "users", "timeline", "expect"}

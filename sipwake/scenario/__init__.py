"""Scenario replay: "phone asleep, call comes in" written down in YAML and replayed.

* ``model``: the file format (pydantic), ``load_scenario``, ``ScenarioFileError``;
* ``agents``: simulated phones, callers, voicemail and gateway (real SIP user agents);
* ``virtual``: the virtual clock, the in-memory network, the sandbox push service;
* ``runner``: ``replay(scenario)`` — the real ``Node`` and the agents on the clock;
* ``checks``: expectations met or missed; ``report``: verdicts, ladders, JUnit;
* ``suite``: files and directories (the shell ``sipwake replay`` calls).
"""

from __future__ import annotations

from sipwake.scenario.checks import Check, evaluate
from sipwake.scenario.model import Scenario, ScenarioFileError, load_scenario, parse_scenario
from sipwake.scenario.report import ScenarioResult, junit_xml, ladder, verdict_text
from sipwake.scenario.runner import Replay, replay
from sipwake.scenario.suite import run_file, run_paths, run_scenario

__all__ = [
    "Check",
    "Replay",
    "Scenario",
    "ScenarioFileError",
    "ScenarioResult",
    "evaluate",
    "junit_xml",
    "ladder",
    "load_scenario",
    "parse_scenario",
    "replay",
    "run_file",
    "run_paths",
    "run_scenario",
    "verdict_text",
]

"""Reports: the verdict of each scenario, a text ladder diagram, JUnit XML for CI.

``ladder(replay)`` draws every SIP message and push as an arrow between columns (the
callers, sipwake, each device, the push service, voicemail, the gateway), time going
down, with the node's call steps and the devices' state changes as notes::

     time  carol           sipwake         bob.iphone      push
    1.000  |---INVITE----->|               |               |
    1.002  |<---100 Trying-|               |               |
    1.002  |               |--call push (apns) for bob.iphone->|

``verdict_text(result)`` is the PASS/FAIL line and one line per expectation;
``junit_xml(results)`` one ``testcase`` per scenario file (bad files are ``error``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from sipwake.scenario.checks import Check
from sipwake.scenario.model import Scenario, ScenarioFileError
from sipwake.scenario.record import Replay

__all__ = ["ScenarioResult", "junit_xml", "ladder", "verdict_text"]

_MIN_WIDTH = 20
_MAX_WIDTH = 24


@dataclass(slots=True, kw_only=True)
class ScenarioResult:
    """One scenario file: what was replayed and its verdict (or why it could not run)."""

    path: str
    scenario: Scenario | None = None
    error: ScenarioFileError | None = None
    replay: Replay | None = None
    checks: list[Check] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.checks) and all(c.met for c in self.checks)

    @property
    def missed(self) -> list[Check]:
        return [c for c in self.checks if not c.met]


# -- the ladder ---------------------------------------------------------------------------
def ladder(replay: Replay) -> str:
    """The ladder diagram of ``replay`` (see the module docstring)."""
    columns = replay.columns
    if not columns:
        return "(nothing happened)"
    width = max(_MIN_WIDTH, min(_MAX_WIDTH, max(len(c) for c in columns) + 3))
    index = {name: i for i, name in enumerate(columns)}
    span = width * (len(columns) - 1) + 1

    def x(name: str) -> int:
        return index[name] * width

    header = [" "] * (span + width)
    for name in columns:
        start = x(name)
        header[start : start + len(name)] = name[: width - 1]
    lines = ["    time  " + "".join(header).rstrip()]
    for row in replay.rows:
        cells = [" "] * span
        for name in columns:
            cells[x(name)] = "|"
        suffix = ""
        if not row.dst:
            cells[x(row.src)] = "*"
            suffix = f"  {row.src}: {row.label}"
        else:
            a, b = x(row.src), x(row.dst)
            lo, hi = min(a, b), max(a, b)
            for i in range(lo + 1, hi):
                cells[i] = "-"
            head = "x" if row.lost else (">" if b > a else "<")
            if b > a:
                cells[hi - 1] = head
            else:
                cells[lo + 1] = head
            label = row.label
            room = hi - lo - 5
            if len(label) <= room:
                start = lo + 2 + (room - len(label)) // 2 + 1
                cells[start : start + len(label)] = label
            else:
                suffix = f"  {label}"
            if row.lost:
                suffix += f"  (lost: {row.lost})"
        lines.append(f"{row.at:8.3f}  " + "".join(cells).rstrip() + suffix)
    return "\n".join(lines)


# -- verdicts -------------------------------------------------------------------------------
def verdict_text(result: ScenarioResult) -> str:
    """``PASS name`` / ``FAIL name`` and one line per expectation (or the file error)."""
    if result.error is not None:
        return f"ERROR {result.path}\n  {result.error}"
    scenario = result.scenario
    assert scenario is not None
    met = sum(c.met for c in result.checks)
    word = "PASS " if result.passed else "FAIL "
    record = result.replay
    if record is not None and record.clock == "real":
        where = f" against {record.target}" if record.target else ""
        duration = (
            f"{record.end:.1f} of {scenario.duration_s:g} s in real time{where}, "
            f"{result.wall_s:.1f} s wall"
        )
    else:
        duration = f"{scenario.duration_s:g} s virtual in {result.wall_s * 1000:.0f} ms"
    lines = [
        f"{word}{result.path}: {scenario.name} "
        f"({met}/{len(result.checks)} expectations met, {duration})"
    ]
    for check in result.checks:
        if check.met:
            lines.append(f"  met     {check.kind}: {check.expected}: {check.got}")
        else:
            lines.append(f"  MISSED  {check.kind}: expected {check.expected}, got {check.got}")
    return "\n".join(lines)


def junit_xml(results: list[ScenarioResult], *, suite: str = "sipwake replay") -> str:
    """JUnit XML: one ``testcase`` per scenario file, ``failure`` for missed expectations,
    ``error`` for a file that could not be read or validated."""
    failures = sum(1 for r in results if r.error is None and not r.passed)
    errors = sum(1 for r in results if r.error is not None)
    total = sum(r.wall_s for r in results)
    root = ET.Element(
        "testsuites", tests=str(len(results)), failures=str(failures), errors=str(errors)
    )
    node = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(results)),
        failures=str(failures),
        errors=str(errors),
        time=f"{total:.3f}",
    )
    for result in results:
        name = result.scenario.name if result.scenario is not None else ""
        case = ET.SubElement(
            node,
            "testcase",
            classname="scenarios",
            name=result.path,
            time=f"{result.wall_s:.3f}",
        )
        if name:
            ET.SubElement(case, "properties").append(
                ET.Element("property", name="title", value=name)
            )
        if result.error is not None:
            err = ET.SubElement(case, "error", message=str(result.error), type="ScenarioFileError")
            err.text = str(result.error)
            continue
        missed = result.missed
        if missed:
            first = missed[0].error()
            failure = ET.SubElement(case, "failure", message=str(first), type="ScenarioError")
            failure.text = "\n".join(str(c.error()) for c in missed)
        out = ET.SubElement(case, "system-out")
        parts = [verdict_text(result)]
        if result.replay is not None:
            parts.append(ladder(result.replay))
        out.text = "\n\n".join(parts)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"

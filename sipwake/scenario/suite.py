"""Running scenario files: find them, load each, replay it, check it, time it.

The shell around the pure replay: it reads files and the wall clock (to report how long
each replay took). A file that cannot be loaded becomes a result with its
``ScenarioFileError``; the others still run.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from sipwake.scenario.checks import evaluate
from sipwake.scenario.model import Scenario, ScenarioFileError, load_scenario
from sipwake.scenario.report import ScenarioResult
from sipwake.scenario.runner import replay

__all__ = ["run_file", "run_paths", "run_scenario", "scenario_files"]

_SUFFIXES = (".yaml", ".yml")


def scenario_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Each file named, and every ``*.yaml``/``*.yml`` under each directory (sorted)."""
    for path in paths:
        path = Path(path)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in _SUFFIXES and p.is_file())
        else:
            yield path


def run_scenario(scenario: Scenario, path: str = "<scenario>") -> ScenarioResult:
    """Replay one validated scenario and check its expectations."""
    started = time.perf_counter()
    record = replay(scenario)
    checks = evaluate(record)
    return ScenarioResult(
        path=path,
        scenario=scenario,
        replay=record,
        checks=checks,
        wall_s=time.perf_counter() - started,
    )


def run_file(path: str | Path) -> ScenarioResult:
    """Load, replay and check the scenario file at ``path``."""
    try:
        scenario = load_scenario(path)
    except ScenarioFileError as exc:
        return ScenarioResult(path=str(path), error=exc)
    return run_scenario(scenario, str(path))


def run_paths(paths: Iterable[str | Path]) -> list[ScenarioResult]:
    """Every scenario file under ``paths``, each run whatever became of the others."""
    return [run_file(p) for p in scenario_files(paths)]

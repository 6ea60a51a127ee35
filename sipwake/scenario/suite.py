"""Running scenario files: find them, load each, replay it, check it, time it.

The shell around the replays: it reads files and the wall clock (to report how long
each replay took). A file that cannot be loaded becomes a result with its
``ScenarioFileError``; the others still run. ``clock="real"`` replays each scenario in
real time over loopback sockets (``live``), against the embedded server or a
``target`` SIP server, each in a fresh temporary directory and event loop.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sipwake.scenario.checks import evaluate
from sipwake.scenario.model import Scenario, ScenarioFileError, load_scenario
from sipwake.scenario.record import Replay
from sipwake.scenario.report import ScenarioResult
from sipwake.scenario.runner import replay

if TYPE_CHECKING:
    from sipwake.scenario.live import MockPush

__all__ = ["Clock", "iter_results", "run_file", "run_paths", "run_scenario", "scenario_files"]

Clock = Literal["virtual", "real"]
_SUFFIXES = (".yaml", ".yml")


def scenario_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Each file named, and every ``*.yaml``/``*.yml`` under each directory (sorted)."""
    for path in paths:
        path = Path(path)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in _SUFFIXES and p.is_file())
        else:
            yield path


def _replay_real(
    scenario: Scenario, target: tuple[str, int] | None, mocks: MockPush | None, full: bool
) -> Replay:
    from sipwake.scenario.live import replay_live

    with tempfile.TemporaryDirectory(prefix="sipwake-live-") as tmp:
        return asyncio.run(replay_live(scenario, Path(tmp), target=target, mocks=mocks, full=full))


#: The longest real-time replay run (``--clock real``, ``--target``): a scenario whose
#: expectations reach further (a phone asleep for days) is refused, not run for days.
MAX_REAL_S = 900.0


def run_scenario(
    scenario: Scenario,
    path: str = "<scenario>",
    *,
    clock: Clock = "virtual",
    target: tuple[str, int] | None = None,
    mocks: MockPush | None = None,
    full: bool = False,
) -> ScenarioResult:
    """Replay one validated scenario and check its expectations (``mocks``: where the
    mock push services of a ``target`` replay listen)."""
    started = time.perf_counter()
    if clock == "real" or target is not None:
        from sipwake.scenario.live import horizon

        needs = scenario.duration_s if full else horizon(scenario)
        if needs > MAX_REAL_S:  # a scenario of days: only the virtual clock has the time
            return ScenarioResult(
                path=path,
                error=ScenarioFileError(
                    f"needs {needs:,.0f} s of real time (over {MAX_REAL_S:,.0f} s): replay "
                    "it on the virtual clock (without --clock real or --target)",
                    path=path,
                    key="duration_s",
                ),
            )
        record = _replay_real(scenario, target, mocks, full)
    else:
        record = replay(scenario)
    checks = evaluate(record)
    return ScenarioResult(
        path=path,
        scenario=scenario,
        replay=record,
        checks=checks,
        wall_s=time.perf_counter() - started,
    )


def run_file(
    path: str | Path,
    *,
    clock: Clock = "virtual",
    target: tuple[str, int] | None = None,
    mocks: MockPush | None = None,
    full: bool = False,
) -> ScenarioResult:
    """Load, replay and check the scenario file at ``path``."""
    try:
        scenario = load_scenario(path)
    except ScenarioFileError as exc:
        return ScenarioResult(path=str(path), error=exc)
    return run_scenario(scenario, str(path), clock=clock, target=target, mocks=mocks, full=full)


def iter_results(
    paths: Iterable[str | Path],
    *,
    clock: Clock = "virtual",
    target: tuple[str, int] | None = None,
    mocks: MockPush | None = None,
    full: bool = False,
) -> Iterator[ScenarioResult]:
    """Each scenario file under ``paths``, replayed as it comes."""
    for path in scenario_files(paths):
        yield run_file(path, clock=clock, target=target, mocks=mocks, full=full)


def run_paths(
    paths: Iterable[str | Path],
    *,
    clock: Clock = "virtual",
    target: tuple[str, int] | None = None,
    mocks: MockPush | None = None,
    full: bool = False,
) -> list[ScenarioResult]:
    """Every scenario file under ``paths``, each run whatever became of the others."""
    return list(iter_results(paths, clock=clock, target=target, mocks=mocks, full=full))

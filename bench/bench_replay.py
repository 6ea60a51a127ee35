"""Scenario replay throughput on the virtual clock.

    python bench/bench_replay.py            # 1,000 replays; target: under 30 s wall in all

Each replay builds a fresh node and fresh agents and runs the whole scenario
(``scenarios/ios-suspended-wakes-and-answers.yaml`` by default: 30 s of scenario time,
a suspended iPhone pushed, woken, forked to and answered), then checks its
expectations. The scenario is loaded once; every run must pass.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sipwake.scenario import evaluate, load_scenario, replay

DEFAULT = Path(__file__).resolve().parents[1] / "scenarios" / "ios-suspended-wakes-and-answers.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=1000)
    parser.add_argument("--scenario", type=Path, default=DEFAULT)
    parser.add_argument("--target", type=float, default=30.0, help="wall seconds allowed")
    args = parser.parse_args()
    scenario = load_scenario(args.scenario)
    messages = 0
    started = time.perf_counter()
    for _ in range(args.runs):
        record = replay(scenario)
        checks = evaluate(record)
        if not all(c.met for c in checks):
            raise SystemExit(f"a replay failed: {[str(c.error()) for c in checks if not c.met]}")
        messages += record.messages
    wall = time.perf_counter() - started
    virtual = args.runs * scenario.duration_s
    print(f"scenario  {args.scenario.name} ({scenario.duration_s:g} s of scenario time)")
    print(f"replays   {args.runs}, {messages} SIP messages in all")
    print(
        f"wall      {wall:.2f} s ({wall / args.runs * 1000:.2f} ms per replay, "
        f"{virtual / wall:,.0f}x real time)"
    )
    verdict = "ok" if wall < args.target else "SLOWER THAN TARGET"
    print(f"target    < {args.target:g} s: {verdict}")
    if wall >= args.target:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

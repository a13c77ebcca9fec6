"""Benchmark: wall time of `advisor plan --model 7b` and `advisor recommend` against
`python -c pass`, same run.

Targets: `advisor plan --model 7b` under 0.3 s above Python's own start-up (median);
`advisor recommend` of a scenario with a compute check under 1 s; resolving a model shorthand
again (the wizard and `--fit` resolve many times) under 2 ms.
Usage: python benchmarks/plan_startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

SCENARIOS = Path(__file__).resolve().parents[1] / "profiles" / "scenarios"


def median_seconds(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def resolve_seconds(runs: int = 100) -> float:
    """Mean seconds per `resolve_model("7b")` once the catalogue is loaded, in this process."""
    from planner.models import resolve_model

    resolve_model("7b")
    start = time.perf_counter()
    for _ in range(runs):
        resolve_model("7b")
    return (time.perf_counter() - start) / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    advisor = shutil.which("advisor") or str(Path(sys.executable).with_name("advisor"))
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "advisor plan --model 7b": [advisor, "plan", "--model", "7b"],
        "advisor plan --model 7b --json": [advisor, "plan", "--model", "7b", "--json"],
        "advisor plan --model 7b --fit": [advisor, "plan", "--model", "7b", "--fit"],
        "advisor recommend (7B PPO, one 24 GB card)": [
            advisor,
            "recommend",
            "--answers",
            str(SCENARIOS / "ppo-7b-one-24gb-card.yaml"),
        ],
    }
    results = {name: median_seconds(cmd, args.runs) for name, cmd in cases.items()}
    baseline = results["python -c pass"]
    print(f"{'command':38} {'median s':>9} {'above python':>13}")
    for name, seconds in results.items():
        print(f"{name:38} {seconds:9.3f} {seconds - baseline:13.3f}")
    above = results["advisor plan --model 7b"] - baseline
    verdict = "meets" if above < 0.3 else "MISSES"
    print(
        f"\n`advisor plan --model 7b` is {above:.3f} s above Python's start: {verdict} the 0.3 s target"
    )
    recommend = results["advisor recommend (7B PPO, one 24 GB card)"]
    verdict = "meets" if recommend < 1.0 else "MISSES"
    print(
        f"`advisor recommend` (with its compute check) takes {recommend:.3f} s: {verdict} the 1 s target"
    )
    resolve = resolve_seconds()
    verdict = "meets" if resolve < 0.002 else "MISSES"
    print(f"resolving `7b` again takes {resolve * 1000:.3f} ms: {verdict} the 2 ms target")


if __name__ == "__main__":
    main()

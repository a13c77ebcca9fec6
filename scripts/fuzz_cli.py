"""Run thousands of generated `advisor plan` / `advisor recommend` command lines in-process and
count what went wrong: tracebacks, hangs over 10 s, and absurd output (exit 0 with a null, NaN,
infinite or negative number where the contract has none, or non-JSON from --json).

    .venv/bin/python scripts/fuzz_cli.py [--count 2000] [--seed 0] [--show 5]

The generators and the checks are tests/cli_fuzz.py's, the same that tests/test_fuzz_cli.py
draws from with hypothesis. Exits 1 when any of the three bad counts is not zero.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from anywhere: `tests.cli_fuzz` and the packages it drives

from tests.cli_fuzz import RandomPick, Workdir, invocation, run, shown_argv  # noqa: E402

LIMIT_S = 10
KINDS = {
    "traceback": "tracebacks",
    "hang": "hangs",
    "absurd": "absurd outputs",
    "exit status": "other exit statuses",
}
"""What a problem (tests/cli_fuzz.judge) starts with -> the count it adds to."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="invocations to run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generator")
    parser.add_argument("--show", type=int, default=5, help="bad invocations to print, per kind")
    args = parser.parse_args(argv)

    pick = RandomPick(random.Random(args.seed))
    statuses: collections.Counter[str] = collections.Counter()
    commands: collections.Counter[str] = collections.Counter()
    bad: dict[str, list[str]] = {kind: [] for kind in KINDS.values()}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="advisor-fuzz-") as folder:
        work = Workdir(Path(folder))
        os.chdir(work.root)  # a relative --report path lands in the scratch folder
        for _ in range(args.count):
            command = invocation(pick, work)
            commands[command[0]] += 1
            outcome = run(command, limit_s=LIMIT_S)
            statuses["hang" if outcome.hung else str(outcome.code)] += 1
            # One count per invocation and kind, with the first problem of that kind as example.
            for kind in dict.fromkeys(KINDS[p.split(":")[0]] for p in outcome.problems):
                problem = next(p for p in outcome.problems if KINDS[p.split(":")[0]] == kind)
                line = f"{shown_argv(command)}\n      {problem}"
                if outcome.escaped:
                    line += "\n      " + outcome.escaped.strip().splitlines()[-1][:200]
                bad[kind].append(line)
    elapsed = time.perf_counter() - start

    print(f"advisor CLI fuzz: seed {args.seed}, {elapsed:.1f} s")
    print(
        f"invocations:            {args.count} "
        f"({commands['plan']} plan, {commands['recommend']} recommend)"
    )
    for kind, lines in bad.items():
        label = f"{kind} (over {LIMIT_S} s)" if kind == "hangs" else kind
        print(f"{label + ':':<24}{len(lines)}")
    histogram = ", ".join(f"{code}: {n}" for code, n in sorted(statuses.items()))
    print(f"exit statuses:          {histogram}")
    for kind, lines in bad.items():
        for line in lines[: args.show]:
            print(f"  {kind}: {line}")
    return 1 if any(bad.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

"""Stand-ins for the wizard tests: a launch that writes a run folder as the runners do."""

from __future__ import annotations

import subprocess
import sys

FAKE_RUN = """
import json, signal, sys, time
from pathlib import Path

run = Path(sys.argv[1])
steps = int(sys.argv[2])
run.mkdir(parents=True)
stopped = []
signal.signal(signal.SIGINT, lambda *a: stopped.append(1))
with (run / "metrics.jsonl").open("a") as m, (run / "gpu.jsonl").open("a") as g:
    for step in range(1, steps + 1):
        if stopped:
            sys.exit(130)
        m.write(json.dumps({"step": step, "max_steps": steps, "time": step * 0.5,
                            "loss": 1.0 / step, "rewards/margins": 0.1 * step}) + "\\n")
        m.flush()
        g.write(json.dumps({"time": step, "gpus": [{"used_bytes": step * 2**30}]}) + "\\n")
        g.flush()
        (run / "progress.json").write_text(json.dumps({"step": step, "max_steps": steps}))
        time.sleep(0.05 if steps < 10 else 0.2)
(run / "validation.json").write_text(json.dumps({
    "device": "cuda", "estimated_peak_gib": 3.1, "measured_peak_gib": 3.4,
    "estimated_step_seconds": 0.5, "measured_step_seconds": 0.6, "steps": steps}))
"""


def fake_launcher(tmp_path, steps: int, calls: list):
    """`start_launch` stand-in: a process that writes a run folder as the runners do."""
    script = tmp_path / "fake_run.py"
    script.write_text(FAKE_RUN)

    def start(argv, log):
        calls.append(argv)
        method = argv[argv.index("--method") + 1]
        run = tmp_path / "runs" / f"{method}-20260101-000000"
        with log.open("wb") as handle:
            return subprocess.Popen(
                [sys.executable, str(script), str(run), str(steps)],
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    return start

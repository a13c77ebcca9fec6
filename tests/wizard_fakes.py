"""Stand-ins for the wizard tests: a launch that writes a run folder as the runners do."""

from __future__ import annotations

import json
import time


def fake_launcher(tmp_path, steps: int, calls: list):
    """`advisor.wizard.screens.run.start_launch` stand-in: writes `steps` steps of metrics, GPU
    samples and progress into runs/<method>-20260101-000000 under `tmp_path`, then a validation
    record; a stop asked on the way ends it as a stopped run. `calls` gets (request, options)."""
    from runners.launch import Run

    def start(request, options, *, console, on_folder, stop):
        calls.append((request, options))
        run = tmp_path / "runs" / f"{request.method.value}-20260101-000000"
        run.mkdir(parents=True)
        console.print(f"run folder {run}")
        on_folder(run)
        with (run / "metrics.jsonl").open("a") as m, (run / "gpu.jsonl").open("a") as g:
            for step in range(1, steps + 1):
                if stop.asked:
                    console.print(f"stopped at step {step - 1}")
                    return Run.model_construct(run_dir=run, outcome="stopped", exit_status=130)
                m.write(json.dumps({"step": step, "max_steps": steps, "time": step * 0.5,
                                    "loss": 1.0 / step, "rewards/margins": 0.1 * step}) + "\n")  # fmt: skip
                m.flush()
                g.write(json.dumps({"time": step, "gpus": [{"used_bytes": step * 2**30}]}) + "\n")
                g.flush()
                (run / "progress.json").write_text(json.dumps({"step": step, "max_steps": steps}))
                time.sleep(0.05 if steps < 10 else 0.2)
        (run / "validation.json").write_text(json.dumps({
            "device": "cuda", "estimated_peak_gib": 3.1, "measured_peak_gib": 3.4,
            "estimated_step_seconds": 0.5, "measured_step_seconds": 0.6, "steps": steps}))  # fmt: skip
        return Run.model_construct(run_dir=run, outcome="done", exit_status=0)

    return start

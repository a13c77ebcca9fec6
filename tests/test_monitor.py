"""The live view of `advisor launch`: the ETA from the median step time, and a progress line
that keeps its times whole at 80 columns."""

from __future__ import annotations

import io
import json

from rich.console import Console

from planner.specs import Method
from runners.monitor import MetricsTail, _refresh


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_the_eta_uses_the_median_step_not_the_start_up(tmp_path):
    """Step 1 is logged 30 s after launch (loading); later steps take 1 s each: 36 s remain
    at step 4 of 40, whatever the loading took."""
    metrics = tmp_path / "metrics.jsonl"
    _write(metrics, [{"step": s, "time": 30.0 + (s - 1), "loss": 1.0} for s in range(1, 5)])
    tail = MetricsTail(metrics)
    tail.poll()
    assert tail.eta_seconds(4, 40) == 36.0
    assert MetricsTail(metrics).eta_seconds(4, 40) is None  # nothing read yet


def test_the_progress_line_keeps_elapsed_and_eta_whole_at_80_columns(tmp_path):
    from runners import monitor

    run = tmp_path / "run"
    run.mkdir()
    _write(
        run / "metrics.jsonl",
        [
            {"step": s, "time": 5.0 + 2 * s, "loss": 0.5, "rewards/margins": 0.01 * s,
             "rewards/accuracies": 0.5}
            for s in range(1, 4)
        ],
    )  # fmt: skip
    (run / "progress.json").write_text(json.dumps({"step": 3, "max_steps": 100}))
    console = Console(file=io.StringIO(), width=80)
    tail = MetricsTail(run / "metrics.jsonl")
    progress = monitor.live_progress(Method.dpo, console)
    task = progress.add_task("train", total=None, metrics="", eta="-:--:--")
    _refresh(progress, task, run, tail, Method.dpo, None)
    line = Console(file=io.StringIO(), width=80)
    with line.capture() as capture:
        line.print(progress.make_tasks_table(progress.tasks))
    text = capture.get().splitlines()[0]
    assert "3/100 steps" in text and "ETA 0:03:14" in text, text
    assert "0:00:00" in text  # elapsed, whole


def _first_line(progress) -> str:
    line = Console(file=io.StringIO(), width=120)
    with line.capture() as capture:
        line.print(progress.make_tasks_table(progress.tasks))
    return capture.get().splitlines()[0]


def test_the_live_view_says_the_data_is_being_prepared_and_shows_a_null_loss(tmp_path):
    from runners import monitor

    (tmp_path / "progress.json").write_text(json.dumps({"step": 0, "state": "preparing"}))
    tail = MetricsTail(tmp_path / "metrics.jsonl")
    progress = monitor.live_progress(Method.sft, Console(file=io.StringIO(), width=120))
    task = progress.add_task("train", total=None, metrics="", eta="-:--:--")
    _refresh(progress, task, tmp_path, tail, Method.sft, None)
    assert "preparing the data (tokenizing" in _first_line(progress)
    # metrics.jsonl holds null where the trainer logged NaN
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "time": 1.0, "loss": null}\n')
    (tmp_path / "progress.json").write_text(json.dumps({"step": 1, "max_steps": 4}))
    _refresh(progress, task, tmp_path, tail, Method.sft, None)
    assert "loss nan/inf" in _first_line(progress)

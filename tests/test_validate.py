"""`advisor validate`: a short real run, then estimated against measured."""

from __future__ import annotations

import json
import os

from advisor.cli import main


def test_validate_runs_a_short_demo_and_compares_with_the_plan(tmp_path, capsys):
    assert main(["validate", "--demo", "--max-steps", "2", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Estimated vs measured" in out and "seconds per step" in out
    (run,) = [p.parent for p in tmp_path.glob("*/validation.json")]
    record = json.loads((run / "validation.json").read_text())
    assert record["steps"] == 2
    assert record["estimated_step_seconds"] > 0 and record["measured_step_seconds"] > 0
    # On CPU one step's tensors are counted and set against the plan of the fp32 CPU run.
    assert "tensor peak: estimated" in " ".join(out.split())
    tensors, at_length = record["memory_layers"]
    assert tensors["layer"] == "tensors" and 0.2 < tensors["ratio"] < 2
    # The demo's rows are shorter than its planned length: the estimate at the batch's own
    # length tells the per-token error apart from the data's shape.
    assert at_length["layer"] == "tensors_at_batch_length" and 0.5 < at_length["ratio"] < 2
    rank = json.loads((run / "memory" / "rank0.json").read_text())
    assert rank["tensor_peak_step"] == 2 and rank["tensor_peak_by_kind"]["Parameter"] > 0
    assert "ADVISOR_MEASURE_TENSORS" not in os.environ  # asked for this run only


def test_validate_refuses_a_dry_run(capsys):
    assert main(["validate", "--demo", "--dry-run"]) == 2
    assert "drop --dry-run" in capsys.readouterr().err


def _record(device: str) -> dict:
    from planner.plan import estimate
    from planner.specs import PlanRequest
    from runners.validation import validation_record

    plan = estimate(PlanRequest(model="7b"))
    steps = [{"step": s, "time": float(s) * 3.0} for s in (1, 2, 3)]
    return validation_record(device, plan, steps, 30 * 2**30).model_dump(mode="json")


def test_a_cpu_run_prints_no_ratio_with_the_gpu_plan(capsys, monkeypatch):
    from advisor.commands.validate import print_validation

    monkeypatch.setenv("COLUMNS", "200")
    print_validation(_record("cpu"))
    out = capsys.readouterr().out
    assert "not comparable" in out
    assert "measured / estimated" not in out and "×" not in out


def test_a_gpu_run_prints_measured_over_estimated(capsys, monkeypatch):
    from advisor.commands.validate import print_validation

    monkeypatch.setenv("COLUMNS", "200")
    print_validation(_record("cuda"))
    out = capsys.readouterr().out
    assert "measured / estimated" in out and "×" in out

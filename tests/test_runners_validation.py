"""Measured vs planned: GPU memory samples into gpu.jsonl and seconds per step from metrics."""

from __future__ import annotations

import json

from planner.plan import estimate
from planner.specs import PlanRequest
from runners.validation import GpuSampler, measured_step_seconds, validation_record


def test_sampler_writes_gpu_jsonl_and_keeps_the_peak(tmp_path):
    readings = iter([[3 * 2**30, 1 * 2**30], [5 * 2**30, 2 * 2**30], [4 * 2**30, 2 * 2**30]])

    def read():
        return [
            {"index": i, "used_bytes": used, "total_bytes": 80 * 2**30}
            for i, used in enumerate(next(readings))
        ]

    sampler = GpuSampler(tmp_path / "gpu.jsonl", read)
    for _ in range(3):
        sampler.sample()
    lines = (tmp_path / "gpu.jsonl").read_text().splitlines()
    assert len(lines) == 3 and len(json.loads(lines[0])["gpus"]) == 2
    assert sampler.peak_bytes == 5 * 2**30
    assert sampler.status() == "GPU 4.0/5.0 GiB"


def test_sampler_without_nvml_samples_nothing(tmp_path):
    sampler = GpuSampler(tmp_path / "gpu.jsonl", None)
    sampler.sample()
    assert sampler.peak_bytes is None and not (tmp_path / "gpu.jsonl").exists()
    assert sampler.status() == ""


def test_step_seconds_are_the_median_gap_between_step_logs():
    records = [
        {"step": 1, "time": 100.0, "loss": 1},
        {"step": 2, "time": 102.0, "loss": 1},
        {"step": 3, "time": 103.0, "loss": 1},
        {"step": 5, "time": 105.0, "loss": 1},
        {"step": 5, "time": 109.0, "train_runtime": 9.0},
    ]
    assert measured_step_seconds(records) == 1.0


def test_validation_record_sets_estimate_beside_measurement():
    plan = estimate(PlanRequest(model="7b", method="dpo"))
    record = validation_record("cuda", plan, [{"step": 4, "time": 1.0}], 30 * 2**30)
    assert record.estimated_peak_gib == plan.memory.per_gpu_peak_gib
    assert record.measured_peak_gib == 30.0
    assert record.steps == 4
    assert "CPU" in validation_record("cpu", plan, [], None).note

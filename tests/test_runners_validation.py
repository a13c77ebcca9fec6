"""Measured vs planned: GPU memory samples into gpu.jsonl and seconds per step from metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from planner.nvml import FakeBackend
from planner.plan import estimate
from planner.specs import PlanRequest
from runners.validation import (
    GpuSampler,
    measured_step_seconds,
    nvml_reader,
    process_tree,
    validation_record,
)


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
    assert sampler.measured_by == "used"  # no baseline, no PIDs: all memory in use counts


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


# --- sampling a GPU run: this run's memory only, and nothing that can stop the launcher ---

GIB = 2**30
FIXTURES = Path(__file__).parent / "fixtures" / "nvml"
LAUNCHER, TRAINER = 1000, 1001  # the PIDs the fixtures' processes are matched against


def _sampled(fixture, tmp_path, samples: int, pids=True) -> GpuSampler:
    """A launch as the launcher runs it: a baseline, then the trainer starts, then samples."""
    run = {LAUNCHER}
    read = nvml_reader(FakeBackend(fixture if isinstance(fixture, dict) else FIXTURES / fixture))
    sampler = GpuSampler(tmp_path / "gpu.jsonl", read, pids=(lambda: set(run)) if pids else None)
    sampler.take_baseline()
    run.add(TRAINER)
    for _ in range(samples):
        sampler.sample()
    return sampler


def _lines(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "gpu.jsonl").read_text().splitlines()]


def test_the_peak_counts_this_runs_processes_not_another_ones(tmp_path):
    sampler = _sampled("other-process.json", tmp_path, 3)
    assert sampler.measured_by == "per-process"
    assert sampler.peak_bytes == 22 * GIB  # used minus baseline would say 25, used 35.3
    assert "other processes on the GPUs are not counted" in sampler.memory_note
    baseline, *samples = _lines(tmp_path)
    assert baseline["baseline"] and samples[-1]["run_bytes"] == 22 * GIB
    assert [p["ours"] for p in samples[-1]["gpus"][0]["processes"]] == [False, True]


def test_in_a_container_foreign_pids_fall_back_to_used_minus_baseline(tmp_path):
    sampler = _sampled("container.json", tmp_path, 2)
    assert sampler.measured_by == "used minus baseline"
    assert sampler.peak_bytes == 15 * GIB
    assert "PID namespace" in sampler.memory_note and "container" in sampler.memory_note


def test_a_driver_without_per_process_memory_falls_back_and_says_why(tmp_path):
    fixture = json.loads((FIXTURES / "other-process.json").read_text())
    for listing in fixture["devices"][0]["processes"]:
        for process in listing:
            process["used"] = None
    sampler = _sampled(fixture, tmp_path, 3)
    assert sampler.measured_by == "used minus baseline" and sampler.peak_bytes == 25 * GIB
    assert "does not report memory per process" in sampler.memory_note


def test_processes_nvml_cannot_list_fall_back_to_used_minus_baseline(tmp_path):
    fixture = json.loads((FIXTURES / "other-process.json").read_text())
    fixture["devices"][0]["processes"] = [{"error": "NVMLLibraryMismatchError"}]
    sampler = _sampled(fixture, tmp_path, 3)
    assert sampler.measured_by == "used minus baseline" and sampler.peak_bytes == 25 * GIB
    assert "could not list the processes on GPU 0" in sampler.memory_note


def test_without_the_runs_pids_the_peak_is_used_minus_baseline(tmp_path):
    sampler = _sampled("other-process.json", tmp_path, 3, pids=False)
    assert sampler.measured_by == "used minus baseline" and sampler.peak_bytes == 25 * GIB


def test_a_lost_gpu_is_reported_while_the_others_are_sampled(tmp_path):
    sampler = _sampled("gpu1-lost.json", tmp_path, 3)
    assert sampler.measured_by == "per-process" and sampler.peak_bytes == 20 * GIB
    assert sampler.status() == "GPU 18.0/20.0 GiB · GPU 1: GPU is lost"
    assert "GPU 1 failed to answer NVML (GPU is lost)" in sampler.memory_note
    assert _lines(tmp_path)[-1]["gpus"][1] == {"index": 1, "error": "GPU is lost"}


def test_mig_instances_are_sampled_as_devices_of_their_own(tmp_path):
    sampler = _sampled("mig.json", tmp_path, 1)
    gpus = _lines(tmp_path)[-1]["gpus"]
    assert [(g.get("parent"), g["index"]) for g in gpus] == [(0, 0), (0, 2), (None, 1)]
    assert gpus[0]["own_bytes"] == 10630044057 and gpus[1]["own_bytes"] == 0
    assert sampler.measured_by == "per-process" and sampler.peak_bytes == 10630044057


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_a_full_disk_stops_the_gpu_file_not_the_sampler():
    read = nvml_reader(FakeBackend(FIXTURES / "a100x2.json"))
    sampler = GpuSampler(Path("/dev/full"), read)
    sampler.take_baseline()
    sampler.sample()
    sampler.sample()
    assert sampler.peak_bytes == 20971520000 - 524288000
    assert "gpu.jsonl is no longer written (No space left on device)" in sampler.status()
    assert "no longer written" in sampler.memory_note


def test_a_failing_reader_or_pid_list_never_raises(tmp_path):
    def broken():
        raise OSError(5, "Input/output error")

    sampler = GpuSampler(tmp_path / "gpu.jsonl", broken, pids=broken)
    sampler.take_baseline()
    sampler.sample()
    assert sampler.peak_bytes is None and sampler.measured_by is None
    assert "GPU sampling failed" in sampler.status() and "[" not in sampler.status()
    assert _lines(tmp_path)[-1]["error"].startswith("GPU sampling failed")
    healthy = nvml_reader(FakeBackend(FIXTURES / "a100x2.json"))
    sampler = GpuSampler(tmp_path / "gpu2.jsonl", healthy, pids=broken)
    sampler.sample()
    assert sampler.peak_bytes == 524288000 and "processes could not be listed" in sampler.status()


def test_the_validation_record_says_how_the_peak_was_measured(tmp_path):
    sampler = _sampled("other-process.json", tmp_path, 3)
    plan = estimate(PlanRequest(model="7b", method="dpo"))
    record = validation_record(
        "cuda",
        plan,
        [{"step": 2, "time": 1.0}],
        sampler.peak_bytes,
        measured_by=sampler.measured_by,
        memory_note=sampler.memory_note,
    )
    saved = json.loads(record.model_dump_json())
    assert saved["measured_peak_gib"] == 22.0 and saved["measured_by"] == "per-process"
    assert saved["memory_note"] and saved["steps"] == 2
    assert validation_record("cpu", plan, [], None).measured_by is None


def test_validate_prints_how_the_peak_was_measured(tmp_path, capsys):
    from advisor.commands.validate import print_validation

    sampler = _sampled("container.json", tmp_path, 2)
    record = validation_record(
        "cuda",
        None,
        [],
        sampler.peak_bytes,
        measured_by=sampler.measured_by,
        memory_note=sampler.memory_note,
    )
    print_validation(json.loads(record.model_dump_json()))
    out = " ".join(capsys.readouterr().out.split())
    assert "used minus baseline" in out and "PID namespace" in out


def test_the_live_view_reads_what_the_sampler_writes(tmp_path):
    from advisor.wizard.run_watch import RunWatch
    from planner.specs import Method

    _sampled("gpu1-lost.json", tmp_path, 3)
    watch = RunWatch(tmp_path, Method.dpo)
    watch.poll()
    assert watch.gpu_gib == pytest.approx([0.4, 20.0, 18.0])  # the baseline is no sample
    assert watch.gpu_errors == {"GPU 1": "GPU is lost"} and watch.gpu_measured_by == "per-process"
    with (tmp_path / "gpu.jsonl").open("a") as handle:  # an older file's line, and a failure
        handle.write('{"time": 1, "gpus": [{"used_bytes": 1073741824}]}\n{"error": "x"}\n')
    watch.poll()
    assert watch.gpu_gib[-1] == 1.0 and len(watch.gpu_gib) == 4


def test_the_process_tree_holds_the_launcher_and_its_grandchildren():
    script = (
        "import subprocess, time; p = subprocess.Popen(['sleep', '30']); "
        "print(p.pid, flush=True); time.sleep(30)"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        grandchild = int(child.stdout.readline())
        tree = process_tree()
        assert {os.getpid(), child.pid, grandchild} <= tree
        assert os.getppid() not in tree
    finally:
        os.kill(grandchild, signal.SIGKILL)
        child.kill()
        child.wait()


def _fake_cuda(monkeypatch, allocated: int, reserved: int) -> list[str]:
    """torch.cuda as a GPU run sees it, with the allocator's peaks given; returns the calls."""
    import torch

    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d=None: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d=None: allocated)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda d=None: reserved)
    return calls


def test_each_rank_writes_its_cuda_peaks_since_the_training_began(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from runners.rank_memory import read_rank_memory
    from runners.train import memory_callback

    calls = _fake_cuda(monkeypatch, allocated=20 * 2**30, reserved=22 * 2**30)
    callback = memory_callback(tmp_path)
    state = SimpleNamespace(global_step=3, max_steps=10)
    for rank in (0, 1):
        args = SimpleNamespace(device=SimpleNamespace(type="cuda"), process_index=rank)
        callback.on_train_begin(args, state, None)
        assert calls[-1] == "reset"  # the model's loading does not count
        callback.on_save(args, state, None)  # a stopped run has them too
    (first, second) = read_rank_memory(tmp_path)
    assert (first.rank, second.rank) == (0, 1)
    assert second.allocated_peak_bytes == 20 * 2**30 and second.reserved_peak_bytes == 22 * 2**30
    assert (tmp_path / "memory" / "rank1.json").is_file()


def test_a_cpu_rank_writes_no_cuda_peaks(tmp_path):
    from types import SimpleNamespace

    from runners.train import memory_callback

    args = SimpleNamespace(device=SimpleNamespace(type="cpu"), process_index=0)
    callback = memory_callback(tmp_path)
    callback.on_train_begin(args, None, None)
    callback.on_train_end(args, None, None)
    assert not (tmp_path / "memory").exists()


def test_validation_compares_each_memory_layer_with_its_own_estimate(tmp_path, capsys):
    from advisor.commands.validate import print_validation
    from planner.constants import GIB, runtime
    from runners.rank_memory import RankMemory, write_rank_memory

    plan = estimate(PlanRequest(model="7b", method="dpo", tuning="lora"))
    tensors = plan.memory.tensor_peak_gib
    for rank, allocated in ((0, 0.9), (1, 1.1)):  # the largest rank counts
        peaks = {"allocated_peak_bytes": int(allocated * tensors * GIB)}
        peaks["reserved_peak_bytes"] = int(1.2 * tensors * GIB)
        write_rank_memory(tmp_path, RankMemory(rank=rank, device="cuda", **peaks))
    nvml = int(plan.memory.per_gpu_peak_gib * GIB)
    record = validation_record("cuda", plan, [], nvml, run_dir=tmp_path)
    assert record.estimated_tensor_peak_gib == pytest.approx(tensors)
    assert record.allocated_peak_gib == pytest.approx(1.1 * tensors, rel=1e-4)
    layers = {layer.layer: layer for layer in record.memory_layers}
    assert list(layers) == ["allocated", "reserved", "nvml"]
    assert layers["allocated"].ratio == pytest.approx(1.1, abs=1e-3)
    slack = 1 + runtime("allocator_fragmentation")  # reserved: tensors + allocator slack
    assert layers["reserved"].estimated_gib == pytest.approx(tensors * slack, rel=1e-4)
    assert layers["nvml"].ratio == pytest.approx(1.0, abs=1e-3)
    print_validation(json.loads(record.model_dump_json()))
    out = " ".join(capsys.readouterr().out.split())
    assert "allocated by PyTorch" in out and "1.10×" in out and "reserved by PyTorch" in out


def test_a_cpu_run_compares_its_counted_tensors_with_the_plan_of_the_run_on_cpu(tmp_path):
    from runners.rank_memory import RankMemory, write_rank_memory
    from runners.settings import run_precision

    asked = PlanRequest(model="7b", method="dpo", tuning="lora", seq_len=256)
    on_cpu = run_precision(asked, "cpu", False)
    write_rank_memory(tmp_path, RankMemory(rank=0, device="cpu", tensor_peak_bytes=2**30))
    record = validation_record("cpu", estimate(asked), [], None, run_dir=tmp_path, request=on_cpu)
    (layer,) = record.memory_layers  # the GPU layers are not this run's
    assert layer.layer == "tensors" and layer.measured_gib == 1.0
    assert record.estimated_tensor_peak_gib == pytest.approx(
        estimate(on_cpu).memory.tensor_peak_gib, abs=0.01
    )
    assert record.estimated_tensor_peak_gib != estimate(asked).memory.tensor_peak_gib
    assert layer.ratio == pytest.approx(1 / record.estimated_tensor_peak_gib, abs=1e-3)

"""The calibration store: measured runs correct the plan's runtime overhead, and only that.

Fixture records stand in for measured GPU runs (no GPU, no training): each is built from the
uncalibrated plan's own numbers plus a chosen gap, so the direction and size of the correction
can be checked by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from planner.calibration import (
    CalibrationRecord,
    correction_spread,
    read_store,
    record_from_run,
    shrunk_correction,
)
from planner.errors import InputError
from planner.plan import estimate
from planner.specs import PlanRequest
from tests.test_plan_cli import run_cli

NVML = Path(__file__).parent / "fixtures" / "nvml"
REQUEST = PlanRequest(model="7b", gpu="a100-80gb")


@pytest.fixture
def store(tmp_path, monkeypatch) -> Path:
    """An empty store of this test's own, named by $ADVISOR_CALIBRATION."""
    path = tmp_path / "calibration.jsonl"
    monkeypatch.setenv("ADVISOR_CALIBRATION", str(path))
    return path


@pytest.fixture(scope="module")
def bare():
    """The plan with nothing learned: the numbers records are measured against."""
    plan = estimate(REQUEST.model_copy(update={"calibration": "/nonexistent/calibration.jsonl"}))
    assert plan.memory.calibration is None
    return plan


def measured(bare, gap_gib: float, **fields) -> dict:
    """A record of a run on the plan's GPU whose runtime overhead was `gap_gib` above the plan's."""
    memory = bare.memory
    tensors = memory.tensor_peak_gib
    runtime = memory.components_gib["runtime_overhead"]
    record = {
        "gpu": "A100-80GB",
        "estimated_tensor_peak_gib": tensors,
        "estimated_runtime_gib": runtime,
        "measured_peak_gib": tensors + runtime + gap_gib,
        "allocated_gib": tensors,
        "method": "dpo",
        "model": "Llama-2-7B",
    }
    return {**record, **fields}


def write(path: Path, *records: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def plan_json(capsys, *argv: str) -> dict:
    code, out, err = run_cli(capsys, "plan", "--model", "7b", "--gpu", "a100-80gb", *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def runtime(plan: dict) -> float:
    return plan["memory"]["components_gib"]["runtime_overhead"]


# --- the math ------------------------------------------------------------------------------------


def test_a_run_above_the_estimate_raises_the_runtime_overhead_toward_it(store, bare, capsys):
    write(store, measured(bare, 1.0))
    plan = plan_json(capsys)
    before = bare.memory.components_gib["runtime_overhead"]
    assert before < runtime(plan) < before + 1.0
    assert plan["memory"]["calibration"]["correction_gib"] == pytest.approx(1 / 3, abs=1e-3)
    assert plan["memory"]["per_gpu_peak_gib"] == pytest.approx(
        bare.memory.per_gpu_peak_gib + 1 / 3, abs=0.02
    )


def test_a_run_below_the_estimate_lowers_the_runtime_overhead_toward_it(store, bare, capsys):
    write(store, measured(bare, -0.9))
    plan = plan_json(capsys)
    before = bare.memory.components_gib["runtime_overhead"]
    assert before - 0.9 < runtime(plan) < before
    assert plan["memory"]["calibration"]["correction_gib"] < 0


@pytest.mark.parametrize("runs", [1, 2, 10, 200])
def test_identical_runs_approach_the_measurement_but_never_pass_it(store, bare, capsys, runs):
    write(store, *[measured(bare, 1.0)] * runs)
    correction = plan_json(capsys)["memory"]["calibration"]["correction_gib"]
    assert 0 < correction < 1.0
    assert correction == pytest.approx(runs / (runs + 2), abs=1e-3)


@pytest.mark.parametrize("residuals", [[2.0], [-3.0, -1.0], [0.5] * 7, [4.0, -1.0, 0.2]])
def test_the_correction_lies_between_nothing_and_the_runs_mean(residuals):
    mean = sum(residuals) / len(residuals)
    correction = shrunk_correction(residuals)
    assert min(0.0, mean) < correction < max(0.0, mean)


def test_conflicting_runs_state_a_wider_spread_than_agreeing_ones(bare):
    agreeing = [
        CalibrationRecord.model_validate(measured(bare, gap)).residual_gib for gap in (1.0, 1.0)
    ]
    conflicting = [
        CalibrationRecord.model_validate(measured(bare, gap)).residual_gib for gap in (0.0, 2.0)
    ]
    assert shrunk_correction(agreeing) == pytest.approx(shrunk_correction(conflicting))
    assert correction_spread(conflicting) > correction_spread(agreeing)
    assert correction_spread([1.0]) == pytest.approx(1.0 - shrunk_correction([1.0]))


def test_conflicting_runs_widen_the_spread_the_plan_states(store, bare, capsys, tmp_path):
    write(store, measured(bare, 1.0), measured(bare, 1.0))
    agreeing = plan_json(capsys)["memory"]["calibration"]
    write(store, measured(bare, 0.0), measured(bare, 2.0))
    conflicting = plan_json(capsys)["memory"]["calibration"]
    assert conflicting["correction_gib"] == pytest.approx(agreeing["correction_gib"])
    assert conflicting["spread_gib"] > agreeing["spread_gib"]


def test_without_torchs_allocated_peak_the_estimated_tensor_peak_stands_in(bare):
    with_allocated = CalibrationRecord.model_validate(measured(bare, 1.0))
    without = CalibrationRecord.model_validate({**measured(bare, 1.0), "allocated_gib": None})
    assert with_allocated.residual_gib == pytest.approx(without.residual_gib)
    # torch measured more tensors than planned: the runtime part is what NVML saw beyond them.
    more_tensors = CalibrationRecord.model_validate(
        {**measured(bare, 1.0), "allocated_gib": bare.memory.tensor_peak_gib + 0.5}
    )
    assert more_tensors.residual_gib == pytest.approx(0.5, abs=1e-6)


# --- what it applies to --------------------------------------------------------------------------


def test_only_the_runtime_overhead_changes_never_the_tensor_estimate(store, bare, capsys):
    write(store, measured(bare, 3.0))
    plan = plan_json(capsys)
    assert plan["memory"]["tensor_peak_gib"] == bare.memory.tensor_peak_gib
    assert plan["memory"]["phases_gib"] == bare.memory.phases_gib
    for name, value in bare.memory.components_gib.items():
        if name != "runtime_overhead":
            assert plan["memory"]["components_gib"][name] == value, name
    calibration = plan["memory"]["calibration"]
    assert calibration["applies_to"] == "runtime_overhead"
    assert calibration["model_runtime_gib"] == pytest.approx(
        bare.memory.components_gib["runtime_overhead"], abs=0.01
    )


def test_runs_on_another_gpu_layout_or_torch_teach_this_plan_nothing(store, bare, capsys):
    write(
        store,
        measured(bare, 1.0, gpu="H100-80GB"),
        measured(bare, 1.0, world_size=8),
        measured(bare, 1.0, stack={"torch": "0.1.0"}),
    )
    assert plan_json(capsys)["memory"]["calibration"] is None


def test_nvml_names_and_aliases_match_the_gpu_profile(store, bare, capsys):
    write(store, measured(bare, 1.0, gpu="NVIDIA A100-SXM4-80GB"), measured(bare, 1.0, gpu="a100"))
    calibration = plan_json(capsys)["memory"]["calibration"]
    assert calibration["runs"] == 2 and calibration["gpu"] == "A100-80GB"


def test_the_plan_json_says_null_without_a_store(store, capsys):
    assert not store.exists()
    plan = plan_json(capsys)
    assert "calibration" in plan["memory"] and plan["memory"]["calibration"] is None


def test_the_plan_says_in_one_line_what_calibrated_it(store, bare, capsys):
    write(store, measured(bare, 1.2), measured(bare, 1.2), measured(bare, 1.2))
    code, out, _ = run_cli(capsys, "plan", "--model", "7b", "--gpu", "a100-80gb")
    assert code == 0
    flat = " ".join(out.replace("│", " ").split())
    assert "Runtime overhead calibrated from 3 runs on A100-80GB: +0.7 GiB ± 0.5" in flat


def test_the_fit_search_sizes_with_the_calibrated_overhead(store, bare):
    from planner.fit import search, search_space

    write(store, measured(bare, 2.0))
    best = search(REQUEST, space=search_space(1, 1))[0]
    assert best.memory.calibration is not None
    assert best.memory.calibration.correction_gib > 0


# --- the store -----------------------------------------------------------------------------------


def test_a_shared_store_named_by_the_environment_is_used(tmp_path, bare, capsys, monkeypatch):
    team = write(tmp_path / "team" / "calibration.jsonl", measured(bare, 1.0))
    monkeypatch.setenv("ADVISOR_CALIBRATION", str(team))
    calibration = plan_json(capsys)["memory"]["calibration"]
    assert calibration["source"] == str(team)


def test_calibration_flag_overrides_the_environment(store, tmp_path, bare, capsys):
    write(store, measured(bare, -1.0))
    team = write(tmp_path / "team.jsonl", measured(bare, 1.0), measured(bare, 1.0))
    plan = plan_json(capsys, "--calibration", str(team))
    assert plan["memory"]["calibration"]["runs"] == 2
    assert plan["memory"]["calibration"]["source"] == str(team)
    assert plan["request"]["calibration"] == str(team)


def test_the_default_store_is_under_the_users_cache(tmp_path, bare, capsys, monkeypatch):
    monkeypatch.delenv("ADVISOR_CALIBRATION")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    write_to = tmp_path / "alignment-advisor" / "calibration.jsonl"
    write(write_to, measured(bare, 1.0))
    assert plan_json(capsys)["memory"]["calibration"]["source"] == str(write_to)


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("{not json", "line 2: not JSON"),
        ("[1, 2]", "line 2: not a record"),
        ('{"gpu": "A100-80GB"}', "line 2: estimated_tensor_peak_gib"),
        ('{"gpu": "x", "estimated_tensor_peak_gib": 1, "estimated_runtime_gib": 1, '
         '"measured_peak_gib": -4}', "line 2: measured_peak_gib"),
    ],
)  # fmt: skip
def test_a_malformed_store_is_one_line_naming_file_and_line(store, bare, capsys, line, says):
    store.write_text(json.dumps(measured(bare, 1.0)) + "\n" + line + "\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "plan", "--model", "7b")
    assert code == 2 and not out
    assert err.count("\n") == 1 and "Traceback" not in err
    assert str(store) in err and says in err


def test_a_folder_as_the_store_is_refused_in_one_line(tmp_path, capsys):
    code, _, err = run_cli(capsys, "plan", "--model", "7b", "--calibration", str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and "is a folder" in err


# --- runs add to it -------------------------------------------------------------------------------


def run_folder(folder: Path, bare, validation: dict) -> Path:
    """A finished run folder's manifest.json and validation.json, as launch writes them."""
    folder.mkdir(parents=True)
    manifest = {
        "created": 1_700_000_000.0,
        "run_dir": str(folder),
        "plan": bare.model_dump(mode="json"),
        "versions": {"torch": "2.6.0+cu124", "python": "3.12.1"},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (folder / "validation.json").write_text(json.dumps(validation), encoding="utf-8")
    return folder


GPU_VALIDATION = {
    "device": "cuda",
    "comparable": True,
    "measured_peak_gib": 18.0,
    "allocated_peak_gib": 15.0,
    "reserved_peak_gib": 16.1,
}


def test_a_measured_gpu_run_becomes_a_record(bare):
    manifest = {"plan": bare.model_dump(mode="json"), "versions": {"torch": "2.6.0"}}
    record = record_from_run(manifest, GPU_VALIDATION, gpu="A100-80GB", driver="550.54.15")
    assert record is not None
    assert record.estimated_tensor_peak_gib == bare.memory.tensor_peak_gib
    assert record.estimated_runtime_gib == bare.memory.components_gib["runtime_overhead"]
    assert record.observed_runtime_gib == pytest.approx(3.0)
    assert record.stack.label() == "driver 550.54.15 · torch 2.6.0"
    cpu = {**GPU_VALIDATION, "device": "cpu", "comparable": False}
    assert record_from_run(manifest, cpu) is None
    assert record_from_run(manifest, {**GPU_VALIDATION, "measured_peak_gib": None}) is None


def test_a_calibrated_plan_records_the_uncalibrated_runtime(store, bare):
    write(store, measured(bare, 1.0))
    calibrated_plan = estimate(REQUEST)
    assert calibrated_plan.memory.calibration is not None
    manifest = {"plan": calibrated_plan.model_dump(mode="json"), "versions": {}}
    record = record_from_run(manifest, GPU_VALIDATION)
    assert record.estimated_runtime_gib == pytest.approx(
        bare.memory.components_gib["runtime_overhead"], abs=0.01
    )


class _Manifest:
    """What `remember_measurement` reads of a Manifest: its JSON and the request's store."""

    def __init__(self, bare, calibration: str | None = None):
        self.request = bare.request.model_copy(update={"calibration": calibration})
        self._json = {"plan": bare.model_dump(mode="json"), "versions": {"torch": "2.6.0"}}

    def model_dump(self, mode: str = "python") -> dict:
        return self._json


def test_launch_appends_a_measured_gpu_run_with_the_nvml_fakes_card(store, bare, monkeypatch):
    from runners.launch import remember_measurement
    from runners.validation import Validation

    monkeypatch.setenv("ADVISOR_FAKE_NVML", str(NVML / "a100x2.json"))
    validation = Validation(
        device="cuda",
        estimated_peak_gib=bare.memory.per_gpu_peak_gib,
        measured_peak_gib=18.0,
        estimated_step_seconds=1.0,
        measured_step_seconds=1.1,
        steps=10,
    )
    console = Console(record=True, width=200)
    remember_measurement(_Manifest(bare), validation, console)
    [record] = read_store(store)
    assert record.gpu == "A100-80GB" and record.stack.driver == "550.54.15"
    assert record.measured_peak_gib == 18.0
    assert f"added to {store}" in console.export_text()

    cpu = validation.model_copy(update={"device": "cpu", "comparable": False})
    remember_measurement(_Manifest(bare), cpu, console)
    assert len(read_store(store)) == 1


def test_a_store_that_cannot_be_written_is_a_note_not_a_crash(tmp_path, bare, monkeypatch):
    from runners.launch import remember_measurement
    from runners.validation import Validation

    monkeypatch.setenv("ADVISOR_FAKE_NVML", str(NVML / "no-driver.json"))
    blocked = tmp_path / "file"
    blocked.write_text("", encoding="utf-8")
    validation = Validation(
        device="cuda",
        estimated_peak_gib=10.0,
        measured_peak_gib=12.0,
        estimated_step_seconds=None,
        measured_step_seconds=None,
        steps=3,
    )
    console = Console(record=True, width=200)
    remember_measurement(_Manifest(bare, str(blocked / "calibration.jsonl")), validation, console)
    text = console.export_text()
    assert "calibration store not updated" in text and text.count("\n") == 1


# --- advisor calibrate ---------------------------------------------------------------------------


def test_calibrate_show_lists_each_gpu_and_stack(store, bare, capsys):
    write(
        store,
        measured(bare, 1.0, stack={"torch": "2.6.0"}),
        measured(bare, 1.0, stack={"torch": "2.6.0"}, gpu="NVIDIA A100-SXM4-80GB"),
        measured(bare, -0.5, gpu="H100-80GB"),
    )
    code, out, _ = run_cli(capsys, "calibrate", "show", "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["store"] == str(store)
    rows = {(g["gpu"], g["stack"]): g for g in shown["groups"]}
    assert rows[("A100-80GB", "torch 2.6.0")]["runs"] == 2
    assert rows[("A100-80GB", "torch 2.6.0")]["correction_gib"] == pytest.approx(0.5, abs=1e-3)
    assert rows[("H100-80GB", "stack unknown")]["correction_gib"] < 0
    code, out, _ = run_cli(capsys, "calibrate", "show")
    assert code == 0 and "A100-80GB" in out and "H100-80GB" in out and "+0.50" in out


def test_calibrate_show_of_an_empty_store_says_so(store, capsys):
    code, out, _ = run_cli(capsys, "calibrate", "show")
    assert code == 0 and "No measured runs" in out


def test_calibrate_import_takes_stores_and_run_folders(store, tmp_path, bare, capsys):
    team = write(tmp_path / "team.jsonl", measured(bare, 1.0), measured(bare, 0.5))
    folder = run_folder(tmp_path / "runs" / "dpo-1", bare, GPU_VALIDATION)
    code, out, err = run_cli(capsys, "calibrate", "import", str(team), str(folder))
    assert code == 0, err
    assert "2 records" in out and "1 record " in out
    records = read_store(store)
    assert len(records) == 3 and records[-1].stack.torch == "2.6.0+cu124"


def test_calibrate_import_refuses_what_holds_no_measurement(store, tmp_path, bare, capsys):
    cpu = run_folder(tmp_path / "cpu-run", bare, {"device": "cpu", "comparable": False})
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n", encoding="utf-8")
    for target, says in (
        (cpu, "measured no GPU peak"),
        (tmp_path, "no validation.json"),
        (bad, "line 1: not JSON"),
        (tmp_path / "missing.jsonl", "does not exist"),
    ):
        code, _, err = run_cli(capsys, "calibrate", "import", str(target))
        assert code == 2 and says in err and err.count("\n") == 1, err
    assert not store.exists()  # nothing half-imported


def test_calibrate_reset_removes_the_store_and_says_which(store, bare, capsys):
    write(store, measured(bare, 1.0))
    code, out, _ = run_cli(capsys, "calibrate", "reset")
    assert code == 0 and str(store) in out and not store.exists()
    code, out, _ = run_cli(capsys, "calibrate", "reset")
    assert code == 0 and "nothing removed" in out


def test_read_store_of_a_missing_file_is_empty(tmp_path):
    assert read_store(tmp_path / "none.jsonl") == []
    with pytest.raises(InputError):
        read_store(tmp_path)

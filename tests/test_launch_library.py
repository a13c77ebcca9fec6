"""`runners.launch`: launching is a library function that returns a Run (no CLI in between)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pydantic import ValidationError
from rich.console import Console

from planner.errors import InputError
from planner.specs import PlanRequest
from runners.launch import LaunchOptions, Run, StopRequest, follow, launch, resume
from runners.run_folder import read_manifest
from runners.tiny import write_demo_dataset, write_jsonl


def _request(model: Path, dataset: Path | None, **update) -> PlanRequest:
    fields = dict(
        method="dpo", model=str(model), dataset=str(dataset) if dataset else None,
        tuning="lora", lora_targets="qv", seq_len=64, batch_size=2, grad_accum=1,
        grad_checkpointing=False,
    )  # fmt: skip
    return PlanRequest(**{**fields, **update})


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def test_a_dry_run_returns_the_written_run_and_starts_nothing(tiny_model, tmp_path):
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    folders: list[Path] = []
    options = LaunchOptions(output=tmp_path / "runs", device="cpu", dry_run=True, max_steps=3)
    run = launch(_request(tiny_model, dataset), options, console=_quiet(), on_folder=folders.append)
    assert run.outcome == "dry_run" and run.exit_status == 0 and run.message == ""
    assert (run.pid, run.returncode, run.validation) == (None, None, None)
    assert run.run_dir.is_dir() and run.run_dir.parent == tmp_path / "runs"
    assert folders == [run.run_dir]  # said before anything would start
    assert run.manifest == read_manifest(run.run_dir)
    assert run.manifest.request.model == str(tiny_model.resolve())  # absolute for the child
    assert run.spec.trl_config["max_steps"] == 3 and run.spec.device == "cpu"
    assert not {"train.log", "metrics.jsonl", "progress.json"} & {
        p.name for p in run.run_dir.iterdir()
    }
    assert Run.model_validate_json(run.model_dump_json()) == run


def test_a_launch_without_a_dataset_is_refused_before_anything_is_written(tiny_model, tmp_path):
    options = LaunchOptions(output=tmp_path / "runs", device="cpu", dry_run=True)
    with pytest.raises(InputError, match="--dataset PATH is required"):
        launch(_request(tiny_model, None), options, console=_quiet())
    assert not (tmp_path / "runs").exists()


def test_a_launch_without_a_model_folder_is_refused(tmp_path):
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    options = LaunchOptions(output=tmp_path / "runs", device="cpu")
    with pytest.raises(InputError, match="launch needs a model folder"):
        launch(_request(Path("7b"), dataset), options, console=_quiet())
    assert not (tmp_path / "runs").exists()


def test_data_errors_refuse_the_launch_unless_forced(tiny_model, tmp_path):
    rows = [{"prompt": "a", "chosen": " same", "rejected": " same"}] * 4
    dataset = write_jsonl(rows, tmp_path / "bad.jsonl")
    options = LaunchOptions(output=tmp_path / "runs", device="cpu", dry_run=True)
    console = _quiet()
    with pytest.raises(InputError, match="launch anyway with --force"):
        launch(_request(tiny_model, dataset), options, console=console)
    assert "identical" in console.file.getvalue()
    assert not (tmp_path / "runs").exists()
    forced = options.model_copy(update={"force": True})
    assert launch(_request(tiny_model, dataset), forced, console=_quiet()).outcome == "dry_run"


def test_a_multi_node_launch_is_written_to_submit_and_trains_nothing_here(tiny_model, tmp_path):
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    request = _request(tiny_model, dataset, nodes=2, num_gpus=4)
    console = _quiet()
    run = launch(request, LaunchOptions(output=tmp_path / "runs", device="cpu"), console=console)
    assert (run.outcome, run.exit_status, run.returncode) == ("submitted", 0, None)
    assert (run.run_dir / "slurm.sbatch").is_file()
    assert not (run.run_dir / "train.log").exists()
    assert "sbatch" in console.file.getvalue()


def test_resuming_a_run_without_a_checkpoint_is_refused(tiny_model, tmp_path):
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    options = LaunchOptions(output=tmp_path / "runs", device="cpu", dry_run=True)
    written = launch(_request(tiny_model, dataset), options, console=_quiet())
    with pytest.raises(InputError, match="no checkpoint saved yet"):
        resume(written.run_dir, console=_quiet())
    with pytest.raises(InputError, match="--method kto is not the run's dpo"):
        resume(written.run_dir, method="kto", console=_quiet())


def test_a_stop_asked_before_the_training_starts_starts_nothing(tiny_model, tmp_path):
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    options = LaunchOptions(output=tmp_path / "runs", device="cpu", dry_run=True)
    written = launch(_request(tiny_model, dataset), options, console=_quiet())
    stop = StopRequest()
    stop.ask()
    run = follow(written.manifest, written.run_dir, console=_quiet(), quiet=True, stop=stop)
    assert (run.outcome, run.exit_status, run.returncode) == ("stopped", 130, None)
    assert not (written.run_dir / "train.log").exists()


def test_a_stop_request_reaches_the_follower_once_per_ask_as_ctrl_c():
    stop = StopRequest()
    stop.deliver()  # nothing asked: nothing raised
    stop.ask()
    with pytest.raises(KeyboardInterrupt):
        stop.deliver()
    stop.deliver()  # the same stop is not delivered twice (a second Ctrl-C would kill)
    stop.ask()
    with pytest.raises(KeyboardInterrupt):
        stop.deliver()


@pytest.mark.parametrize(
    "field", [{"max_steps": 0}, {"learning_rate": float("nan")}, {"processes": 0}, {"x": 1}]
)
def test_launch_options_hold_only_sensible_values(field):
    with pytest.raises(ValidationError):
        LaunchOptions(**field)


@pytest.mark.slow
def test_a_launch_trains_and_returns_a_done_run_with_its_validation(tiny_model, tmp_path):
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    records: list[dict] = []
    options = LaunchOptions(output=tmp_path / "runs", device="cpu", max_steps=2, quiet=True)
    console = _quiet()
    run = launch(_request(tiny_model, dataset), options, console=console, on_record=records.append)
    assert run.outcome == "done", console.file.getvalue()
    assert (run.exit_status, run.returncode, run.step) == (0, 0, 2)
    assert run.pid is not None
    assert run.validation is not None and run.validation.steps == 2
    assert (run.run_dir / "validation.json").is_file()
    assert any("loss" in r for r in records)

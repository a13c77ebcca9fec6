"""`advisor launch` end to end on CPU: every method trains a tiny local model with real TRL."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from pathlib import Path

import pytest
import yaml

from advisor.cli import main
from planner.specs import Method
from runners.monitor import KEY_METRICS
from runners.run_folder import read_manifest, read_metrics
from runners.tiny import demo_rows, write_demo_dataset, write_jsonl


def _launch(*flags: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["launch", *flags])
    return rc, out.getvalue(), err.getvalue()


def _flags(model: Path, dataset: Path, method: str, output: Path, steps: int = 2) -> list[str]:
    return [
        "--method", method, "--model", str(model), "--dataset", str(dataset),
        "--tuning", "lora", "--lora-targets", "qv", "--seq-len", "64",
        "--batch-size", "2", "--grad-accum", "1", "--num-generations", "2",
        "--ppo-epochs", "1", "--no-grad-checkpointing", "--device", "cpu",
        "--max-steps", str(steps), "--output", str(output), "--quiet",
    ]  # fmt: skip


def _only_run(output: Path) -> Path:
    runs = [p for p in output.iterdir() if (p / "manifest.json").is_file()]
    assert len(runs) == 1, runs
    return runs[0]


def _assert_trained_with_key_metrics(run: Path, method: str) -> None:
    records = read_metrics(run)
    steps = [r for r in records if any(k in r for k in KEY_METRICS[Method(method)])]
    assert max(r["step"] for r in steps) >= 2
    logged = set().union(*records)
    assert set(KEY_METRICS[Method(method)]) <= logged
    assert (run / "final").is_dir()
    assert json.loads((run / "validation.json").read_text())["steps"] >= 2


TRAINED_ELSEWHERE = {
    Method.dpo: "the --demo test",
    Method.grpo: "the GRPO rewards test",
    Method.ppo: "the Ctrl-C test, which checks PPO's key metrics before it stops the run",
}
"""Methods whose two-step run another launch test makes (and checks the same way)."""


@pytest.mark.slow
@pytest.mark.parametrize("method", [m.value for m in Method if m not in TRAINED_ELSEWHERE])
def test_every_method_trains_two_steps_and_logs_its_key_metrics(method, tiny_model, tmp_path):
    dataset = write_demo_dataset(method, tmp_path / "data")
    rc, _, err = _launch(*_flags(tiny_model, dataset, method, tmp_path / "runs"))
    assert rc == 0, err
    _assert_trained_with_key_metrics(_only_run(tmp_path / "runs"), method)


def test_dry_run_writes_the_run_folder_and_launches_nothing(tiny_model, tmp_path):
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    rc, out, _ = _launch(*_flags(tiny_model, dataset, "dpo", tmp_path / "runs"), "--dry-run")
    assert rc == 0
    run = Path(out.strip().splitlines()[-1])
    names = {p.name for p in run.iterdir()}
    assert {"manifest.json", "runspec.json", "accelerate.yaml", "command.sh", "trl_dpo.yaml"} <= (
        names
    )
    assert not {"metrics.jsonl", "train.log", "checkpoints", "progress.json"} & names
    manifest = read_manifest(run)
    assert manifest.spec.trl_config["use_cpu"] is True
    assert manifest.versions["trl"].startswith("1.12")
    assert len(manifest.hashes.settings) == 64
    assert "runners.train" in manifest.command


@pytest.mark.slow
def test_demo_trains_dpo_on_cpu_with_no_arguments(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rc, out, err = _launch("--demo", "--output", str(tmp_path / "runs"), "--quiet")
    assert rc == 0, err
    run = Path(out.strip().splitlines()[-1])
    records = read_metrics(run)
    assert max(r["step"] for r in records) == 8
    assert any("rewards/margins" in r for r in records)
    _assert_trained_with_key_metrics(run, "dpo")


@pytest.mark.parametrize("method", ["kto", "grpo", "ppo"])
def test_demo_writes_the_method_asked_for_with_its_demo_data(method, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rc, out, err = _launch(
        "--demo", "--method", method, "--output", str(tmp_path / "runs"), "--dry-run"
    )
    assert rc == 0, err
    manifest = read_manifest(Path(out.strip().splitlines()[-1]))
    assert manifest.spec.method is Method(method) and manifest.request.method is Method(method)
    assert Path(manifest.spec.dataset).name == f"{method}.jsonl"


def test_demo_learning_rate_says_why_it_is_not_the_recipes(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    output = str(tmp_path / "runs")
    rc, out, err = _launch("--demo", "--output", output, "--dry-run")
    assert rc == 0, err
    values = {v.name: v for v in read_manifest(Path(out.strip())).spec.starting_values}
    assert values["learning_rate"].value == 5e-4
    assert "given by flag" not in err and "given by flag" not in values["learning_rate"].reason
    assert "learning_rate = 0.0005  (demo: a tiny random-weight model" in err
    rc, out, err = _launch("--demo", "--output", output, "--dry-run", "--learning-rate", "1e-3")
    assert rc == 0, err
    values = {v.name: v for v in read_manifest(Path(out.strip())).spec.starting_values}
    assert (values["learning_rate"].value, values["learning_rate"].reason) == (
        1e-3,
        "given by flag",
    )


def test_report_to_names_the_tracker_and_the_run_in_the_trl_settings(tiny_model, tmp_path):
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    flags = _flags(tiny_model, dataset, "dpo", tmp_path / "runs")
    rc, out, err = _launch(*flags, "--dry-run", "--report-to", "tensorboard")
    assert rc == 0, err
    run = Path(out.strip().splitlines()[-1])
    fields = read_manifest(run).spec.trl_config
    assert (fields["report_to"], fields["run_name"]) == ("tensorboard", run.name)
    cli = yaml.safe_load((run / "trl_dpo.yaml").read_text())
    assert (cli["report_to"], cli["run_name"]) == ("tensorboard", run.name)
    rc, out, err = _launch(*flags, "--dry-run")
    assert rc == 0, err
    assert read_manifest(Path(out.strip().splitlines()[-1])).spec.trl_config["report_to"] == "none"


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is not None, reason="mlflow is installed")
def test_report_to_a_tracker_that_is_not_installed_is_refused_before_anything_is_written(
    tiny_model, tmp_path
):
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    flags = _flags(tiny_model, dataset, "dpo", tmp_path / "runs")
    rc, _, err = _launch(*flags, "--report-to", "mlflow")
    assert rc == 2
    assert "--report-to mlflow: the mlflow package is not installed; pip install mlflow" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_manifest_records_this_tools_version_what_really_runs_and_paths_from_the_run(
    tiny_model, tmp_path
):
    import subprocess
    from importlib import metadata

    dataset = write_demo_dataset("dpo", tmp_path / "runs" / "data")
    rc, out, err = _launch(*_flags(tiny_model, dataset, "dpo", tmp_path / "runs"), "--dry-run")
    assert rc == 0, err
    run = Path(out.strip().splitlines()[-1])
    manifest = read_manifest(run)
    assert manifest.advisor.version == metadata.version("alignment-advisor")
    root = Path(__file__).resolve().parent.parent
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True)
    assert manifest.advisor.commit == (head.stdout.decode().strip() or None)
    # Asked: bf16 on the default A100; ran: fp32 on CPU. Both are recorded, and said.
    assert (manifest.request.gpu, manifest.request.precision.value) == ("a100-80gb", "bf16-mixed")
    ran = manifest.effective
    assert (ran.device, ran.gpu, ran.precision.value, ran.mixed_precision) == (
        "cpu",
        None,
        "fp32",
        "no",
    )
    assert any("fp32" in d and "bf16-mixed" in d for d in ran.differs_from_request)
    assert "this run trains on CPU" in err
    assert manifest.paths.dataset == "../data/dpo.jsonl"
    assert (run / manifest.paths.dataset).resolve() == dataset.resolve()
    assert manifest.spec.dataset == str(dataset.resolve())  # the training reads this one
    assert Path(manifest.paths.model).is_absolute()  # outside the folder that holds the runs


def test_resume_with_changed_data_is_refused(tiny_model, tmp_path, capsys):
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    rc, out, _ = _launch(*_flags(tiny_model, dataset, "dpo", tmp_path / "runs"), "--dry-run")
    run = Path(out.strip().splitlines()[-1])
    rows = [json.loads(line) for line in dataset.read_text().splitlines()]
    write_jsonl(rows[:-1], dataset)
    rc = main(["launch", "--resume", str(run)])
    assert rc == 2
    assert "dataset" in capsys.readouterr().err
    assert not (run / "train.log").exists()


@pytest.mark.slow
def test_launch_stops_on_data_errors_unless_forced(tiny_model, tmp_path, capsys):
    rows = [{"prompt": "a", "chosen": " same", "rejected": " same"}] * 4
    dataset = write_jsonl(rows, tmp_path / "bad.jsonl")
    flags = _flags(tiny_model, dataset, "dpo", tmp_path / "runs")
    assert main(["launch", *flags, "--dry-run"]) == 2
    assert "identical" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    assert main(["launch", *flags, "--dry-run", "--force"]) == 0


def test_launch_needs_a_model_folder(tmp_path, capsys):
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    assert main(["launch", "--model", "7b", "--dataset", str(dataset), "--device", "cpu"]) == 2
    assert "model folder" in capsys.readouterr().err


def test_out_of_memory_names_the_planners_estimate(tiny_model, tmp_path):
    from rich.console import Console

    from planner.plan import estimate
    from planner.specs import PlanRequest
    from runners.launch import follow
    from runners.run_folder import Manifest
    from runners.settings import build_run_spec

    run = tmp_path / "run"
    run.mkdir()
    request = PlanRequest(model="7b", method="dpo", tuning="full", gpu="t4")
    plan = estimate(request)
    script = (
        "import json, pathlib, sys; pathlib.Path(sys.argv[1], 'error.json').write_text("
        "json.dumps({'kind': 'oom', 'message': 'CUDA out of memory'})); sys.exit(1)"
    )
    console = Console(file=io.StringIO(), width=200)
    spec = build_run_spec(
        request, model_path="/m", dataset="/d.jsonl", output_dir=str(run / "ck"), device="cuda"
    )
    command = ["python", "-c", script, str(run)]
    manifest = Manifest.model_construct(spec=spec, request=request, plan=plan, command=command)
    ended = follow(manifest, run, console=console, quiet=True)
    text = console.file.getvalue()
    assert (ended.outcome, ended.exit_status, ended.returncode) == ("oom", 1, 1)
    assert "out of memory" in text
    assert f"{plan.memory.per_gpu_peak_gib:.1f} GiB" in text


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ppo"])  # PPO's own loop; DPO and the rest: test_run_lifecycle
def test_ctrl_c_saves_a_checkpoint_and_stops_cleanly(method, tiny_model, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    dataset = write_demo_dataset(method, tmp_path / "data")
    flags = _flags(tiny_model, dataset, method, tmp_path / "runs", steps=400)
    process = subprocess.Popen(
        [sys.executable, "-m", "advisor.cli", "launch", *flags, "--save-steps", "1000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        # A shell's background jobs inherit SIGINT ignored; a terminal's Ctrl-C is not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    progress = None
    while time.time() < deadline and process.poll() is None:
        found = list((tmp_path / "runs").glob(f"{method}-*/progress.json"))
        if found and json.loads(found[0].read_text() or "{}").get("step", 0) >= 2:
            progress = found[0]
            break
        time.sleep(0.2)
    assert progress is not None, process.communicate()
    os.kill(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "--resume" in err
    logged = set().union(*read_metrics(progress.parent))
    assert set(KEY_METRICS[Method(method)]) <= logged  # PPO's own metrics were logged
    checkpoints = list((progress.parent / "checkpoints").glob("checkpoint-*"))
    assert len(checkpoints) == 1
    state = json.loads((checkpoints[0] / "trainer_state.json").read_text())
    assert 2 <= state["global_step"] < 400


@pytest.mark.slow
def test_full_fine_tuning_dpo_on_conversational_data_reloads_its_reference(tiny_model, tmp_path):
    dataset = write_jsonl(demo_rows("dpo", conversational=True), tmp_path / "chat.jsonl")
    flags = _flags(tiny_model, dataset, "dpo", tmp_path / "runs")
    rc, _, err = _launch(*flags, "--tuning", "full")
    assert rc == 0, err
    run = _only_run(tmp_path / "runs")
    assert read_manifest(run).spec.peft is None
    assert any("rewards/margins" in r for r in read_metrics(run))


@pytest.mark.slow
def test_grpo_rewards_from_a_builtin_a_function_and_a_reward_model(
    tiny_model, tmp_path, monkeypatch
):
    # Run from the user's folder with a relative --output: their reward module sits there.
    (tmp_path / "my_rewards.py").write_text(
        "def short(completions, **kwargs):\n    return [-len(str(c)) / 100 for c in completions]\n"
    )
    monkeypatch.chdir(tmp_path)
    dataset = write_demo_dataset("grpo", Path("data"))
    flags = _flags(tiny_model, dataset, "grpo", Path("runs"))
    rewards = ["--reward", "length", "--reward", "my_rewards:short", "--reward", str(tiny_model)]
    rc, _, err = _launch(*flags, *rewards)
    assert rc == 0, err
    run = _only_run(tmp_path / "runs")
    _assert_trained_with_key_metrics(run, "grpo")
    logged = set().union(*read_metrics(run))
    assert {"rewards/length_reward/mean", "rewards/short/mean"} <= logged
    assert any(k.startswith("rewards/") and "tiny" in k for k in logged)


def test_resume_with_edited_settings_is_refused(tiny_model, tmp_path, capsys):
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    _, out, _ = _launch(*_flags(tiny_model, dataset, "dpo", tmp_path / "runs"), "--dry-run")
    run = Path(out.strip().splitlines()[-1])
    spec = json.loads((run / "runspec.json").read_text())
    spec["trl_config"]["learning_rate"] = 1.0
    (run / "runspec.json").write_text(json.dumps(spec))
    assert main(["launch", "--resume", str(run)]) == 2
    assert "learning_rate" in capsys.readouterr().err


def test_from_a_run_folder_writes_a_fresh_copy_with_its_settings_and_the_flags_given(
    tiny_model, tmp_path
):
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    flags = _flags(tiny_model, dataset, "dpo", tmp_path / "runs", steps=3)
    rc, out, err = _launch(*flags, "--learning-rate", "1e-4", "--save-steps", "1", "--dry-run")
    assert rc == 0, err
    original = Path(out.strip().splitlines()[-1])
    before = {p.name: p.read_bytes() for p in original.iterdir()}
    rc, out, err = _launch("--from", str(original), "--batch-size", "1", "--dry-run")
    assert rc == 0, err
    copy = Path(out.strip().splitlines()[-1])
    assert copy != original and copy.parent == original.parent  # beside it
    assert {p.name: p.read_bytes() for p in original.iterdir()} == before  # untouched
    old, new = read_manifest(original), read_manifest(copy)
    assert new.from_run == str(original)
    assert new.request == old.request.model_copy(update={"batch_size": 1})
    fields = new.spec.trl_config
    assert (fields["max_steps"], fields["save_steps"], fields["per_device_train_batch_size"]) == (
        3,
        1,
        1,
    )
    assert (fields["learning_rate"], new.spec.device) == (1e-4, "cpu")
    values = {v.name: v.reason for v in new.spec.starting_values}
    assert values["learning_rate"] == f"as in {original.name}: given by flag"
    assert fields["run_name"] == copy.name
    # A flag typed with the default value still overrides: --method dpo over a KTO run.
    kto = write_demo_dataset("kto", tmp_path / "data")
    rc, out, err = _launch(
        "--from", str(copy), "--method", "kto", "--dataset", str(kto), "--dry-run"
    )
    assert rc == 0, err
    kto_run = read_manifest(Path(out.strip().splitlines()[-1]))
    assert kto_run.spec.method is Method.kto and kto_run.request.batch_size == 1
    rc, out, err = _launch(
        "--from", str(kto_run.run_dir), "--method", "dpo", "--dataset", str(dataset), "--dry-run"
    )
    assert rc == 0, err
    assert read_manifest(Path(out.strip().splitlines()[-1])).spec.method is Method.dpo


def test_from_a_finished_run_writes_a_fresh_copy_that_may_start_and_leaves_the_original_alone(
    tiny_model, tmp_path
):
    """A finished run (its progress says done, a checkpoint and metrics on disk) copied with
    --from: the copy holds none of them, so its command.sh may start, and the original's files
    are not touched. (Training itself is the launch every other test runs.)"""
    from runners.lifecycle import fresh_start_problem

    original = _dry_run(tiny_model, tmp_path)
    (original / "progress.json").write_text(
        json.dumps({"step": 2, "max_steps": 2, "state": "done"})
    )
    checkpoint = original / "checkpoints" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    (original / "metrics.jsonl").write_text('{"step": 1, "loss": 0.7}\n{"step": 2, "loss": 0.6}\n')
    before = {p: p.read_bytes() for p in original.rglob("*") if p.is_file()}
    assert fresh_start_problem(original, resume=False) is not None  # the original is done
    rc, out, err = _launch("--from", str(original), "--dry-run")
    assert rc == 0, err
    copy = Path(out.strip().splitlines()[-1])
    assert copy != original
    assert not (copy / "checkpoints").exists() or not any((copy / "checkpoints").iterdir())
    assert not (copy / "metrics.jsonl").exists() and not read_metrics(copy)
    assert fresh_start_problem(copy, resume=False) is None
    assert {p: p.read_bytes() for p in original.rglob("*") if p.is_file()} == before


def test_validate_from_a_run_keeps_its_own_short_run(tiny_model, tmp_path):
    import argparse

    from advisor.commands import validate
    from advisor.commands.launch import _copy_of_run

    original = _dry_run(tiny_model, tmp_path)
    parser = argparse.ArgumentParser()
    validate.register(parser)
    _, options = _copy_of_run(parser.parse_args(["--from", str(original)]))
    assert options.max_steps == 10 and options.from_run == original


def test_a_run_folders_manifest_as_plan_launches_a_fresh_copy(tiny_model, tmp_path):
    original = _dry_run(tiny_model, tmp_path)
    rc, out, err = _launch("--plan", str(original / "manifest.json"), "--dry-run")
    assert rc == 0, err
    assert f"launching a fresh copy of {original}" in err
    copy = read_manifest(Path(out.strip().splitlines()[-1]))
    assert copy.from_run == str(original) and copy.request == read_manifest(original).request


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--from", "{tmp}/nowhere"], "--from {tmp}/nowhere: no manifest.json there"),
        (["--from", "{run}", "--demo"], "drop --demo"),
        (["--from", "{run}", "--resume", "{run}"], "drop --resume"),
        (["--from", "{run}", "--batch-size", "0"], "--batch-size:"),
    ],
)
def test_from_refusals_are_one_line_and_write_nothing(argv, message, tiny_model, tmp_path, capsys):
    run = _dry_run(tiny_model, tmp_path)
    argv = [a.format(tmp=tmp_path, run=run) for a in argv]
    capsys.readouterr()
    assert main(["launch", *argv, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [run.name]


def test_launch_takes_a_saved_plan_and_records_the_recommendation(tiny_model, tmp_path):
    plan_json = io.StringIO()
    with contextlib.redirect_stdout(plan_json):
        main(["plan", "--model", str(tiny_model), "--method", "kto", "--batch-size", "2", "--json"])
    plan = tmp_path / "plan.json"
    plan.write_text(plan_json.getvalue())
    recommendation = tmp_path / "rec.json"
    recommendation.write_text(json.dumps({"method": "kto", "ranking": []}))
    dataset = write_demo_dataset("kto", tmp_path / "data")
    rc, out, err = _launch(
        "--plan", str(plan), "--dataset", str(dataset), "--recommendation", str(recommendation),
        "--device", "cpu", "--output", str(tmp_path / "runs"), "--dry-run",
    )  # fmt: skip
    assert rc == 0, err
    manifest = read_manifest(Path(out.strip().splitlines()[-1]))
    assert manifest.spec.method is Method.kto
    assert manifest.spec.trl_config["per_device_train_batch_size"] == 2
    assert manifest.recommendation["method"] == "kto"
    assert manifest.plan is not None and manifest.plan.method is Method.kto


@pytest.mark.parametrize(("gpu", "bf16", "fp16"), [("a100-80gb", True, False), ("t4", False, True)])
def test_dry_run_for_a_gpu_picks_its_precision(tiny_model, tmp_path, gpu, bf16, fp16):
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    flags = [f for f in _flags(tiny_model, dataset, "dpo", tmp_path / "runs") if f != "cpu"]
    flags.remove("--device")
    rc, out, err = _launch(*flags, "--device", "cuda", "--gpu", gpu, "--dry-run")
    assert rc == 0, err
    manifest = read_manifest(Path(out.strip().splitlines()[-1]))
    spec = manifest.spec
    assert (spec.trl_config["bf16"], spec.trl_config["fp16"]) == (bf16, fp16)
    assert manifest.effective.precision.value == ("bf16-mixed" if bf16 else "fp16-mixed")
    assert manifest.effective.device == "cuda" and manifest.effective.gpu.lower() == gpu
    assert "use_cpu" not in spec.trl_config
    assert spec.accelerate["mixed_precision"] == ("bf16" if bf16 else "fp16")


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_deepspeed_zero_stages_train_two_processes_on_cpu(stage, tiny_model, tmp_path):
    """DeepSpeed on its CPU accelerator with gloo, started by accelerate's launcher from the
    written files: ZeRO-2 shards the gradients and optimizer states, ZeRO-3 the weights too."""
    pytest.importorskip(
        "deepspeed",
        reason="DeepSpeed is the optional extra alignment-advisor[deepspeed] and is not "
        "installed here; with it (scripts/setup.sh --dev installs it) these runs train on CPU",
    )
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    flags = _flags(tiny_model, dataset, "dpo", tmp_path / "runs")
    sharded = ["--tuning", "full", "--sharding", stage, "--num-gpus", "2", "--processes", "2"]
    rc, _, err = _launch(*flags, *sharded)
    assert rc == 0, err
    run = _only_run(tmp_path / "runs")
    _assert_trained_with_key_metrics(run, "dpo")
    (checkpoint,) = (run / "checkpoints").glob("checkpoint-*")
    (engine,) = checkpoint.glob("global_step*")  # DeepSpeed's own checkpoint layout
    partitions = sorted(p.name for p in engine.glob("*optim_states.pt"))
    assert len(partitions) == 2, partitions  # one optimizer partition per rank
    config = read_manifest(run).spec.trl_config["deepspeed"]
    assert config["zero_optimization"]["stage"] == int(stage[-1])


def test_multi_node_launch_writes_a_slurm_script_and_trains_nothing_here(tiny_model, tmp_path):
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    flags = _flags(tiny_model, dataset, "dpo", tmp_path / "runs")
    rc, out, err = _launch(*flags, "--nodes", "2", "--num-gpus", "4")
    assert rc == 0, err
    run = Path(out.strip().splitlines()[-1])
    assert (run / "slurm.sbatch").is_file()
    assert "sbatch" in err
    assert not (run / "train.log").exists()


def test_a_repo_id_in_the_local_hf_cache_is_a_launchable_model(tiny_model, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def cached(repo_id, local_files_only=False, **kwargs):
        calls.append((repo_id, local_files_only))
        return str(tiny_model)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", cached)
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    flags = _flags("org/tiny-llama", dataset, "dpo", tmp_path / "runs")
    rc, out, err = _launch(*flags, "--dry-run")
    assert rc == 0, err
    assert calls == [("org/tiny-llama", True)]  # offline: never a download
    assert read_manifest(Path(out.strip().splitlines()[-1])).spec.model == str(tiny_model)


def test_a_detected_gpu_is_planned_by_its_profile_or_its_memory(monkeypatch):
    import torch

    from planner.specs import PlanRequest
    from runners.launch import detected_gpu as _detected_gpu
    from runners.launch import plan_for as _plan

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "NVIDIA A100-SXM4-80GB")
    assert _detected_gpu().name == "A100-80GB"
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "NVIDIA Future 300GB")
    props = type("Props", (), {"total_memory": 300 * 2**30})()
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i=0: props)
    gpu = _detected_gpu()
    assert gpu.name == "NVIDIA Future 300GB" and gpu.memory_gib == 300
    plan = _plan(PlanRequest(model="llama-3-8b", dataset="/no/such.jsonl"), gpu)
    assert plan.gpu.memory_gib == 300 and plan.fits


def _dry_run(tiny_model, tmp_path) -> Path:
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    rc, out, err = _launch(*_flags(tiny_model, dataset, "dpo", tmp_path / "runs"), "--dry-run")
    assert rc == 0, err
    return Path(out.strip().splitlines()[-1])


@pytest.mark.slow
def test_the_written_command_reproduces_the_run(tiny_model, tmp_path):
    import subprocess

    # In a folder whose name is shell code: command.sh quotes it and runs none of it.
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    output = tmp_path / "it's $(touch pwned) `touch pwned2` runs"
    rc, out, err = _launch(*_flags(tiny_model, dataset, "dpo", output), "--dry-run")
    assert rc == 0, err
    run = Path(out.strip().splitlines()[-1])
    result = subprocess.run(
        ["bash", str(run / "command.sh")], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert max(r["step"] for r in read_metrics(run)) == 2
    assert not list(tmp_path.rglob("pwned*"))
    # The same flags launched again give the same numbers: the seed is the run's.
    rc, _, err = _launch(*_flags(tiny_model, dataset, "dpo", tmp_path / "again"))
    assert rc == 0, err

    def numbers(folder: Path) -> list[dict]:
        timed = ("time", "train_runtime", "train_samples_per_second", "train_steps_per_second")
        return [
            {k: v for k, v in r.items() if k not in timed and "runtime" not in k}
            for r in read_metrics(folder)
        ]

    assert numbers(_only_run(tmp_path / "again")) == numbers(run)
    # Run again, it would train over the finished run: refused, nothing touched.
    records = read_metrics(run)
    checkpoint = run / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    written = checkpoint.stat().st_mtime_ns
    again = subprocess.run(["bash", str(run / "command.sh")], capture_output=True, text=True)
    assert again.returncode == 2, again.stderr[-2000:]
    assert again.stderr.strip().splitlines() == [
        f"advisor: {run} already holds a finished run (step 2 of 2); nothing was started: "
        f"start a fresh copy with `advisor launch --from {run}`"
    ]
    assert read_metrics(run) == records and checkpoint.stat().st_mtime_ns == written


@pytest.mark.parametrize(
    ("progress", "said"),
    [
        ({"step": 2, "max_steps": 2, "state": "done"}, "a finished run (step 2 of 2)"),
        ({"step": 3, "max_steps": 40, "state": "stopped"}, "a run that stopped at step 3 of 40"),
    ],
)
def test_command_sh_refuses_to_train_over_an_earlier_run_unless_resuming(
    progress, said, tiny_model, tmp_path
):
    import subprocess

    from runners.lifecycle import fresh_start_problem

    run = _dry_run(tiny_model, tmp_path)
    assert fresh_start_problem(run, resume=False) is None  # a written, untrained folder starts
    (run / "progress.json").write_text(json.dumps(progress))
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 0.7}\n')
    result = subprocess.run(["bash", str(run / "command.sh")], capture_output=True, text=True)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert f"{run} already holds {said}; nothing was started" in line
    assert f"advisor launch --from {run}" in line
    assert ("command.sh --resume" in line) is (progress["state"] != "done")
    assert not (run / "checkpoints").exists()
    assert (run / "metrics.jsonl").read_text() == '{"step": 1, "loss": 0.7}\n'
    assert fresh_start_problem(run, resume=True) is None


def test_the_trainer_itself_refuses_a_fresh_start_over_a_finished_run(tiny_model, tmp_path, capsys):
    import signal

    from runners import train

    run = _dry_run(tiny_model, tmp_path)
    (run / "progress.json").write_text(json.dumps({"step": 2, "max_steps": 2, "state": "done"}))
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        assert train.main([str(run / "runspec.json")]) == 2
    finally:
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])
    assert (
        "already holds a finished run (step 2 of 2); nothing was started" in capsys.readouterr().err
    )
    assert not (run / "checkpoints").exists()


def test_a_dry_run_never_imports_trl(tiny_model, tmp_path):
    """Generating settings stays fast: trl's config classes alone cost ~10 s (FACTS "TRL")."""
    import subprocess
    import sys

    dataset = write_demo_dataset("dpo", tmp_path / "data")
    flags = _flags(tiny_model, dataset, "dpo", tmp_path / "runs")
    script = (
        "import contextlib, io, json, sys\nfrom advisor.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        f"    assert main(['launch', *{flags!r}, '--dry-run']) == 0\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=root
    )
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert not {"trl", "peft"} & loaded


def test_kto_weights_balance_the_labels_and_json_prints_the_manifest(tiny_model, tmp_path):
    rows = demo_rows("kto")
    rows = [r for r in rows if not r["label"]] + [r for r in rows if r["label"]][:4]
    dataset = write_jsonl(rows, tmp_path / "kto.jsonl")  # 4 desirable, 16 undesirable
    flags = _flags(tiny_model, dataset, "kto", tmp_path / "runs")
    rc, out, err = _launch(*flags, "--dry-run", "--json")
    assert rc == 0, err
    manifest = json.loads(out)
    fields = manifest["spec"]["trl_config"]
    assert (fields["desirable_weight"], fields["undesirable_weight"]) == (4.0, 1.0)
    reasons = {v["name"]: v["reason"] for v in manifest["spec"]["starting_values"]}
    assert "4 desirable vs 16 undesirable" in reasons["desirable_weight"]


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--max-steps", "-5", "--max-steps: must be between 1 and 1,000,000,000 steps"),
        ("--save-steps", "0", "--save-steps: must be between 1 and 1,000,000,000 steps"),
        ("--learning-rate", "inf", "--learning-rate: must be between 1e-12 and 10"),
        ("--learning-rate", "nan", "--learning-rate: must be between 1e-12 and 10"),
        ("--processes", "0", "--processes: must be between 1 and 65,536"),
        ("--max-steps", "9" * 5000, "--max-steps: not a number"),
    ],
)
def test_launch_numbers_out_of_range_are_one_line_and_write_nothing(
    flag, value, message, tmp_path, capsys
):
    with pytest.raises(SystemExit) as exit_:
        main(["launch", "--demo", "--dry-run", "--output", str(tmp_path / "runs"), flag, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_plan_file_from_fit_launches_its_first_plan_and_says_so(tiny_model, tmp_path):
    fit_json = io.StringIO()
    with contextlib.redirect_stdout(fit_json):
        main(["plan", "--model", str(tiny_model), "--method", "dpo", "--fit", "--num-gpus", "1",
              "--json"])  # fmt: skip
    plans = json.loads(fit_json.getvalue())
    assert isinstance(plans, list) and plans
    first = plans[0]["request"]
    path = tmp_path / "fit.json"
    path.write_text(fit_json.getvalue())
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    rc, out, err = _launch(
        "--plan", str(path), "--dataset", str(dataset), "--device", "cpu",
        "--output", str(tmp_path / "runs"), "--dry-run",
    )  # fmt: skip
    assert rc == 0, err
    count = f"{len(plans)} plans" if len(plans) > 1 else "1 plan"
    assert f"--plan {path} holds {count} from --fit: launching" in err
    assert f"{first['tuning']}, batch {first['batch_size']}" in err
    request = read_manifest(Path(out.strip().splitlines()[-1])).request
    assert (request.tuning.value, request.batch_size) == (first["tuning"], first["batch_size"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[]", "an empty list of plans"),
        ("[1, 2]", "not a plan JSON"),
        ('"a plan"', "not a plan JSON"),
        ('{"method": "dpo"}', "not a plan JSON"),
        ("[{", "not valid JSON"),
    ],
)
def test_a_plan_file_that_holds_no_plan_is_one_line_and_writes_nothing(
    content, message, tmp_path, capsys
):
    path = tmp_path / "plan.json"
    path.write_text(content)
    argv = ["launch", "--plan", str(path), "--dataset", "d.jsonl", "--output", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()

"""A run's life under faults, through the real launchers on CPU: stops that save, resumes that
finish, a lock on the live run, whole checkpoints, a full disk, moved folders, same seed same
numbers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from runners.lifecycle import EXIT_LOCKED, lock_holder, read_progress
from runners.monitor import is_trainer
from runners.run_folder import read_manifest, read_metrics
from runners.tiny import demo_rows, write_demo_dataset, write_jsonl
from tests.test_launch import _flags, _launch, _only_run

ROOT = Path(__file__).resolve().parent.parent
FAULTS = Path(__file__).resolve().parent / "faults"

pytestmark = pytest.mark.slow


def _start(flags: list[str], **kwargs) -> subprocess.Popen:
    """`advisor launch` as a terminal would start it (SIGINT not ignored)."""
    return subprocess.Popen(
        [sys.executable, "-m", "advisor.cli", "launch", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **kwargs,
    )


def _wait_for_step(output: Path, step: int, process: subprocess.Popen | None = None) -> Path:
    """The run folder once its progress.json reaches `step`."""
    deadline = time.time() + 180
    while time.time() < deadline:
        for run in output.glob("*-*"):
            if read_progress(run).get("step", 0) >= step:
                return run
        if process is not None and process.poll() is not None:
            pytest.fail(f"the launch ended early: {process.communicate()}")
        time.sleep(0.1)
    pytest.fail(f"no run in {output} reached step {step}")


def _trainers(run: Path) -> list[psutil.Process]:
    """Live processes training this run folder."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if is_trainer(cmdline) and any(str(run) in part for part in cmdline):
            found.append(process)
    return found


def _logged_steps(run: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run) if "loss" in r]


def _assert_stopped_with_a_checkpoint(run: Path, max_steps: int) -> int:
    progress = read_progress(run)
    assert progress["state"] == "stopped", progress
    checkpoints = sorted((run / "checkpoints").glob("checkpoint-*"))
    assert [c.name for c in checkpoints] == [progress["checkpoint"]]
    state = json.loads((checkpoints[0] / "trainer_state.json").read_text())
    assert 2 <= state["global_step"] < max_steps
    assert not (run / "checkpoints" / ".incomplete").exists()
    return state["global_step"]


def _resume_to_the_end(run: Path, max_steps: int) -> None:
    rc, _, err = _launch("--resume", str(run), "--quiet")
    assert rc == 0, err
    assert read_progress(run)["state"] == "done"
    assert _logged_steps(run) == list(range(1, max_steps + 1))  # one record per step


def test_ctrl_c_to_advisor_launch_saves_and_a_copy_of_the_run_resumes(tiny_model, tmp_path):
    """Single process under accelerate's launcher, which kills its child 5 s after a signal of
    its own: the launch signals the trainer alone. The stopped run is copied elsewhere and
    resumes into the copy (SIGTERM, resuming in place, is the two-process test's). The data is
    a save_to_disk folder, into which TRL's tokenizing writes cache files: the resume does not
    take them for changed data."""
    import datasets

    dataset = tmp_path / "data" / "pairs"
    datasets.Dataset.from_list(demo_rows("dpo")).save_to_disk(dataset)
    flags = _flags(tiny_model, dataset, "dpo", tmp_path / "runs", steps=16)
    process = _start([*flags, "--save-steps", "1000"])
    run = _wait_for_step(tmp_path / "runs", 2, process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert f"advisor launch --resume {run}" in err
    step = _assert_stopped_with_a_checkpoint(run, 16)
    assert list(dataset.glob("cache-*.arrow"))  # written into the dataset's folder
    # A stopped run copied elsewhere (another disk, another machine) resumes into the copy
    # and leaves the original as it was.
    copy = tmp_path / "elsewhere" / run.name
    shutil.copytree(run, copy)
    _resume_to_the_end(copy, 16)
    assert (copy / "final").is_dir()
    original = sorted(p.name for p in (run / "checkpoints").glob("checkpoint-*"))
    assert original == [f"checkpoint-{step}"] and not (run / "final").exists()


def test_two_fsdp2_processes_stop_at_the_same_step_and_resume_together(tiny_model, tmp_path):
    """SIGTERM, what a scheduler sends before its time limit, to a two-process FSDP2 launch
    (accelerate's launcher, fully_shard over gloo on CPU): every rank saves the sharded state
    at the same step, and the run resumes in place from it."""
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    flags = _flags(tiny_model, dataset, "dpo", tmp_path / "runs", steps=20)
    sharded = ["--tuning", "full", "--sharding", "fsdp", "--num-gpus", "2"]
    process = _start([*flags, *sharded, "--save-steps", "1000", "--processes", "2"])
    run = _wait_for_step(tmp_path / "runs", 2, process)
    assert len(_trainers(run)) == 2
    assert "accelerate.commands.launch" in read_manifest(run).command
    assert read_manifest(run).spec.accelerate["fsdp_config"]["fsdp_version"] == 2
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    _assert_stopped_with_a_checkpoint(run, 20)
    assert not _trainers(run)
    (checkpoint,) = (run / "checkpoints").glob("checkpoint-*")
    assert (checkpoint / "pytorch_model_fsdp.bin").is_file()  # accelerate's FSDP save
    _resume_to_the_end(run, 20)
    assert {r["world_size"] for r in read_metrics(run) if "loss" in r} == {2}


FAKE_SLURM = Path(__file__).parent / "fixtures" / "fake_slurm"


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_under_slurm_save_on_the_time_limit_signal_requeue_and_finish(
    tiny_model, tmp_path
):
    """The generated two-node files, run as SLURM runs them (srun and scontrol stand-ins on one
    machine: each "node" runs command.sh with its SLURM_NODEID against 127.0.0.1). The signal
    SLURM sends ahead of the time limit (--signal=B:TERM) makes every rank save at one step and
    the job requeue; the requeued job resumes and finishes at the planned step count."""
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    flags = _flags(tiny_model, dataset, "dpo", tmp_path / "runs", steps=20)
    rc, out, err = _launch(*flags, "--nodes", "2", "--save-steps", "1000", "--dry-run")
    assert rc == 0, err
    run = Path(out.strip().splitlines()[-1])
    assert "--signal=B:TERM@" in (run / "slurm.sbatch").read_text()
    log = tmp_path / "slurm.log"
    env = os.environ | {
        "PATH": f"{FAKE_SLURM}{os.pathsep}{os.environ['PATH']}",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NODELIST": "node[0-1]",
        "SLURM_NNODES": "2",
        "MASTER_PORT": str(_free_port()),
        "FAKE_SLURM_LOG": str(log),
    }
    job = subprocess.Popen(
        ["bash", str(run / "slurm.sbatch")], env=env, cwd=tmp_path, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    _wait_for_step(tmp_path / "runs", 2, job)
    assert len(_trainers(run)) == 2
    job.send_signal(signal.SIGTERM)  # what SLURM sends the batch shell ahead of the limit
    out, err = job.communicate(timeout=180)
    assert job.returncode == 0, err
    assert "every node saves a checkpoint" in out
    assert log.read_text() == "requeue 4242\n"
    _assert_stopped_with_a_checkpoint(run, 20)
    assert not _trainers(run)
    requeued = subprocess.run(
        ["bash", str(run / "slurm.sbatch")], env=env | {"SLURM_RESTART_COUNT": "1"},
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert requeued.returncode == 0, requeued.stderr
    assert read_progress(run)["state"] == "done"
    assert _logged_steps(run) == list(range(1, 21))
    assert {r["world_size"] for r in read_metrics(run) if "loss" in r} == {2}


def test_the_wizards_stop_saves_a_checkpoint(tiny_model, tmp_path, monkeypatch):
    """^x in the wizard stops the run it launched in its own process with a checkpoint (the
    resume of a stopped run is the signal tests')."""
    from advisor.wizard.screens.run import RunScreen
    from advisor.wizard.session import WizardSession
    from planner.specs import PlanRequest
    from runners.launch import LaunchOptions

    dataset = write_demo_dataset("dpo", tmp_path / "data")
    request = PlanRequest(
        method="dpo", model=str(tiny_model), dataset=str(dataset), tuning="lora",
        lora_targets="qv", seq_len=64, batch_size=2, grad_accum=1, grad_checkpointing=False,
    )  # fmt: skip
    options = LaunchOptions(
        output=tmp_path / "runs", device="cpu", max_steps=40, save_steps=1000, quiet=True
    )
    screen = RunScreen(
        WizardSession(request=request), options
    )  # the launch runs in the wizard's own process
    monkeypatch.setattr(screen, "refresh_bindings", lambda: None)
    screen.start()
    _wait_for_step(tmp_path / "runs", 2)
    screen.action_stop()  # what ^x does
    screen.thread.join(timeout=180)
    assert screen.exit_status == 130, screen.log_path.read_text()
    run = _only_run(tmp_path / "runs")
    assert screen.run.outcome == "stopped" and screen.run.run_dir == run
    assert screen.run.pid is not None and screen.run.returncode == 130
    _assert_stopped_with_a_checkpoint(run, 40)
    assert screen.run.checkpoint == read_progress(run)["checkpoint"]


def test_ctrl_c_in_the_terminal_running_command_sh_saves(tiny_model, tmp_path):
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    flags = _flags(tiny_model, dataset, "dpo", tmp_path / "runs", steps=40)
    rc, out, err = _launch(*flags, "--save-steps", "1000", "--dry-run")
    assert rc == 0, err
    run = Path(out.strip().splitlines()[-1])
    terminal = subprocess.Popen(
        ["bash", str(run / "command.sh")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own foreground group, as in a terminal
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    _wait_for_step(tmp_path / "runs", 2, terminal)
    os.killpg(terminal.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group
    _, err = terminal.communicate(timeout=120)
    assert terminal.returncode != 0
    _assert_stopped_with_a_checkpoint(run, 40)


def test_a_live_run_is_locked_and_a_killed_launcher_stops_its_trainer(tiny_model, tmp_path):
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    flags = _flags(tiny_model, dataset, "dpo", tmp_path / "runs", steps=400)
    process = _start([*flags, "--save-steps", "1000"])
    run = _wait_for_step(tmp_path / "runs", 2, process)
    trainer = _trainers(run)[0]
    assert lock_holder(run) == f"PID {trainer.pid} on host {os.uname().nodename}"
    rc, _, err = _launch("--resume", str(run), "--quiet")
    assert rc == 2 and f"PID {trainer.pid}" in err
    second = subprocess.run(
        [sys.executable, "-m", "runners.train", str(run / "runspec.json"), "--resume"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert second.returncode == EXIT_LOCKED
    assert f"PID {trainer.pid}" in second.stderr
    process.kill()  # SIGKILL: the launcher can do nothing about it
    trainer.wait(timeout=120)
    assert not _trainers(run)  # no orphan keeps training
    _assert_stopped_with_a_checkpoint(run, 400)
    assert lock_holder(run) is None


def test_a_crash_resumes_past_an_unreadable_and_an_incomplete_checkpoint(
    tiny_model, tmp_path, monkeypatch
):
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    flags = _flags(tiny_model, dataset, "dpo", tmp_path / "runs", steps=6)
    monkeypatch.setenv("ADVISOR_TEST_CRASH_AFTER_SAVE", "4")
    rc, _, _ = _launch(*flags, "--save-steps", "2")
    assert rc != 0
    monkeypatch.delenv("ADVISOR_TEST_CRASH_AFTER_SAVE")
    run = _only_run(tmp_path / "runs")
    assert _logged_steps(run) == [1, 2, 3, 4]
    adapter = run / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[: adapter.stat().st_size // 2])  # corrupted
    (run / "checkpoints" / "checkpoint-5").mkdir()  # a save that never completed
    rc, _, err = _launch("--resume", str(run), "--quiet")
    assert rc == 0, err
    assert "skipping checkpoint-5: it has no trainer_state.json" in err
    assert "skipping checkpoint-4: adapter_model.safetensors is" in err
    assert "resuming" in err and "from checkpoint-2" in err
    assert _logged_steps(run) == [1, 2, 3, 4, 5, 6]  # steps 3-4 trained again, logged once
    state = json.loads((run / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6  # finished at the planned step
    rc, _, err = _launch("--resume", str(run), "--quiet")
    assert rc == 0 and "already finished at step 6" in err


def test_a_full_disk_while_checkpointing_is_one_line_and_the_run_resumes(
    tiny_model, tmp_path, monkeypatch
):
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    flags = _flags(tiny_model, dataset, "dpo", tmp_path / "runs", steps=4)
    monkeypatch.setenv("PYTHONPATH", str(FAULTS))
    monkeypatch.setenv("ADVISOR_FAULT_ENOSPC_ON_SAVE", "2")  # checkpoint-2 saves, -4 does not
    rc, _, err = _launch(*flags, "--save-steps", "2")
    assert rc == 1
    run = _only_run(tmp_path / "runs")
    message = [line for line in err.splitlines() if "no space left" in line]
    assert message == [
        f"stopped: no space left on the disk while writing checkpoint-4 in {run}/checkpoints; "
        "the partial checkpoint was removed"
    ]
    assert "Traceback" not in err
    assert sorted(p.name for p in (run / "checkpoints").glob("*checkpoint*")) == ["checkpoint-2"]
    assert not (run / "checkpoints" / ".incomplete").exists()
    monkeypatch.delenv("ADVISOR_FAULT_ENOSPC_ON_SAVE")
    _resume_to_the_end(run, 4)


def test_a_nan_loss_fails_the_run_at_its_step_and_names_the_likely_cause(
    tiny_model, tmp_path, monkeypatch
):
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    flags = _flags(tiny_model, dataset, "dpo", tmp_path / "runs", steps=6)
    monkeypatch.setenv("PYTHONPATH", str(FAULTS))
    monkeypatch.setenv("ADVISOR_FAULT_NAN_FROM_STEP", "3")  # a weight turns NaN before step 3
    rc, _, err = _launch(*flags)
    assert rc == 1, err
    run = _only_run(tmp_path / "runs")
    # The gradient norm says it: the Trainer logs a NaN step's loss as the mean of the steps
    # before it (`logging_nan_inf_filter`).
    said = (
        "stopped at step 3: the gradient norm is NaN — usually rows with no completion tokens "
        "left after truncation (run `advisor check-data` on the dataset), or a learning rate "
        "too high"
    )
    assert [line for line in err.splitlines() if "NaN" in line] == [f"training failed: {said}"]
    assert f"advisor: {said}" in (run / "train.log").read_text()
    assert read_progress(run)["state"] == "failed"
    assert not (run / "final").exists()
    # metrics.jsonl stays strict JSON: what was NaN is written as null
    lines = (run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line, parse_constant=_refuse) for line in lines]
    assert [(r["step"], r["grad_norm"] is None) for r in records] == [
        (1, False),
        (2, False),
        (3, True),
    ]


def _refuse(constant: str):
    raise ValueError(f"{constant} is not JSON")


def test_a_library_shadowed_by_the_working_folder_is_refused(tiny_model, tmp_path, monkeypatch):
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    rc, out, err = _launch(*_flags(tiny_model, dataset, "dpo", tmp_path / "old"), "--dry-run")
    assert rc == 0, err
    stopped = Path(out.strip().splitlines()[-1])
    (stopped / "checkpoints" / "checkpoint-1").mkdir(parents=True)  # a run to resume
    (stopped / "checkpoints" / "checkpoint-1" / "trainer_state.json").write_text(
        json.dumps({"global_step": 1, "max_steps": 2})
    )
    (tmp_path / "accelerate").mkdir()
    (tmp_path / "accelerate" / "__init__.py").write_text("")
    monkeypatch.chdir(tmp_path)
    rc, _, err = _launch(*_flags(tiny_model, dataset, "dpo", tmp_path / "runs"))
    assert rc == 2
    assert "accelerate/ in the working folder would be imported" in err
    assert not (tmp_path / "runs").exists()
    rc, _, err = _launch("--resume", str(stopped), "--quiet")
    assert rc == 2
    assert "accelerate/ in the working folder would be imported" in err
    assert not (stopped / "train.log").exists()


def test_a_run_folder_with_shell_characters_writes_a_slurm_script_that_runs_no_code(
    tiny_model, tmp_path
):
    """command.sh in such a folder trains and runs no code: tests/test_launch.py's
    written-command test runs it from one."""
    dataset = write_jsonl(demo_rows("dpo"), tmp_path / "pairs.jsonl")
    output = tmp_path / "it's $(touch pwned) `touch pwned2` runs"
    flags = _flags(tiny_model, dataset, "dpo", output)
    rc, out, err = _launch(*flags, "--dry-run", "--nodes", "2", "--num-gpus", "2")
    assert rc == 0, err
    sbatch = (Path(out.strip().splitlines()[-1]) / "slurm.sbatch").read_text()
    assert subprocess.run(["bash", "-n"], input=sbatch, text=True).returncode == 0
    assert not list(tmp_path.rglob("pwned*"))


def test_a_newline_in_the_output_folder_is_refused(tiny_model, tmp_path):
    dataset = write_demo_dataset("dpo", tmp_path / "data")
    output = tmp_path / "runs\n# rm -rf x"
    rc, _, err = _launch(*_flags(tiny_model, dataset, "dpo", output), "--dry-run")
    assert rc == 2
    assert "newline or control character" in err
    assert [p.name for p in tmp_path.iterdir()] == ["data"]

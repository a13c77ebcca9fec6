"""The pieces of a run's life that need no training: checkpoint checks, the run lock, stop
requests, metrics after a resume, shadowed libraries, which process is a rank."""

from __future__ import annotations

import errno
import json
import shutil
import signal
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from runners.checkpoints import (
    checkpoint_problem,
    is_disk_full,
    last_good_checkpoint,
    publish,
)
from runners.lifecycle import RunLock, RunLocked, lock_holder, trim_metrics
from runners.monitor import is_trainer, shadowed_libraries
from runners.train import StopRequest


def _safetensors(path: Path, payload: bytes = b"\0" * 16) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, len(payload)]}})
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + payload)


def _checkpoint(folder: Path, step: int) -> Path:
    checkpoint = folder / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    _safetensors(checkpoint / "adapter_model.safetensors")
    with zipfile.ZipFile(checkpoint / "optimizer.pt", "w") as archive:
        archive.writestr("archive/data.pkl", b"state")
    return checkpoint


def test_a_whole_checkpoint_has_no_problem(tmp_path):
    assert checkpoint_problem(_checkpoint(tmp_path, 4)) is None


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda c: (c / "trainer_state.json").unlink(), "no trainer_state.json"),
        (lambda c: (c / "trainer_state.json").write_text("{"), "trainer_state.json is not valid"),
        (
            lambda c: (c / "trainer_state.json").write_text('{"global_step": 2}'),
            "says step 2, not 4",
        ),
        (
            lambda c: (c / "adapter_model.safetensors").write_bytes(
                (c / "adapter_model.safetensors").read_bytes()[:-3]
            ),
            "adapter_model.safetensors is shorter or longer than its header says",
        ),
        (
            lambda c: (c / "adapter_model.safetensors").write_bytes(b"\xff" * 40),
            "adapter_model.safetensors is header length is wrong",
        ),
        (
            lambda c: (c / "optimizer.pt").write_bytes((c / "optimizer.pt").read_bytes()[:20]),
            "optimizer.pt is not a readable torch file",
        ),
    ],
)
def test_a_damaged_checkpoint_names_the_damaged_file(tmp_path, damage, problem):
    checkpoint = _checkpoint(tmp_path, 4)
    damage(checkpoint)
    assert problem in checkpoint_problem(checkpoint)


def test_resume_takes_the_newest_whole_checkpoint_and_says_what_it_skipped(tmp_path):
    _checkpoint(tmp_path, 2)
    _checkpoint(tmp_path, 10)
    (tmp_path / "checkpoint-10" / "optimizer.pt").write_bytes(b"cut")
    (tmp_path / "checkpoint-12").mkdir()
    (tmp_path / ".incomplete" / "checkpoint-14").mkdir(parents=True)
    found, skipped = last_good_checkpoint(tmp_path)
    assert found == tmp_path / "checkpoint-2"  # numeric order: 10 and 12 are newer than 2
    assert [s.split(":")[0] for s in skipped] == [
        "skipping checkpoint-12",
        "skipping checkpoint-10",
    ]
    assert last_good_checkpoint(tmp_path / "none") == (None, [])


def test_publishing_a_step_again_replaces_the_old_checkpoint(tmp_path):
    old = _checkpoint(tmp_path, 4)
    (old / "optimizer.pt").write_bytes(b"damaged")
    staged = _checkpoint(tmp_path / ".incomplete", 4)
    publish(staged, old)
    assert checkpoint_problem(old) is None
    assert not staged.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".incomplete", "checkpoint-4"]


def test_a_full_disk_is_recognised_through_the_libraries_wrappers():
    full = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise full
        except OSError as error:
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected") from error
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped)
    assert is_disk_full(
        RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
    )
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(ValueError("shape mismatch"))


def test_resumed_steps_keep_one_metrics_record_each(tmp_path):
    lines = [json.dumps({"step": s, "loss": s}) for s in (1, 2, 3, 4)] + ['{"step": 5, "lo']
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines))
    trim_metrics(tmp_path, 2)
    kept = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in kept] == [1, 2]
    trim_metrics(tmp_path / "no-run", 2)  # no metrics yet: nothing to do


def test_the_run_lock_names_its_holder_and_is_free_when_the_holder_dies(tmp_path):
    assert lock_holder(tmp_path) is None
    code = (
        "import sys, time\nfrom runners.lifecycle import RunLock\n"
        f"lock = RunLock({str(tmp_path)!r})\nlock.acquire()\nprint('locked', flush=True)\ntime.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert lock_holder(tmp_path).startswith(f"PID {holder.pid} on host ")
        with pytest.raises(RunLocked, match=f"PID {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    assert lock_holder(tmp_path) is None  # the kernel dropped it with the process
    lock = RunLock(tmp_path)
    lock.acquire()
    lock.release()


def test_a_forwarded_signal_is_the_same_stop_and_a_late_one_leaves(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("runners.train.time.monotonic", lambda: clock[0])
    stop = StopRequest()
    assert not stop.requested
    stop.on_signal(signal.SIGINT, None)
    clock[0] += 0.1
    stop.on_signal(signal.SIGTERM, None)  # accelerate's launcher passing the Ctrl-C on
    assert stop.requested and stop.why == "SIGINT"
    clock[0] += 60
    with pytest.raises(KeyboardInterrupt):
        stop.on_signal(signal.SIGINT, None)


def test_files_that_would_shadow_a_library_are_found(tmp_path):
    (tmp_path / "accelerate").mkdir()
    (tmp_path / "accelerate" / "__init__.py").write_text("")
    (tmp_path / "trl.py").write_text("")
    (tmp_path / "peft").mkdir()  # a bare folder is a namespace package: it shadows nothing
    assert shadowed_libraries(tmp_path) == ["accelerate/", "trl.py"]
    project = Path(__file__).resolve().parent.parent
    assert shadowed_libraries(project) == []  # the project's own `runners` is the real one


def test_only_the_training_ranks_are_trainers():
    assert is_trainer(["python", "-u", "-m", "runners.train", "run/runspec.json"])
    launcher = ["python", "-m", "accelerate.commands.launch", "--config_file", "a.yaml"]
    assert not is_trainer([*launcher, "-m", "runners.train", "run/runspec.json"])
    assert not is_trainer(["python", "-m", "torch.distributed.run", "-m", "runners.train"])
    assert not is_trainer(["bash", "command.sh"])


def _strict(line: str) -> dict:
    """A JSON line parsed as strict JSON: NaN and Infinity are refused."""

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(line, parse_constant=refuse)


def test_a_nan_loss_fails_the_run_at_its_step_and_metrics_stay_strict_json(tmp_path):
    from types import SimpleNamespace

    from transformers import TrainerControl

    from planner.specs import Method
    from runners.lifecycle import read_progress
    from runners.train import NonFiniteLoss, metrics_callback

    callback = metrics_callback(tmp_path)
    args = SimpleNamespace(world_size=1, device="cpu")
    state = SimpleNamespace(is_world_process_zero=True, global_step=2, max_steps=10)
    control = TrainerControl()
    callback.on_log(args, state, control, logs={"loss": 0.69, "grad_norm": 1.5})
    assert not control.should_training_stop
    state.global_step = 3
    with pytest.raises(NonFiniteLoss) as stopped:
        callback.on_log(args, state, control, logs={"loss": float("nan"), "grad_norm": 1.5})
    assert str(stopped.value).startswith("stopped at step 3: the loss is NaN — usually rows with")
    assert "advisor check-data" in str(stopped.value)
    assert control.should_training_stop
    assert read_progress(tmp_path)["state"] == "failed"
    state.global_step = 4
    with pytest.raises(NonFiniteLoss, match="step 4: the gradient norm is infinite"):
        callback.on_log(args, state, control, logs={"loss": 0.5, "grad_norm": float("inf")})
    (tmp_path / "grpo").mkdir()
    online = metrics_callback(tmp_path / "grpo", method=Method.grpo)  # no rows to blame
    with pytest.raises(NonFiniteLoss, match="a reward that returned NaN") as stopped:
        online.on_log(args, state, TrainerControl(), logs={"loss": float("nan")})
    assert "check-data" not in str(stopped.value)
    records = [_strict(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"], r["grad_norm"]) for r in records] == [
        (2, 0.69, 1.5),
        (3, None, 1.5),
        (4, 0.5, None),
    ]


def test_a_saved_folders_fingerprint_ignores_the_cache_files_training_writes(tmp_path):
    import datasets

    from runners.data import fingerprint

    rows = [{"prompt": "a", "chosen": " b", "rejected": " c"}]
    folder = tmp_path / "pairs"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(folder)
    before = fingerprint(str(folder))
    (folder / "train" / "cache-0123abcd.arrow").write_bytes(b"tokenized")
    (folder / "cache-4567.arrow").write_bytes(b"tokenized")
    assert fingerprint(str(folder)) == before
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows * 2)}).save_to_disk(
        tmp_path / "more"
    )
    shutil.rmtree(folder / "train")
    shutil.copytree(tmp_path / "more" / "train", folder / "train")
    assert fingerprint(str(folder)) != before


def test_a_large_dataset_says_it_is_being_tokenized_before_the_first_step(tmp_path, capsys):
    from planner.specs import Method
    from runners.lifecycle import read_progress
    from runners.train import LARGE_DATASET_ROWS, Run

    run = Run(tmp_path, resume=False)
    run.preparing(Method.dpo, LARGE_DATASET_ROWS)
    assert capsys.readouterr().err == "" and read_progress(tmp_path) == {}
    run.preparing(Method.dpo, 224_000)
    assert capsys.readouterr().err == (
        "advisor: preparing 224,000 rows for DPO (tokenizing; large datasets take minutes)\n"
    )
    assert read_progress(tmp_path)["state"] == "preparing"

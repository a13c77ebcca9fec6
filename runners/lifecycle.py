"""A run's life as the launcher and the training process both see it: exit statuses, the run
lock, progress.json, and how a stop is asked for.

Imported by the launcher and by the training process, so it stays light (no torch).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

EXIT_OOM = 3
EXIT_DISK_FULL = 4
EXIT_LOCKED = 5
EXIT_BAD_CHECKPOINT = 6
EXIT_NON_FINITE = 7
EXIT_STOPPED = 130
"""The training process's exit statuses. 130: stopped on request after saving, resumable.
(accelerate's and torchrun's launchers turn every non-zero status into 1, so the launcher
reads progress.json and error.json rather than relying on these alone.)"""

CHILD_ENV = {
    "TRL_EXPERIMENTAL_SILENCE": "1",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
"""The training process's environment beyond the caller's: offline (never a download), quiet
TRL. `advisor launch`, command.sh and slurm.sbatch all set it."""

LAUNCHER_PID = "ADVISOR_LAUNCHER_PID"
"""Environment variable: the `advisor launch` process the trainer stops for when it dies."""

STOP_GRACE_SECONDS = 10.0
"""After a first SIGINT/SIGTERM, further ones within this many seconds are the same stop
forwarded by a launcher (a terminal's Ctrl-C reaches launcher and trainer, and accelerate's
launcher then sends SIGTERM); only a signal after it makes the trainer leave without saving."""

LOCK_FILE = "run.lock"
CHECKPOINTS = "checkpoints"
"""The checkpoint folder, relative to the run folder (a moved run folder resumes into itself)."""


def checkpoints_dir(run_dir: Path, output_dir: str = CHECKPOINTS) -> Path:
    """Where a run's checkpoints are: `output_dir` relative to the run folder (an absolute
    `output_dir` from an older run folder is kept as it is)."""
    return Path(run_dir) / output_dir


class RunLocked(RuntimeError):
    """Another live process holds the run folder's lock; the message names it."""


class RunLock:
    """An exclusive lock on RUN_DIR/run.lock, held by the live trainer (flock: the kernel drops
    it when the holder dies, even by SIGKILL). The file says who holds it."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._handle = None

    def acquire(self) -> None:
        """Take the lock or raise RunLocked naming the holder's PID and host."""
        import fcntl

        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise RunLocked(describe_holder(self.path)) from None
        handle.seek(0)
        handle.truncate()
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        handle.write(json.dumps(holder))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.close()
            self._handle = None


def describe_holder(path: Path) -> str:
    """`PID 123 on host gpu-7`, from a lock file's content (or a plain 'another process')."""
    try:
        holder = json.loads(Path(path).read_text(encoding="utf-8"))
        return f"PID {int(holder['pid'])} on host {holder['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def lock_holder(run_dir: Path) -> str | None:
    """Who holds the run folder's lock now (`PID 123 on host x`), or None when nobody does."""
    import fcntl

    path = Path(run_dir) / LOCK_FILE
    if not path.is_file():
        return None
    try:
        with path.open("r", encoding="utf-8") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return describe_holder(path)
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        return None
    return None


def write_progress(run_dir: Path, **fields: Any) -> None:
    """Replace RUN_DIR/progress.json atomically (readers never see half a file)."""
    tmp = Path(run_dir) / "progress.json.tmp"
    tmp.write_text(json.dumps(fields), encoding="utf-8")
    tmp.replace(Path(run_dir) / "progress.json")


def read_progress(run_dir: Path) -> dict[str, Any]:
    """RUN_DIR/progress.json: {step, max_steps, state, checkpoint?}, or {} before the first.
    `state`: preparing (tokenizing the data), running, stopped, done or failed."""
    try:
        data = json.loads((Path(run_dir) / "progress.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def trim_metrics(run_dir: Path, last_step: int) -> None:
    """Drop the metrics.jsonl records of steps after `last_step` (a resume trains them again,
    so each step keeps one record) and any half-written line a crash left."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("step", 0) <= last_step:
            kept.append(line + "\n")
    tmp = path.with_name("metrics.jsonl.tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    tmp.replace(path)


def write_error(run_dir: Path, kind: str, message: str) -> None:
    """RUN_DIR/error.json: what stopped the training, in one line, for the launcher to say."""
    with contextlib.suppress(OSError):  # a full disk must not hide the original error
        (Path(run_dir) / "error.json").write_text(
            json.dumps({"kind": kind, "message": message}), encoding="utf-8"
        )


def read_error(run_dir: Path) -> dict[str, str]:
    """RUN_DIR/error.json as written by `write_error`, or {}."""
    try:
        data = json.loads((Path(run_dir) / "error.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def trained_before(run_dir: Path) -> str | None:
    """What a run folder already holds from an earlier training — `a finished run (step 8 of
    8)`, `a run that stopped at step 3 of 40` — or None when nothing was trained in it yet."""
    run_dir = Path(run_dir)
    progress = read_progress(run_dir)
    folder = run_dir / CHECKPOINTS
    checkpoints = folder.is_dir() and any(folder.glob("checkpoint-*"))
    metrics = run_dir / "metrics.jsonl"
    logged = metrics.is_file() and metrics.stat().st_size > 0
    if not (progress or checkpoints or logged or (run_dir / "final").exists()):
        return None
    step, total = progress.get("step"), progress.get("max_steps")
    at = f"step {step} of {total}" if step is not None and total else f"step {step or '?'}"
    if progress.get("state") == "done":
        return f"a finished run ({at})"
    return f"a run that stopped at {at}"


def fresh_start_problem(run_dir: Path, resume: bool) -> str | None:
    """Why a training must not start in `run_dir` now, in one line, or None: a live trainer
    holds it, or (unless `resume`) an earlier run trained there, which a fresh start would
    overwrite (checkpoints) and mix into (metrics.jsonl)."""
    holder = lock_holder(run_dir)
    if holder is not None:
        return f"{run_dir} is being trained now by {holder}; nothing was started"
    held = None if resume else trained_before(run_dir)
    if held is None:
        return None
    fresh = f"start a fresh copy with `advisor launch --from {run_dir}`"
    if held.startswith("a finished"):
        return f"{run_dir} already holds {held}; nothing was started: {fresh}"
    return (
        f"{run_dir} already holds {held}; nothing was started: continue it with "
        f"`{run_dir}/command.sh --resume`, or {fresh}"
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m runners.lifecycle RUN_DIR [--resume]`: command.sh's check before it starts
    the training; exits 2 with one line when it must not start."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m runners.lifecycle RUN_DIR [--resume]", file=sys.stderr)
        return 2
    problem = fresh_start_problem(Path(args[0]), "--resume" in args[1:])
    if problem:
        print(f"advisor: {problem}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Checkpoints that are either whole or absent: written under a temporary name and renamed when
complete, checked before a resume uses them, and a full disk said in one line.

The checks read headers, not whole files, so they take milliseconds even for a 70B checkpoint:
a safetensors file's JSON header against its size, a torch file's zip directory, every JSON
file parsed. Light at import (no torch); the Trainer mixin imports transformers when it runs.
"""

from __future__ import annotations

import contextlib
import errno
import json
import re
import shutil
import struct
import zipfile
from pathlib import Path

from planner.constants import MIB

STAGING = ".incomplete"
"""Sub-folder of the checkpoint folder where a checkpoint is written before it is renamed."""
PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"


class DiskFull(RuntimeError):
    """The disk filled up while a checkpoint was written; the partial one was removed."""


def step_of(checkpoint: Path) -> int:
    return int(PATTERN.match(Path(checkpoint).name).group(1))


def checkpoints(folder: Path) -> list[Path]:
    """The complete-looking `checkpoint-N` folders in `folder`, oldest step first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if PATTERN.match(p.name) and p.is_dir()]
    return sorted(found, key=step_of)


def _safetensors_problem(path: Path) -> str | None:
    """A safetensors file is an 8-byte header length, a JSON header, then the tensors' bytes:
    the header must parse and the file must be as long as the header says."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return "truncated"
        (length,) = struct.unpack("<Q", head)
        if length > min(size - 8, 100 * MIB):
            return "header length is wrong (truncated or overwritten)"
        try:
            header = json.loads(handle.read(length))
        except ValueError:
            return "header is not readable"
    ends = [
        int(v["data_offsets"][1])
        for k, v in header.items()
        if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v
    ]
    if 8 + length + max(ends, default=0) != size:
        return "shorter or longer than its header says (truncated)"
    return None


def _torch_file_problem(path: Path) -> str | None:
    """torch.save writes a zip archive; its directory sits at the end, so a cut file fails."""
    try:
        with zipfile.ZipFile(path) as archive:
            archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "not a readable torch file (truncated or overwritten)"
    return None


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why `checkpoint` cannot be resumed from (one phrase), or None when it looks whole."""
    checkpoint = Path(checkpoint)
    state = checkpoint / TRAINER_STATE
    if not state.is_file():
        return f"it has no {TRAINER_STATE} (an incomplete save)"
    try:
        for path in sorted(p for p in checkpoint.rglob("*") if p.is_file()):
            suffix = path.suffix.lower()
            problem = None
            if suffix == ".json":
                try:
                    json.loads(path.read_text(encoding="utf-8"))
                except (ValueError, UnicodeDecodeError):
                    problem = "not valid JSON"
            elif suffix == ".safetensors":
                problem = _safetensors_problem(path)
            elif suffix in (".pt", ".pth", ".bin"):
                problem = _torch_file_problem(path)
            if problem:
                return f"{path.relative_to(checkpoint)} is {problem}"
        step = json.loads(state.read_text(encoding="utf-8")).get("global_step")
    except OSError as error:
        return f"it cannot be read ({error.strerror or error})"
    if step != step_of(checkpoint):
        return f"its {TRAINER_STATE} says step {step}, not {step_of(checkpoint)}"
    return None


def last_good_checkpoint(folder: Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint that looks whole, and a message for each newer one skipped."""
    skipped = []
    for checkpoint in reversed(checkpoints(folder)):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return checkpoint, skipped
        skipped.append(f"skipping {checkpoint.name}: {problem}")
    return None, skipped


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` (or one it came from) is a full disk or exhausted quota. torch and
    safetensors wrap the OSError in their own errors, so their messages count too."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(error)
        if "No space left on device" in text or "Disk quota exceeded" in text:
            return True
        if "file write failed" in text:  # torch's PytorchStreamWriter hides the errno
            return True
        error = error.__cause__ or error.__context__
    return False


def publish(staged: Path, final: Path) -> None:
    """Move a complete checkpoint from its staging name into place, replacing an older one of
    the same step (a resume that fell back to an earlier checkpoint saves that step again)."""
    old = None
    if final.exists():
        old = final.with_name(f"{STAGING}-replaced-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    staged.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def install_atomic_checkpoints(trainer) -> None:
    """Make `trainer` write each checkpoint under checkpoints/.incomplete/ and rename it into
    place once every rank has finished writing; a full disk raises DiskFull after the partial
    checkpoint is removed. Works for every TRL trainer, PPO's own loop included: they all save
    through `Trainer._save_checkpoint`."""
    from transformers.trainer_utils import rotate_checkpoints

    save_checkpoint = trainer._save_checkpoint  # the class's own, bound

    def save_atomically(model, trial):
        folder = Path(trainer._get_output_dir(trial=trial))
        staging = folder / STAGING
        name = f"checkpoint-{trainer.state.global_step}"
        if trainer.args.should_save:
            shutil.rmtree(staging / name, ignore_errors=True)
        # The Trainer names the folder from the step; point its parent at the staging area.
        trainer._get_output_dir = lambda trial=None: str(staging)
        try:
            save_checkpoint(model, trial)
        except Exception as error:
            if trainer.args.should_save:
                shutil.rmtree(staging, ignore_errors=True)
            if is_disk_full(error):
                raise DiskFull(
                    f"no space left on the disk while writing {name} in {folder}; "
                    "the partial checkpoint was removed"
                ) from error
            raise
        finally:
            del trainer._get_output_dir
        trainer.accelerator.wait_for_everyone()
        if trainer.args.should_save:
            publish(staging / name, folder / name)
            with contextlib.suppress(OSError):
                staging.rmdir()
            rotate_checkpoints(
                output_dir=str(folder),
                save_total_limit=trainer.args.save_total_limit,
                best_model_checkpoint=trainer.state.best_model_checkpoint,
            )
        trainer.accelerator.wait_for_everyone()

    trainer._save_checkpoint = save_atomically

"""What each training rank measured of its own memory: RUN_DIR/memory/rank{N}.json.

On CUDA, PyTorch's allocator peaks since the training began (`torch.cuda.max_memory_allocated`:
the tensors; `max_memory_reserved`: what the caching allocator holds for them). On CPU, when
asked (`MEASURE_TENSORS`), the tensors live at the peak of one whole training step, counted on
the real tensors by the tracker that traces the plan's step on fake ones (`planner.trace`).
Each rank writes its own file, so nothing has to be gathered; the launcher reads them all.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pydantic import BaseModel, Field

MEMORY_DIR = "memory"

MEASURE_TENSORS = "ADVISOR_MEASURE_TENSORS"
"""Env var: a CPU run that sees it set to 1 counts one training step's tensors (`advisor
validate` sets it; the count slows that one step a little)."""


class RankMemory(BaseModel):
    """One rank's peaks, in bytes; None: not measured on this device."""

    rank: int
    device: str = Field(description="cuda or cpu")
    allocated_peak_bytes: int | None = Field(
        default=None, description="torch.cuda.max_memory_allocated since the training began"
    )
    reserved_peak_bytes: int | None = Field(
        default=None, description="torch.cuda.max_memory_reserved since the training began"
    )
    tensor_peak_bytes: int | None = Field(
        default=None, description="CPU: tensors live at the peak of the measured step"
    )
    tensor_peak_step: int | None = Field(
        default=None, description="the optimizer step (1-based) whose tensors were counted"
    )
    batch_shapes: dict[str, list[int]] = Field(
        default_factory=dict,
        description="the counted step's inputs (real batches are padded to their longest row, "
        "not to the planned length)",
    )
    tensor_peak_by_kind: dict[str, int] = Field(
        default_factory=dict,
        description="the tensors at that peak by kind (parameters, gradients, activations, ...)",
    )


def rank_file(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / MEMORY_DIR / f"rank{rank}.json"


def write_rank_memory(run_dir: Path, record: RankMemory) -> None:
    """Write (replace) this rank's file whole; a failure to write only loses the measurement."""
    path = rank_file(run_dir, record.rank)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".json.partial")
        partial.write_text(record.model_dump_json(indent=2), encoding="utf-8")
        os.replace(partial, path)


def read_rank_memory(run_dir: Path) -> list[RankMemory]:
    """Every rank's record in the run folder, by rank; unreadable files are skipped."""
    records = []
    for path in sorted((Path(run_dir) / MEMORY_DIR).glob("rank*.json")):
        with contextlib.suppress(OSError, ValueError):
            records.append(RankMemory.model_validate_json(path.read_text(encoding="utf-8")))
    return sorted(records, key=lambda record: record.rank)

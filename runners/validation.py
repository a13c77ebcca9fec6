"""What a run measured against what the plan estimated: GPU memory samples and step time.

NVML reports memory used per GPU by every process on it, which is what a user compares with
the card (DESIGN "per_gpu_peak_gib"); on CPU there is nothing to sample.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from planner.specs import Plan

GIB = 2**30


def nvml_reader() -> Callable[[], list[dict[str, int]]] | None:
    """A function returning memory used per GPU via NVML, or None where NVML has no GPU."""
    from planner.nvml import memory_reader

    read = memory_reader()
    if read is None:
        return None
    return lambda: [
        {"index": index, "used_bytes": used, "total_bytes": total} for index, used, total in read()
    ]


class GpuSampler:
    """Appends one line per sample to gpu.jsonl and keeps the highest memory used on any GPU."""

    def __init__(self, path: Path, read: Callable[[], list[dict[str, int]]] | None):
        self.path = path
        self.read = read
        self.peak_bytes: int | None = None
        self.last_bytes = 0

    def sample(self) -> None:
        if self.read is None:
            return
        gpus = self.read()
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"time": time.time(), "gpus": gpus}) + "\n")
        used = max((g["used_bytes"] for g in gpus), default=0)
        self.last_bytes = used
        self.peak_bytes = max(self.peak_bytes or 0, used)

    def status(self) -> str:
        """`GPU 12.3/14.0 GiB` (now / peak so far), or '' before the first sample."""
        if self.peak_bytes is None:
            return ""
        return f"GPU {self.last_bytes / GIB:.1f}/{self.peak_bytes / GIB:.1f} GiB"


class Validation(BaseModel):
    """Estimated vs measured peak memory per GPU and seconds per optimizer step."""

    device: str
    estimated_peak_gib: float | None
    measured_peak_gib: float | None
    estimated_step_seconds: float | None
    measured_step_seconds: float | None
    steps: int
    note: str = ""


def measured_step_seconds(records: list[dict[str, Any]]) -> float | None:
    """Median wall time between consecutive step logs (the first step's warm-up excluded)."""
    times: dict[int, float] = {}
    for record in records:
        if "time" in record and "step" in record and "train_runtime" not in record:
            times.setdefault(record["step"], record["time"])
    steps = sorted(times)
    gaps = [(times[b] - times[a]) / (b - a) for a, b in itertools.pairwise(steps) if b > a]
    return round(statistics.median(gaps), 4) if gaps else None


def validation_record(
    device: str, plan: Plan | None, records: list[dict[str, Any]], peak_bytes: int | None
) -> Validation:
    steps = max((r.get("step", 0) for r in records), default=0)
    note = ""
    if device == "cpu":
        note = "trained on CPU: the plan's GPU estimates are not comparable with these numbers"
    return Validation(
        device=device,
        estimated_peak_gib=plan.memory.per_gpu_peak_gib if plan else None,
        measured_peak_gib=round(peak_bytes / GIB, 2) if peak_bytes else None,
        estimated_step_seconds=plan.time.step_seconds if plan else None,
        measured_step_seconds=measured_step_seconds(records),
        steps=steps,
        note=note,
    )

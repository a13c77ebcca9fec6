"""What a run folder says while `advisor launch` trains: step, ETA, key metrics, and the loss and
GPU-memory series the wizard charts. Reads the files the runners write; no Textual here."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planner.constants import GIB
from planner.nvml import device_label
from planner.specs import Method


def key_metrics(method: Method) -> tuple[str, ...]:
    """The metrics `advisor launch`'s live view shows for a method."""
    from runners.monitor import KEY_METRICS

    return KEY_METRICS.get(method, ("loss",))


def _read_lines(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Complete JSON lines added to `path` since byte `offset`, and the new offset."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return [], offset
    complete = data[: data.rfind(b"\n") + 1]
    records = []
    for line in complete.decode("utf-8", errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records, offset + len(complete)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _device(gpu: dict[str, Any]) -> str:
    """`GPU 1`, or `GPU 0 MIG 2` for a MIG instance, as gpu.jsonl names devices."""
    parent = gpu.get("parent")
    return device_label(gpu.get("index", "?"), parent if isinstance(parent, int) else None)


@dataclass
class RunWatch:
    """A run folder followed as it grows; `poll()` reads what is new."""

    run_dir: Path
    method: Method
    step: int = 0
    max_steps: int | None = None
    latest: dict[str, Any] = field(default_factory=dict)
    loss: list[float] = field(default_factory=list)
    gpu_gib: list[float] = field(default_factory=list)
    gpu_errors: dict[str, str] = field(default_factory=dict)
    """Devices that failed to answer in the latest GPU sample: `GPU 1` -> NVML's error."""
    gpu_measured_by: str | None = None
    """How `gpu_gib` counts: 'per-process', 'used minus baseline' or 'used' (None: unsaid)."""
    step_times: dict[int, float] = field(default_factory=dict)
    validation: dict[str, Any] | None = None
    _metrics_at: int = 0
    _gpu_at: int = 0

    def poll(self) -> None:
        """Read new metrics, GPU samples, progress and (at the end) the validation record."""
        records, self._metrics_at = _read_lines(self.run_dir / "metrics.jsonl", self._metrics_at)
        for record in records:
            if "train_runtime" in record:
                continue  # the trainer's closing summary, not a step
            self.latest.update(record)
            if "step" in record:
                self.step = max(self.step, int(record["step"]))
                if "time" in record:
                    self.step_times.setdefault(int(record["step"]), float(record["time"]))
            if record.get("max_steps"):
                self.max_steps = int(record["max_steps"])
            loss = record.get("loss", record.get(key_metrics(self.method)[0]))
            if isinstance(loss, int | float):
                self.loss.append(float(loss))
        samples, self._gpu_at = _read_lines(self.run_dir / "gpu.jsonl", self._gpu_at)
        for sample in samples:
            self._gpu_sample(sample)
        try:
            progress = json.loads((self.run_dir / "progress.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            progress = {}
        self.step = max(self.step, int(progress.get("step") or 0))
        self.max_steps = progress.get("max_steps") or self.max_steps
        try:
            self.validation = json.loads(
                (self.run_dir / "validation.json").read_text(encoding="utf-8")
            )
        except (OSError, ValueError):
            self.validation = None

    def _gpu_sample(self, sample: Any) -> None:
        """One gpu.jsonl line: the run's memory (`run_bytes`; older files: the most used on
        one GPU) and which devices failed. The reading before launch is not a sample."""
        if not isinstance(sample, dict) or sample.get("baseline"):
            return
        gpus = [g for g in sample.get("gpus") or [] if isinstance(g, dict)]
        if gpus:  # a line that only says sampling failed leaves the devices' state as it was
            self.gpu_errors = {_device(g): str(g["error"]) for g in gpus if g.get("error")}
        if sample.get("measured_by"):
            self.gpu_measured_by = str(sample["measured_by"])
        run_bytes = sample.get("run_bytes")
        if not _number(run_bytes):
            readings = [g["used_bytes"] for g in gpus if _number(g.get("used_bytes"))]
            run_bytes = max(readings, default=None)
        if run_bytes is not None:
            self.gpu_gib.append(run_bytes / GIB)

    def seconds_per_step(self) -> float | None:
        """Median wall time between logged steps (None before two steps), as the CLI's ETA."""
        from runners.monitor import median_step_seconds

        return median_step_seconds(self.step_times)

    def eta_seconds(self) -> float | None:
        """Time left at the median step time, when the total is known."""
        per_step = self.seconds_per_step()
        if per_step is None or not self.max_steps:
            return None
        return max(0.0, (self.max_steps - self.step) * per_step)

    def metrics(self) -> list[tuple[str, Any]]:
        """The method's key metrics seen so far, in the live view's order."""
        return [(k, self.latest[k]) for k in key_metrics(self.method) if k in self.latest]

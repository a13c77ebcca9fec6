"""What a run measured against what the plan estimated: GPU memory samples and step time.

The launcher samples NVML about once a second into gpu.jsonl (`GpuSampler`). The measured peak
is this run's: where NVML attributes memory to processes, the memory of the run's own
processes; else the memory in use minus what was in use before launch. Either way it is per
GPU (or MIG instance), the number a user compares with the card (DESIGN "per_gpu_peak_gib");
on CPU there is nothing to sample.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from planner.constants import GIB, runtime
from planner.nvml import NvmlBackend, device_label, device_reader, error_text
from planner.specs import Plan, PlanRequest

MeasuredBy = Literal["per-process", "used minus baseline", "used"]
PER_PROCESS: MeasuredBy = "per-process"
MINUS_BASELINE: MeasuredBy = "used minus baseline"
ALL_USED: MeasuredBy = "used"

HOW_MEASURED: dict[MeasuredBy, str] = {
    PER_PROCESS: "the memory NVML attributes to this run's processes; other processes on the "
    "GPUs are not counted",
    MINUS_BASELINE: "memory in use minus what was in use before launch; memory that other "
    "processes took meanwhile counts too",
    ALL_USED: "all memory in use, other processes' included (no reading was taken before launch)",
}
"""What each way of measuring the peak counts, in the words validation.json carries."""


def nvml_reader(backend: NvmlBackend | None = None) -> Callable[[], list[dict[str, Any]]] | None:
    """A function returning one reading per watched device (a GPU, or a MIG instance) via NVML,
    as gpu.jsonl stores them, or None where NVML has no GPU. `backend`: a planner.nvml backend
    (tests pass a FakeBackend); the real one by default."""
    read = device_reader(backend)
    if read is None:
        return None

    def readings() -> list[dict[str, Any]]:
        # Top-level fields that say nothing are left out; a process's unknown memory stays null.
        return [
            {key: value for key, value in reading.model_dump().items() if value is not None}
            for reading in read()
        ]

    return readings


def process_tree(root: int | None = None) -> set[int]:
    """PIDs of `root` (default: this process) and all its descendants, read from /proc; just
    `root` where there is no /proc."""
    root = os.getpid() if root is None else root
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return {root}
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
            # "pid (comm) state ppid …": comm may hold spaces and parentheses.
            ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # it exited while we looked
        children.setdefault(ppid, []).append(int(entry))
    tree: set[int] = set()
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo.extend(children.get(pid, []))
    return tree


def pid_exists(pid: int) -> bool:
    """Whether `pid` names a process in this PID namespace (in a container NVML lists host
    PIDs, which are not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:  # exists, but not ours to signal
        return True
    except (OSError, OverflowError):  # no such process, or not a PID at all
        return False
    return True


def _label(gpu: dict[str, Any]) -> str:
    parent = gpu.get("parent")
    return device_label(gpu.get("index", "?"), parent if isinstance(parent, int) else None)


def _key(gpu: dict[str, Any]) -> tuple[Any, Any]:
    return gpu.get("index"), gpu.get("parent")


def _bytes(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _plain(text: str) -> str:
    """A message safe in the live view, whose Rich markup would read `[Errno 28]` as a tag."""
    return text.replace("[", "(").replace("]", ")")


class GpuSampler:
    """Samples every GPU into gpu.jsonl about once a second and keeps this run's peak memory.

    `read`: `nvml_reader()`, or None (nothing to sample: CPU, no NVML). `pids`: returns the
    PIDs of the launcher and its descendants (`process_tree`); without it the memory cannot be
    attributed to the run's processes. Call `take_baseline()` before the run starts. Nothing
    here raises: a device that errors is recorded as such while the others are sampled, a
    gpu.jsonl that cannot be written stops being written, and `status()` says so.
    """

    def __init__(
        self,
        path: Path,
        read: Callable[[], list[dict[str, Any]]] | None,
        pids: Callable[[], Iterable[int]] | None = None,
    ):
        self.path = Path(path)
        self.read = read
        self.pids = pids
        self.baseline: dict[tuple[Any, Any], int] | None = None
        self._before: set[int] = set()  # the launcher's own PIDs at the baseline: not the run
        self._peak_own: int | None = None  # the run's processes, on the device where highest
        self._peak_delta: int | None = None  # used − baseline, on the device where highest
        self._last_own = 0
        self._last_delta = 0
        self._seen_ours = False  # NVML listed one of the run's PIDs at least once
        self._listed = False  # NVML gave a process list at least once
        self._foreign: set[int] = set()  # listed PIDs that are not the run's
        self._foreign_hidden = False  # one of them is not in this PID namespace
        self._unattributable: str | None = None  # why per-process memory cannot be trusted
        self._failing: dict[str, str] = {}  # devices that failed in the last sample
        self._failed: dict[str, str] = {}  # every device that failed at some point
        self._no_baseline: set[str] = set()
        self._problem: str | None = None
        self._write_error: str | None = None

    def take_baseline(self) -> None:
        """Read the memory in use on every device before the run starts; never raises."""
        if self.read is None:
            return
        try:
            self._before = self._our_pids() or set()
            gpus = self.read()
            baseline = {}
            for gpu in gpus:
                used = _bytes(gpu.get("used_bytes"))
                if used is not None and not gpu.get("error"):
                    baseline[_key(gpu)] = used
                for process in gpu.get("processes") or []:
                    pid = process.get("pid") if isinstance(process, dict) else None
                    if pid not in self._before:
                        self._note_foreign(pid)  # the run has not started yet
            self.baseline = baseline
            line = {"time": time.time(), "baseline": True, "gpus": gpus}
        except Exception as error:
            self._problem = _plain(f"no GPU reading before launch: {error_text(error)}")
            line = {"time": time.time(), "baseline": True, "error": self._problem}
        self._write(line)

    def sample(self) -> None:
        """Read every device once, append the line to gpu.jsonl, update the peak; never raises."""
        if self.read is None:
            return
        try:
            line = self._sample()
        except Exception as error:  # a reader or driver failure must not stop the launcher
            self._problem = _plain(f"GPU sampling failed: {error_text(error)}")
            line = {"time": time.time(), "error": self._problem}
        self._write(line)

    def _sample(self) -> dict[str, Any]:
        gpus = self.read()  # type: ignore[misc]
        self._problem = None
        ours = self._our_pids()
        entries, failing = [], {}
        own_now: int | None = None
        delta_now: int | None = None
        for gpu in gpus:
            entry = dict(gpu)
            entries.append(entry)
            label = _label(entry)
            used = _bytes(entry.get("used_bytes"))
            if entry.get("error") or used is None:
                failing[label] = _plain(str(entry.get("error") or "no memory reading"))
                continue
            base = 0
            if self.baseline is not None:
                if _key(entry) in self.baseline:
                    base = entry["baseline_bytes"] = self.baseline[_key(entry)]
                else:
                    self._no_baseline.add(label)
            delta_now = max(delta_now or 0, used - base, 0)
            own = self._attribute(entry, ours, label)
            if own is not None:
                entry["own_bytes"] = own
                own_now = max(own_now or 0, own)
        self._failing = failing
        self._failed.update(failing)
        if delta_now is not None:
            self._last_delta = delta_now
            self._peak_delta = max(self._peak_delta or 0, delta_now)
        if own_now is not None:
            self._last_own = own_now
            self._peak_own = max(self._peak_own or 0, own_now)
        now = own_now if self._per_process() else delta_now
        return {
            "time": time.time(),
            "gpus": entries,
            "run_bytes": now,
            "measured_by": self.measured_by,
        }

    def _our_pids(self) -> set[int] | None:
        if self.pids is None:
            return None
        try:
            return {int(pid) for pid in self.pids()}
        except Exception as error:
            self._problem = _plain(f"the run's processes could not be listed: {error_text(error)}")
            return None

    def _note_foreign(self, pid: Any) -> None:
        if isinstance(pid, int) and pid not in self._foreign:
            self._foreign.add(pid)
            self._foreign_hidden = self._foreign_hidden or not pid_exists(pid)

    def _attribute(self, entry: dict[str, Any], ours: set[int] | None, label: str) -> int | None:
        """Bytes NVML attributes to the run's processes on this device (None: it cannot say);
        marks each listed process `ours` in the entry."""
        if ours is None:
            return None
        if entry.get("processes_error"):
            reason = f"NVML could not list the processes on {label} ({entry['processes_error']})"
            self._unattributable = self._unattributable or _plain(reason)
            return None
        processes = entry.get("processes")
        if not isinstance(processes, list):
            return None
        self._listed = True
        own, marked = 0, []
        for listed in processes:
            process = dict(listed) if isinstance(listed, dict) else {}
            pid = process.get("pid")
            process["ours"] = pid in ours and pid not in self._before
            marked.append(process)
            if not process["ours"]:
                if pid not in self._before:  # the launcher's own context is neither
                    self._note_foreign(pid)
                continue
            self._seen_ours = True
            used = _bytes(process.get("used_bytes"))
            if used is None:
                reason = "the driver does not report memory per process (usedGpuMemory)"
                self._unattributable = self._unattributable or reason
            else:
                own += used
        entry["processes"] = marked
        return own

    def _per_process(self) -> bool:
        return self._seen_ours and self._unattributable is None

    def _why_not_per_process(self) -> str:
        if self._unattributable:
            return self._unattributable
        if self._foreign_hidden:
            return (
                "NVML lists processes whose PIDs are not in this PID namespace (in a container "
                "NVML reports the host's PIDs), so none can be matched to this run"
            )
        if self._foreign:
            return (
                "NVML lists processes, but none with this run's PIDs (in a container NVML "
                "reports the host's PIDs)"
            )
        if self._listed:
            return "NVML listed no processes on the GPUs"
        return "NVML gave no process lists"

    @property
    def peak_bytes(self) -> int | None:
        """This run's highest memory on one device so far (see `measured_by`), or None."""
        return self._peak_own if self._per_process() else self._peak_delta

    @property
    def last_bytes(self) -> int:
        """This run's memory in the last sample, on the device where it is highest."""
        return self._last_own if self._per_process() else self._last_delta

    @property
    def measured_by(self) -> MeasuredBy | None:
        """How `peak_bytes` counts (HOW_MEASURED), or None before any memory was read."""
        if self._peak_delta is None:
            return None
        if self._per_process():
            return PER_PROCESS
        return MINUS_BASELINE if self.baseline is not None else ALL_USED

    @property
    def memory_note(self) -> str:
        """What the peak counts and what it could not, in plain sentences ('' if nothing ran)."""
        if self.read is None:
            return ""
        how = self.measured_by
        if how is None:
            notes = ["No GPU memory could be read: nothing was measured."]
        else:
            notes = [f"The peak counts {HOW_MEASURED[how]}."]
            if how != PER_PROCESS and self.pids is not None:
                notes.append(f"Not per process: {self._why_not_per_process()}.")
        if how == MINUS_BASELINE and self._no_baseline:
            missing = ", ".join(sorted(self._no_baseline))
            notes.append(f"{missing}: no reading before launch, so all memory in use counts.")
        for label, error in self._failed.items():
            notes.append(
                f"{label} failed to answer NVML ({error}): samples it missed are not counted."
            )
        if self._write_error:
            notes.append(f"{self._write_error}.")
        return " ".join(notes)

    def status(self) -> str:
        """`GPU 12.3/14.0 GiB` (now / peak so far) and any device or file problem; '' before
        the first sample when all is well."""
        try:
            parts = []
            peak = self.peak_bytes
            if peak is not None:
                parts.append(f"GPU {self.last_bytes / GIB:.1f}/{peak / GIB:.1f} GiB")
            if self._failing:
                label, error = next(iter(self._failing.items()))
                more = len(self._failing) - 1
                parts.append(f"{label}: {error}" + (f" (+{more} more failing)" if more else ""))
            parts.extend(p for p in (self._problem, self._write_error) if p)
            return " · ".join(parts)
        except Exception:  # the live view must not fail over a status line
            return ""

    def _write(self, line: dict[str, Any]) -> None:
        """Append one line to gpu.jsonl; on the first failure (disk full …) stop writing."""
        if self._write_error is not None:
            return
        try:
            text = json.dumps(line, default=str) + "\n"
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(text)
        except Exception as error:
            reason = getattr(error, "strerror", None) or error_text(error)
            self._write_error = _plain(f"gpu.jsonl is no longer written ({reason})")


MemoryLayerName = Literal["tensors", "tensors_at_batch_length", "allocated", "reserved", "nvml"]


class MemoryLayer(BaseModel):
    """One layer of a run's memory, estimated against measured (GiB): each is checked alone, so
    that an error shows where it comes from (the tensors, the allocator, or outside PyTorch)."""

    layer: MemoryLayerName
    label: str = Field(description="what it counts, in the words `advisor validate` prints")
    estimated_gib: float | None
    measured_gib: float | None
    ratio: float | None = Field(description="measured / estimated; null when either is missing")


LAYER_LABELS: dict[MemoryLayerName, str] = {
    "tensors": "tensor peak (CPU, one step counted)",
    "tensors_at_batch_length": "tensor peak, planned at the batch's real length",
    "allocated": "allocated by PyTorch (tensors)",
    "reserved": "reserved by PyTorch (tensors + allocator slack)",
    "nvml": "peak memory per GPU (NVML)",
}
"""Each memory layer's row label: what is measured and what the estimate beside it counts."""


class Validation(BaseModel):
    """Estimated vs measured peak memory per GPU and seconds per optimizer step."""

    device: str
    estimated_peak_gib: float | None
    measured_peak_gib: float | None
    estimated_step_seconds: float | None
    measured_step_seconds: float | None
    steps: int
    note: str = ""
    measured_by: MeasuredBy | None = Field(
        default=None,
        description="how the measured peak counts: the run's processes ('per-process'), memory "
        "in use minus a reading before launch, or all memory in use; null: nothing measured",
    )
    memory_note: str = Field(default="", description="what the measured peak counts and misses")
    comparable: bool = Field(
        default=True,
        description="whether the run's device is the kind the plan estimated (false on CPU): "
        "only then is measured / estimated a meaningful ratio",
    )
    estimated_tensor_peak_gib: float | None = Field(
        default=None,
        description="the plan's tensors at the peak (memory.tensor_peak_gib); on CPU the plan "
        "of the run as it trains there (fp32), not of the GPU request",
    )
    allocated_peak_gib: float | None = Field(
        default=None, description="torch.cuda.max_memory_allocated, the largest over ranks"
    )
    reserved_peak_gib: float | None = Field(
        default=None, description="torch.cuda.max_memory_reserved, the largest over ranks"
    )
    measured_tensor_peak_gib: float | None = Field(
        default=None,
        description="CPU: the tensors live at the peak of one counted step, the largest over ranks",
    )
    memory_layers: list[MemoryLayer] = Field(
        default_factory=list,
        description="each memory layer estimated against measured: tensors (CPU), allocated, "
        "reserved, NVML",
    )


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
    device: str,
    plan: Plan | None,
    records: list[dict[str, Any]],
    peak_bytes: int | None,
    *,
    measured_by: MeasuredBy | None = None,
    memory_note: str = "",
    run_dir: Path | None = None,
    request: PlanRequest | None = None,
) -> Validation:
    """The validation record of a finished run; `measured_by` and `memory_note` come from the
    GpuSampler that measured `peak_bytes`. `run_dir`: where the ranks wrote their own peaks
    (`runners.rank_memory`); `request`: the run as it trained (the RunSpec's), whose plan a CPU
    run's counted tensors are compared with."""
    from runners.rank_memory import read_rank_memory

    steps = max((r.get("step", 0) for r in records), default=0)
    note = ""
    if device == "cpu":
        note = "trained on CPU: the plan's GPU estimates are not comparable with these numbers"
    measured = round(peak_bytes / GIB, 2) if peak_bytes else None
    ranks = read_rank_memory(run_dir) if run_dir is not None else []
    allocated = _largest(r.allocated_peak_bytes for r in ranks)
    reserved = _largest(r.reserved_peak_bytes for r in ranks)
    counted = _largest(r.tensor_peak_bytes for r in ranks)
    tensor_estimate = _tensor_estimate_bytes(device, plan, request)
    slack = runtime("allocator_fragmentation")
    layers = [
        _layer("tensors", tensor_estimate, counted),
        _layer("allocated", tensor_estimate, allocated),
        _layer("reserved", tensor_estimate and tensor_estimate * (1 + slack), reserved),
        _layer("nvml", plan.memory.per_gpu_peak_gib * GIB if plan else None, peak_bytes),
    ]
    if device == "cpu":  # the GPU layers are not the run's: only the counted tensors compare
        batch_length = _largest(_padded_length(r.batch_shapes) for r in ranks)
        at_length = _at_length(request, batch_length)
        layers = [layers[0]] + [_layer("tensors_at_batch_length", at_length, counted)] * bool(
            at_length
        )
    return Validation(
        device=device,
        estimated_peak_gib=plan.memory.per_gpu_peak_gib if plan else None,
        measured_peak_gib=measured,
        estimated_step_seconds=plan.time.step_seconds if plan else None,
        measured_step_seconds=measured_step_seconds(records),
        steps=steps,
        note=note,
        measured_by=measured_by if measured is not None else None,
        memory_note=memory_note,
        comparable=device != "cpu",
        estimated_tensor_peak_gib=_fine_gib(tensor_estimate),
        allocated_peak_gib=_fine_gib(allocated),
        reserved_peak_gib=_fine_gib(reserved),
        measured_tensor_peak_gib=_fine_gib(counted),
        memory_layers=[layer for layer in layers if layer.measured_gib is not None],
    )


def _largest(values: Iterable[int | None]) -> int | None:
    return max((v for v in values if v is not None), default=None)


def _fine_gib(value: float | None) -> float | None:
    """GiB to the KiB: a demo model's few MiB stay visible."""
    return round(value / GIB, 6) if value is not None else None


def _layer(name: MemoryLayerName, estimated: float | None, measured: float | None) -> MemoryLayer:
    ratio = round(measured / estimated, 3) if estimated and measured is not None else None
    return MemoryLayer(
        layer=name,
        label=LAYER_LABELS[name],
        estimated_gib=_fine_gib(estimated),
        measured_gib=_fine_gib(measured),
        ratio=ratio,
    )


def _padded_length(shapes: dict[str, list[int]]) -> int | None:
    """The counted step's sequence length: its batch's longest second dimension."""
    return _largest(shape[1] for shape in shapes.values() if len(shape) == 2)


def _at_length(request: PlanRequest | None, length: int | None) -> float | None:
    """The CPU run's tensor estimate at the length its batches really had (padded to their
    longest row, shorter than planned when the rows are): it tells the per-token error from
    the shape of the data; None when that is the planned length already."""
    if request is None or not length or length == request.seq_len:
        return None
    update = {"seq_len": length, "prompt_len": None, "completion_len": None}
    try:
        return _tensor_estimate_bytes("cpu", None, request.model_copy(update=update))
    except ValueError:
        return None


def _tensor_estimate_bytes(
    device: str, plan: Plan | None, request: PlanRequest | None
) -> float | None:
    """The tensor-level estimate the run's own measurements compare with: the plan's on a GPU;
    on CPU that of the run as it trains there (fp32, not the GPU request the plan was for),
    in bytes unrounded, since a demo model's is a few MiB."""
    if device != "cpu":
        return plan.memory.tensor_peak_gib * GIB if plan else None
    if request is None:
        return None
    from planner.errors import InputError
    from planner.memory import estimate_memory
    from planner.models import resolve_model

    try:
        return estimate_memory(resolve_model(request.model), request).tensor_peak
    except (InputError, OSError, ValueError):  # the model is gone: nothing to compare with
        return None

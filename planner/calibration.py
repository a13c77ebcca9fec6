"""The calibration store: measured GPU runs, and the runtime-overhead correction they teach.

Every run that measured its NVML peak on a GPU (`advisor validate`, `advisor launch`) appends one
`CalibrationRecord` to a JSON Lines file: `$ADVISOR_CALIBRATION`, or `--calibration FILE` (a
team's shared file, kept in their repo), else `<user cache>/alignment-advisor/calibration.jsonl`.
The planner then corrects the runtime overhead (CUDA context, workspaces, NCCL buffers, allocator
slack) of plans for the same GPU by what those runs measured, shrunk toward the constants in
profiles/constants.toml; the tensor-level estimate is never changed.

Which records a plan learns from (`matches`): the same GPU (as its profile names it), the same
single- or multi-GPU layout (NCCL buffers exist only with more than one rank), and the same torch
version and torch CUDA build where both the record and this environment know them (read from
package metadata and torch/version.py, without importing torch). The driver is recorded and
shown, not matched: the plan cannot read it without NVML, and the plan may be for another machine.

Standard library and pydantic only: a plan reads the store in well under a millisecond.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import statistics
import time
from collections.abc import Iterable
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from planner.constants import GIB, constants
from planner.errors import InputError
from planner.files import short
from planner.memory import MemoryBreakdown
from planner.specs import Calibration, PlanRequest

STORE_ENV = "ADVISOR_CALIBRATION"
"""The environment variable naming a calibration store to use instead of the user cache."""


class Stack(BaseModel):
    """The software a run measured with; None where it was not known."""

    model_config = ConfigDict(frozen=True)

    driver: str | None = Field(default=None, description="NVIDIA driver version (NVML)")
    cuda: str | None = Field(default=None, description="the CUDA torch was built for")
    torch: str | None = None

    def label(self) -> str:
        """`driver 550.54.15 · CUDA 12.4 · torch 2.6.0`, with unknown parts left out."""
        parts = [
            f"{name} {value}"
            for name, value in (("driver", self.driver), ("CUDA", self.cuda), ("torch", self.torch))
            if value
        ]
        return " · ".join(parts) or "stack unknown"


class CalibrationRecord(BaseModel):
    """One measured GPU run: what the plan estimated beside what NVML and torch measured (GiB)."""

    model_config = ConfigDict(extra="ignore")

    gpu: str = Field(min_length=1, description="the GPU profile's name, else NVML's name")
    stack: Stack = Field(default_factory=Stack)
    world_size: int = Field(default=1, ge=1, description="GPUs in the job")
    estimated_tensor_peak_gib: float = Field(ge=0, allow_inf_nan=False)
    estimated_runtime_gib: float = Field(
        ge=0, allow_inf_nan=False, description="the plan's runtime overhead before calibration"
    )
    measured_peak_gib: float = Field(gt=0, allow_inf_nan=False, description="NVML, per GPU")
    reserved_gib: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="torch max_memory_reserved"
    )
    allocated_gib: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="torch max_memory_allocated"
    )
    method: str | None = None
    model: str | None = None
    time: float = Field(default_factory=time.time, description="when it was measured (Unix)")
    run_dir: str | None = None

    @property
    def observed_runtime_gib(self) -> float:
        """What the run spent beyond its tensors: NVML peak − torch's allocated peak when
        measured, else NVML peak − the estimated tensor peak (NVML counts the CUDA context,
        workspaces and the caching allocator's reserve: PyTorch docs, "CUDA semantics: memory
        management"). Never below 0: a once-a-second NVML sample can miss a short peak."""
        tensors = self.allocated_gib
        if tensors is None:
            tensors = self.estimated_tensor_peak_gib
        return max(0.0, self.measured_peak_gib - tensors)

    @property
    def residual_gib(self) -> float:
        """How far the planner's runtime overhead fell short of the observed one (GiB)."""
        return self.observed_runtime_gib - self.estimated_runtime_gib


# --- where the store is -------------------------------------------------------------------------


def default_store() -> Path:
    """`<user cache>/alignment-advisor/calibration.jsonl` ($XDG_CACHE_HOME, else ~/.cache)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "alignment-advisor" / "calibration.jsonl"


def store_path(given: str | Path | None = None) -> Path:
    """The store to use: `given` (--calibration FILE), else $ADVISOR_CALIBRATION, else the
    user cache (`default_store`)."""
    chosen = given or os.environ.get(STORE_ENV)
    return Path(chosen).expanduser() if chosen else default_store()


# --- reading and writing -------------------------------------------------------------------------


def _named(path: str | Path) -> str:
    """A file's path for a one-line message: whole, unless absurdly long."""
    return short(str(path), 300)


def _problem(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


def parse_records(text: str, path: Path) -> list[CalibrationRecord]:
    """The records of a JSON Lines text (blank lines skipped); InputError naming the file and
    line of the first one that is not a record."""
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"calibration store {_named(path)} line {number}"
        try:
            data = json.loads(line)
        except ValueError as error:
            raise InputError(f"{where}: not JSON ({error.args[0]})") from None
        if not isinstance(data, dict):
            raise InputError(f"{where}: not a record (a JSON object)")
        try:
            records.append(CalibrationRecord.model_validate(data))
        except ValidationError as error:
            raise InputError(f"{where}: {_problem(error)}") from None
    return records


@functools.lru_cache(maxsize=8)
def _read(path: str, _mtime_ns: int, _size: int) -> tuple[CalibrationRecord, ...]:
    location = Path(path)
    try:
        text = location.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise InputError(f"cannot read calibration store {_named(path)}: {reason}") from None
    return tuple(parse_records(text, location))


def read_store(path: str | Path | None = None) -> list[CalibrationRecord]:
    """The records in the store (`store_path(path)`); none when it does not exist yet."""
    location = store_path(path)
    try:
        stat = location.stat()
    except FileNotFoundError:
        return []
    except OSError as error:
        raise InputError(f"cannot read calibration store {_named(location)}: {error}") from None
    if location.is_dir():
        raise InputError(f"calibration store {_named(location)} is a folder: give a .jsonl file")
    return list(_read(str(location), stat.st_mtime_ns, stat.st_size))


def append_records(records: Iterable[CalibrationRecord], path: str | Path | None = None) -> Path:
    """Append records to the store, creating it and its folder; returns its path. OSError on
    failure (the caller says so in one line)."""
    location = store_path(path)
    lines = "".join(record.model_dump_json() + "\n" for record in records)
    location.parent.mkdir(parents=True, exist_ok=True)
    with location.open("a", encoding="utf-8") as handle:
        handle.write(lines)
    return location


def reset_store(path: str | Path | None = None) -> Path | None:
    """Remove the store file; its path, or None when there was none."""
    location = store_path(path)
    if location.is_dir():
        raise InputError(f"calibration store {_named(location)} is a folder: not removed")
    try:
        location.unlink()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise InputError(f"cannot remove {_named(location)}: {error.strerror}") from None
    return location


# --- this machine -------------------------------------------------------------------------------


def _public(version: str | None) -> str | None:
    """`2.6.0+cu124` as `2.6.0`: the local part names the CUDA build, matched separately."""
    return version.split("+", 1)[0] if version else None


@functools.cache
def local_stack() -> Stack:
    """torch's version and CUDA build in this environment, read without importing torch
    (package metadata and torch/version.py); the driver is not read here (that needs NVML)."""
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return Stack()
    cuda = None
    try:
        spec = importlib.util.find_spec("torch")
        folders = list(spec.submodule_search_locations or []) if spec else []
        text = (Path(folders[0]) / "version.py").read_text(encoding="utf-8") if folders else ""
        found = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
        cuda = found.group(1) if found else None
    except (OSError, ValueError, ImportError):
        cuda = None
    return Stack(torch=torch_version, cuda=cuda)


def machine_gpu() -> tuple[str | None, str | None]:
    """(the first GPU's profile name, else NVML's name; the driver version) from NVML, or
    Nones where NVML answers nothing."""
    from planner.nvml import probe

    result = probe()
    device = next((d for d in result.devices if d.parent is None and not d.error), None)
    name = (device.profile or device.name) if device else None
    return name, result.driver_version


# --- what the records teach ----------------------------------------------------------------------


@functools.cache
def gpu_name(name: str) -> str:
    """A GPU as the planner names it: its profile's name (`H100-80GB` for `NVIDIA H100 80GB
    HBM3` or `h100`), else the name as given."""
    from planner.gpus import resolve_gpu

    try:
        return resolve_gpu(name).name
    except InputError:
        return name.strip()


def gpu_key(name: str) -> str:
    """A GPU's name as records are matched by: `gpu_name`, lower case."""
    return gpu_name(name).lower()


def _same(a: str | None, b: str | None) -> bool:
    return a is None or b is None or _public(a) == _public(b)


def matches(record: CalibrationRecord, gpu: str, world_size: int, stack: Stack) -> bool:
    """Whether a record speaks for a plan on `gpu` with `world_size` GPUs and `stack` (see the
    module's docstring for what is matched and why)."""
    return (
        gpu_key(record.gpu) == gpu_key(gpu)
        and (record.world_size > 1) == (world_size > 1)
        and _same(record.stack.torch, stack.torch)
        and _same(record.stack.cuda, stack.cuda)
    )


def prior_runs() -> float:
    """How many measured runs the [runtime] constants are worth (profiles/constants.toml)."""
    return float(constants()["calibration"]["prior_runs"])


def shrunk_correction(residuals: list[float], prior: float | None = None) -> float:
    """The correction to the runtime overhead, GiB: the residuals' mean × n / (n + k), k =
    `prior_runs` (a shrinkage estimate: one run moves the estimate toward its measurement,
    never past it; many agreeing runs approach it)."""
    if not residuals:
        return 0.0
    k = prior_runs() if prior is None else prior
    n = len(residuals)
    return statistics.fmean(residuals) * n / (n + k)


def correction_spread(residuals: list[float], prior: float | None = None) -> float:
    """How unsure the correction is, GiB: the residuals' sample standard deviation (0 for one)
    plus the part of their mean the shrinkage held back; conflicting runs widen it."""
    if not residuals:
        return 0.0
    deviation = statistics.stdev(residuals) if len(residuals) > 1 else 0.0
    mean = statistics.fmean(residuals)
    return deviation + abs(mean - shrunk_correction(residuals, prior))


def _stacks(records: Iterable[CalibrationRecord]) -> str:
    return "; ".join(dict.fromkeys(record.stack.label() for record in records))


def learned(
    records: list[CalibrationRecord], gpu: str, model_runtime_gib: float, source: str
) -> Calibration | None:
    """The calibration that `records` (already matched) give a plan whose runtime overhead the
    planner put at `model_runtime_gib`; None without records."""
    if not records:
        return None
    residuals = [record.residual_gib for record in records]
    return Calibration(
        runs=len(records),
        gpu=gpu_name(gpu),
        stack=_stacks(records),
        correction_gib=round(shrunk_correction(residuals), 3),
        spread_gib=round(correction_spread(residuals), 3),
        model_runtime_gib=round(model_runtime_gib, 3),
        source=str(store_path(source)),
    )


def calibrated(
    breakdown: MemoryBreakdown, gpu: str, request: PlanRequest
) -> tuple[MemoryBreakdown, Calibration | None]:
    """The breakdown with its runtime overhead corrected by the store's matching records (the
    tensor-level components unchanged), and what was applied; as it was when none match."""
    records = read_store(request.calibration)
    if not records:
        return breakdown, None
    stack = local_stack()
    matched = [r for r in records if matches(r, gpu, request.world_size, stack)]
    calibration = learned(matched, gpu, breakdown.overhead / GIB, request.calibration)
    if calibration is None:
        return breakdown, None
    overhead = max(0.0, breakdown.overhead + calibration.correction_gib * GIB)
    components = {**breakdown.components, "runtime_overhead": overhead}
    return replace(breakdown, overhead=overhead, components=components), calibration


def groups(records: list[CalibrationRecord]) -> list[dict[str, Any]]:
    """The store summarised per GPU, stack and single/multi-GPU layout, as `calibrate show`
    lists it: runs, correction and spread (GiB), in the order first seen."""
    grouped: dict[tuple[str, str, bool], list[CalibrationRecord]] = {}
    for record in records:
        key = (gpu_key(record.gpu), record.stack.label(), record.world_size > 1)
        grouped.setdefault(key, []).append(record)
    rows = []
    for (_, stack, multi), members in grouped.items():
        residuals = [m.residual_gib for m in members]
        rows.append(
            {
                "gpu": gpu_name(members[0].gpu),
                "stack": stack,
                "multi_gpu": multi,
                "runs": len(members),
                "correction_gib": round(shrunk_correction(residuals), 3),
                "spread_gib": round(correction_spread(residuals), 3),
            }
        )
    return rows


# --- records from run folders -------------------------------------------------------------------


def record_from_run(
    manifest: dict[str, Any],
    validation: dict[str, Any],
    *,
    gpu: str | None = None,
    driver: str | None = None,
    cuda: str | None = None,
) -> CalibrationRecord | None:
    """The record of a run from its manifest.json and validation.json (as parsed JSON), or None
    when it measured nothing comparable (CPU, no NVML peak, no plan). `gpu`: the card it ran on
    (default: the plan's)."""
    plan = manifest.get("plan")
    peak = validation.get("measured_peak_gib")
    if not validation.get("comparable", True) or not peak or not isinstance(plan, dict):
        return None
    memory = plan["memory"]
    learned_before = memory.get("calibration")
    runtime = (
        learned_before["model_runtime_gib"]
        if learned_before
        else memory["components_gib"]["runtime_overhead"]
    )
    torch_version = (manifest.get("versions") or {}).get("torch")
    return CalibrationRecord(
        gpu=gpu or plan["gpu"]["name"],
        stack=Stack(
            driver=driver,
            cuda=cuda,
            torch=torch_version if torch_version != "not installed" else None,
        ),
        world_size=plan["gpu"].get("count", 1),
        estimated_tensor_peak_gib=memory["tensor_peak_gib"],
        estimated_runtime_gib=runtime,
        measured_peak_gib=peak,
        reserved_gib=validation.get("reserved_peak_gib"),
        allocated_gib=validation.get("allocated_peak_gib"),
        method=plan.get("method"),
        model=(plan.get("model") or {}).get("name"),
        time=manifest.get("created") or time.time(),
        run_dir=manifest.get("run_dir"),
    )


def _json_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise InputError(f"cannot read {_named(path)}: {reason}") from None
    if not isinstance(data, dict):
        raise InputError(f"{_named(path)} is not a JSON object")
    return data


def records_to_import(path: str | Path) -> list[CalibrationRecord]:
    """The records in another store (.jsonl) or in a run folder (its validation.json and
    manifest.json); InputError when it holds none or is malformed."""
    location = Path(path).expanduser()
    if location.is_dir():
        validation, manifest = location / "validation.json", location / "manifest.json"
        for needed in (validation, manifest):
            if not needed.is_file():
                raise InputError(
                    f"{_named(location)} has no {needed.name}: not a finished run folder"
                )
        try:
            record = record_from_run(_json_file(manifest), _json_file(validation))
        except (KeyError, TypeError) as error:
            raise InputError(f"{_named(location)}: manifest.json lacks {error}") from None
        except ValidationError as error:
            raise InputError(f"{_named(location)}: {_problem(error)}") from None
        if record is None:
            raise InputError(
                f"{_named(location)} measured no GPU peak (a CPU run, or no NVML reading): "
                "nothing to learn from"
            )
        return [record]
    if not location.is_file():
        raise InputError(f"{_named(location)} does not exist (give a .jsonl store or a run folder)")
    return list(_read(str(location), *_stamp(location)))


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size

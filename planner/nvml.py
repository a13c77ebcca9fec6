"""NVML probes behind one small protocol: the real `pynvml` adapter and a fake for tests.

`probe()` answers "which NVIDIA GPUs does this machine have, and how much memory is in use" —
or, plainly, why it cannot tell (no driver, no permission, library mismatch). A GPU that errors
is listed with its error while the others are read as usual; a GPU in MIG mode is listed with
its MIG instances, each a device of its own. `device_reader()` gives the launcher one sample of
every device it can train on (GPUs, or the MIG instances of GPUs in MIG mode), with the
processes NVML attributes memory to. NVML has no high-water mark, so callers poll and work with
deltas from a reading taken before launch. pynvml is imported inside `PynvmlBackend` only:
`advisor plan` loads it only with `--fit` and no `--num-gpus`, to count the GPUs here
(`planner.fit.probed_gpu_count`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field

# NVML return codes that mean "no usable NVML here" rather than a bug (nvml.h).
UNAVAILABLE_CODES = {
    4: "no permission to use NVML",
    9: "the NVIDIA driver is not loaded",
    12: "the NVIDIA driver library (libnvidia-ml) is not installed",
    18: "the NVIDIA driver and kernel module versions do not match",
}
NVML_ERROR_NOT_SUPPORTED = 3  # nvml.h: a GPU without MIG answers this to nvmlDeviceGetMigMode
NVML_ERROR_NOT_FOUND = 6  # nvml.h: an empty MIG slot (MIG device indices can be sparse)
NVML_ERROR_FUNCTION_NOT_FOUND = 13  # nvml.h: a driver older than the call
NVML_DEVICE_MIG_ENABLE = 1  # nvml.h: nvmlDeviceGetMigMode's "current mode" when MIG is on


class NvmlUnavailable(RuntimeError):
    """NVML cannot be used on this machine; the message says why in plain words."""


class FakeNvmlError(RuntimeError):
    """An NVML call that a fixture recorded as failing (a lost GPU, no permission …)."""


class GpuMemory(BaseModel):
    """One device's memory as NVML reports it, in bytes."""

    total: int
    used: int
    free: int
    reserved: int | None = Field(default=None, description="driver-reserved (nvmlMemory_v2)")


class GpuProcess(BaseModel):
    """A process with a context on a device, and the memory NVML attributes to it."""

    pid: int = Field(description="as NVML reports it: in a container, the host's PID")
    used_bytes: int | None = Field(
        default=None, description="None where the driver does not say (usedGpuMemory)"
    )


class GpuDevice(BaseModel):
    """One NVIDIA device — a GPU or a MIG instance of one — or the error reading it."""

    index: int = Field(description="NVML index of the GPU; of a MIG instance: its slot on the GPU")
    parent: int | None = Field(default=None, description="MIG instance: the index of its GPU")
    name: str | None = None
    uuid: str | None = None
    memory: GpuMemory | None = Field(default=None, description="None where it could not be read")
    profile: str | None = Field(default=None, description="the profiles/gpus/ entry it matches")
    mig_enabled: bool = Field(default=False, description="a GPU in MIG mode (instances follow)")
    error: str | None = Field(default=None, description="what NVML answered instead")

    @property
    def label(self) -> str:
        """`GPU 1`, or `GPU 0 MIG 2` for a MIG instance."""
        return device_label(self.index, self.parent)


class ProbeResult(BaseModel):
    """What `advisor probe --json` prints."""

    available: bool
    reason: str | None = None
    driver_version: str | None = None
    devices: list[GpuDevice] = Field(default_factory=list)


class DeviceReading(BaseModel):
    """One sample of one device the launcher watches: memory in use and its processes."""

    index: int
    parent: int | None = None
    used_bytes: int | None = None
    total_bytes: int | None = None
    processes: list[GpuProcess] | None = Field(
        default=None, description="None where NVML could not list them (processes_error)"
    )
    processes_error: str | None = None
    error: str | None = Field(default=None, description="the device could not be read")


def device_label(index: int, parent: int | None = None) -> str:
    """How a device is named to users: `GPU 1`, or `GPU 0 MIG 2` for a MIG instance."""
    return f"GPU {index}" if parent is None else f"GPU {parent} MIG {index}"


def error_text(error: BaseException) -> str:
    """An NVML error as a user reads it (`GPU is lost`), never an empty string."""
    return str(error) or type(error).__name__


class NvmlBackend(Protocol):
    """The calls the project makes; both adapters implement exactly these. `mig` names a MIG
    instance of GPU `index` (from `mig_indices`); None means the GPU itself."""

    def driver_version(self) -> str: ...

    def device_count(self) -> int: ...

    def device_name(self, index: int, mig: int | None = None) -> str: ...

    def device_uuid(self, index: int, mig: int | None = None) -> str | None: ...

    def memory(self, index: int, mig: int | None = None) -> GpuMemory: ...

    def mig_indices(self, index: int) -> list[int] | None:
        """The MIG instances of GPU `index` ([] in MIG mode with none made); None when MIG
        is off or unsupported."""
        ...

    def processes(self, index: int, mig: int | None = None) -> list[GpuProcess]:
        """Compute and graphics processes on the device; raises when NVML cannot list them."""
        ...

    def close(self) -> None: ...


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _larger(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


class PynvmlBackend:
    """The real adapter over `pynvml` (package nvidia-ml-py)."""

    def __init__(self) -> None:
        try:
            import pynvml
        except ImportError as error:
            raise NvmlUnavailable("nvidia-ml-py (pynvml) is not installed") from error
        self._nvml = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as error:
            code = getattr(error, "value", None)
            reason = UNAVAILABLE_CODES.get(code, f"NVML failed to start: {error}")
            raise NvmlUnavailable(reason) from None
        except Exception as error:  # old drivers raise plain Exceptions, not NVMLError
            raise NvmlUnavailable(f"NVML failed to start: {error}") from None
        self._handles: dict[tuple[int, int | None], object] = {}

    def _handle(self, index: int, mig: int | None = None) -> object:
        key = (index, mig)
        if key not in self._handles:
            nvml = self._nvml
            if mig is None:
                self._handles[key] = nvml.nvmlDeviceGetHandleByIndex(index)
            else:
                gpu = self._handle(index)
                self._handles[key] = nvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu, mig)
        return self._handles[key]

    def driver_version(self) -> str:
        return _text(self._nvml.nvmlSystemGetDriverVersion())

    def device_count(self) -> int:
        return int(self._nvml.nvmlDeviceGetCount())

    def device_name(self, index: int, mig: int | None = None) -> str:
        return _text(self._nvml.nvmlDeviceGetName(self._handle(index, mig)))

    def device_uuid(self, index: int, mig: int | None = None) -> str | None:
        try:
            return _text(self._nvml.nvmlDeviceGetUUID(self._handle(index, mig)))
        except Exception:  # not every driver answers; the uuid is optional
            return None

    def memory(self, index: int, mig: int | None = None) -> GpuMemory:
        nvml, handle = self._nvml, self._handle(index, mig)
        try:
            info = nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2)
            reserved = int(info.reserved)
        except Exception:  # drivers without v2 (and MIG handles on some) answer v1 only
            info = nvml.nvmlDeviceGetMemoryInfo(handle)
            reserved = None
        return GpuMemory(
            total=int(info.total), used=int(info.used), free=int(info.free), reserved=reserved
        )

    def mig_indices(self, index: int) -> list[int] | None:
        nvml, gpu = self._nvml, self._handle(index)
        try:
            current, _pending = nvml.nvmlDeviceGetMigMode(gpu)
        except nvml.NVMLError as error:
            no_mig = (NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_FUNCTION_NOT_FOUND)
            if getattr(error, "value", None) in no_mig:
                return None  # a GPU (or driver) without MIG
            raise
        if current != NVML_DEVICE_MIG_ENABLE:
            return None
        found = []
        for mig in range(int(nvml.nvmlDeviceGetMaxMigDeviceCount(gpu))):
            try:
                self._handles[(index, mig)] = nvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu, mig)
            except nvml.NVMLError as error:
                if getattr(error, "value", None) == NVML_ERROR_NOT_FOUND:
                    continue  # an empty slot
                raise
            found.append(mig)
        return found

    def _listing(self, function: str, handle: object) -> list:
        nvml = self._nvml
        try:
            return getattr(nvml, function)(handle)
        except nvml.NVMLError:
            raise
        except Exception:  # old drivers: NVMLLibraryMismatchError, a plain Exception
            older = getattr(nvml, f"{function}_v2", None)
            if older is None:
                raise
            return older(handle)

    def processes(self, index: int, mig: int | None = None) -> list[GpuProcess]:
        handle = self._handle(index, mig)
        listings = [self._listing("nvmlDeviceGetComputeRunningProcesses", handle)]
        # Training holds compute contexts; a GPU that lists no graphics processes loses nothing.
        with contextlib.suppress(Exception):
            listings.append(self._listing("nvmlDeviceGetGraphicsRunningProcesses", handle))
        used: dict[int, int | None] = {}
        for listing in listings:
            for process in listing:
                memory = process.usedGpuMemory  # pynvml turns "not available" into None
                memory = None if memory is None else int(memory)
                pid = int(process.pid)
                # A process with both contexts is listed twice with the same memory.
                used[pid] = _larger(used[pid], memory) if pid in used else memory
        return [GpuProcess(pid=pid, used_bytes=memory) for pid, memory in used.items()]

    def close(self) -> None:
        # Shutting down twice or after a lost driver is harmless.
        with contextlib.suppress(Exception):
            self._nvml.nvmlShutdown()


class FakeBackend:
    """Replays a recorded JSON fixture: {"driver_version", "devices": [device, ...]}.

    A device is {"name", "uuid", "memory": [sample, ...], "processes": [listing, ...],
    "mig": [device or null, ...], "error": "..."}. A memory sample is {"total", "used",
    "free", "reserved"}; a listing is [{"pid", "used"}, ...] ("used": null where the driver
    does not say); either may instead be {"error": "..."}, a call that fails. Each call returns
    the device's next sample (the last one repeats); no "processes": none listed. "error": every
    call about the device fails (a lost GPU). "mig": the GPU is in MIG mode and these are its
    instances (null: an empty slot).
    """

    def __init__(self, fixture: dict | str | Path) -> None:
        if not isinstance(fixture, dict):
            fixture = json.loads(Path(fixture).read_text(encoding="utf-8"))
        if fixture.get("unavailable"):
            raise NvmlUnavailable(str(fixture["unavailable"]))
        self._fixture = fixture
        self._calls: dict[tuple[int, int | None, str], int] = {}

    def driver_version(self) -> str:
        return str(self._fixture.get("driver_version", "unknown"))

    def device_count(self) -> int:
        return len(self._fixture.get("devices", []))

    def _device(self, index: int, mig: int | None = None) -> dict:
        device = self._fixture["devices"][index]
        if mig is not None:
            if device.get("error"):
                raise FakeNvmlError(device["error"])
            device = (device.get("mig") or [])[mig]
            if device is None:
                raise FakeNvmlError("Not Found")
        if device.get("error"):
            raise FakeNvmlError(device["error"])
        return device

    def _next(self, index: int, mig: int | None, kind: str, samples: list):
        key = (index, mig, kind)
        call = self._calls.get(key, 0)
        self._calls[key] = call + 1
        sample = samples[min(call, len(samples) - 1)]
        if isinstance(sample, dict) and sample.get("error"):
            raise FakeNvmlError(sample["error"])
        return sample

    def device_name(self, index: int, mig: int | None = None) -> str:
        return str(self._device(index, mig)["name"])

    def device_uuid(self, index: int, mig: int | None = None) -> str | None:
        return self._device(index, mig).get("uuid")

    def memory(self, index: int, mig: int | None = None) -> GpuMemory:
        return GpuMemory(**self._next(index, mig, "memory", self._device(index, mig)["memory"]))

    def mig_indices(self, index: int) -> list[int] | None:
        slots = self._device(index).get("mig")
        if slots is None:
            return None
        return [mig for mig, device in enumerate(slots) if device is not None]

    def processes(self, index: int, mig: int | None = None) -> list[GpuProcess]:
        listings = self._device(index, mig).get("processes") or [[]]
        listing = self._next(index, mig, "processes", listings)
        return [GpuProcess(pid=p["pid"], used_bytes=p.get("used")) for p in listing]

    def close(self) -> None:
        pass


def open_backend() -> NvmlBackend:
    """The real backend, or a fake when $ADVISOR_FAKE_NVML names a fixture file (tests,
    demos). Raises NvmlUnavailable with the reason."""
    import os

    fixture = os.environ.get("ADVISOR_FAKE_NVML")
    if fixture:
        return FakeBackend(fixture)
    return PynvmlBackend()


def _profile_name(name: str) -> str | None:
    from planner.errors import InputError
    from planner.gpus import resolve_gpu

    try:
        return resolve_gpu(name).name
    except InputError:
        return None


def _probe_device(backend: NvmlBackend, index: int, mig: int | None = None) -> GpuDevice:
    """One device as probe lists it; an NVML error becomes the device's `error`."""
    where = {"index": index} if mig is None else {"index": mig, "parent": index}
    try:
        name = backend.device_name(index, mig)
        memory = backend.memory(index, mig)
    except Exception as error:  # a lost GPU, no permission, an old driver's plain Exception
        return GpuDevice(**where, error=error_text(error))
    try:
        uuid = backend.device_uuid(index, mig)
    except Exception:  # the uuid is optional
        uuid = None
    return GpuDevice(
        **where,
        name=name,
        uuid=uuid,
        memory=memory,
        # A MIG instance is a slice of the card: the card's profile would overstate it.
        profile=_profile_name(name) if mig is None else None,
    )


def _probe_gpu(backend: NvmlBackend, index: int) -> list[GpuDevice]:
    """GPU `index`, then its MIG instances when it is in MIG mode."""
    gpu = _probe_device(backend, index)
    if gpu.error is not None:
        return [gpu]
    try:
        migs = backend.mig_indices(index)
    except Exception as error:
        gpu.error = f"its MIG instances could not be listed: {error_text(error)}"
        return [gpu]
    gpu.mig_enabled = migs is not None
    return [gpu] + [_probe_device(backend, index, mig) for mig in migs or []]


def probe(backend: NvmlBackend | None = None) -> ProbeResult:
    """Every NVIDIA GPU (and MIG instance) NVML sees, with memory in use, or why none can be
    seen. One GPU that errors is listed with its error; the others are read as usual."""
    try:
        backend = backend or open_backend()
    except NvmlUnavailable as error:
        return ProbeResult(available=False, reason=f"no NVIDIA GPU visible: {error}")
    try:
        try:
            driver = backend.driver_version()
        except Exception:  # the version is informative only
            driver = None
        try:
            count = backend.device_count()
        except Exception as error:
            reason = f"NVML failed while reading devices: {error_text(error)}"
            return ProbeResult(available=False, reason=reason, driver_version=driver)
        devices = [device for index in range(count) for device in _probe_gpu(backend, index)]
    finally:
        backend.close()
    if not devices:
        reason = "no NVIDIA GPU visible: NVML reports 0 devices"
        return ProbeResult(available=False, reason=reason, driver_version=driver)
    if all(device.memory is None for device in devices):
        errors = "; ".join(f"{d.label}: {d.error}" for d in devices)
        reason = f"NVML sees {count} GPU(s) but failed while reading devices ({errors})"
        return ProbeResult(available=False, reason=reason, driver_version=driver, devices=devices)
    return ProbeResult(available=True, driver_version=driver, devices=devices)


def _watched_devices(backend: NvmlBackend, count: int) -> list[tuple[int, int | None]]:
    """(GPU, MIG instance or None) of every device a run can use: a GPU in MIG mode is watched
    through its instances, since its own memory counts every instance's."""
    watched: list[tuple[int, int | None]] = []
    for index in range(count):
        try:
            migs = backend.mig_indices(index)
        except Exception:  # a GPU that errors now is watched, and its errors reported, as a GPU
            migs = None
        watched.extend([(index, mig) for mig in migs] if migs else [(index, None)])
    return watched


def _read_device(backend: NvmlBackend, index: int, mig: int | None) -> DeviceReading:
    reading = DeviceReading(index=index) if mig is None else DeviceReading(index=mig, parent=index)
    try:
        memory = backend.memory(index, mig)
    except Exception as error:
        reading.error = error_text(error)
        return reading
    reading.used_bytes, reading.total_bytes = memory.used, memory.total
    try:
        reading.processes = backend.processes(index, mig)
    except Exception as error:  # NVMLError, or an old driver's plain Exception
        reading.processes_error = error_text(error)
    return reading


def device_reader(
    backend: NvmlBackend | None = None,
) -> Callable[[], list[DeviceReading]] | None:
    """A function that reads every watched device once (see `_watched_devices`), or None where
    NVML sees no GPU. It never raises: a device that errors is a reading with `error`. The
    caller keeps the backend open by keeping the function."""
    try:
        backend = backend or open_backend()
        count = backend.device_count()
    except Exception:  # NvmlUnavailable, or NVML failing at its first question
        if backend is not None:
            backend.close()
        return None
    watched = _watched_devices(backend, count)
    if not watched:
        backend.close()
        return None
    return lambda: [_read_device(backend, index, mig) for index, mig in watched]

"""NVML probes behind one small protocol: the real `pynvml` adapter and a fake for tests.

`probe()` answers "which NVIDIA GPUs does this machine have, and how much memory is in use" —
or, plainly, why it cannot tell (no driver, no permission, library mismatch). NVML has no
high-water mark, so callers poll `memory()` and work with deltas from a baseline (FACTS
"NVML"). pynvml is imported inside `PynvmlBackend` only: `advisor plan` never loads it.
"""

from __future__ import annotations

import contextlib
import json
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


class NvmlUnavailable(RuntimeError):
    """NVML cannot be used on this machine; the message says why in plain words."""


class GpuMemory(BaseModel):
    """One device's memory as NVML reports it, in bytes."""

    total: int
    used: int
    free: int
    reserved: int | None = Field(default=None, description="driver-reserved (nvmlMemory_v2)")


class GpuDevice(BaseModel):
    """One NVIDIA device: index, name, memory, and the profile it matches (if any)."""

    index: int
    name: str
    uuid: str | None = None
    memory: GpuMemory
    profile: str | None = Field(default=None, description="the profiles/gpus/ entry it matches")


class ProbeResult(BaseModel):
    """What `advisor probe --json` prints."""

    available: bool
    reason: str | None = None
    driver_version: str | None = None
    devices: list[GpuDevice] = Field(default_factory=list)


class NvmlBackend(Protocol):
    """The calls the project makes; both adapters implement exactly these."""

    def driver_version(self) -> str: ...

    def device_count(self) -> int: ...

    def device_name(self, index: int) -> str: ...

    def device_uuid(self, index: int) -> str | None: ...

    def memory(self, index: int) -> GpuMemory: ...

    def close(self) -> None: ...


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
        except Exception as error:  # old drivers raise plain Exceptions (FACTS "NVML")
            raise NvmlUnavailable(f"NVML failed to start: {error}") from None
        self._handles: dict[int, object] = {}

    def _handle(self, index: int) -> object:
        if index not in self._handles:
            self._handles[index] = self._nvml.nvmlDeviceGetHandleByIndex(index)
        return self._handles[index]

    def driver_version(self) -> str:
        return _text(self._nvml.nvmlSystemGetDriverVersion())

    def device_count(self) -> int:
        return int(self._nvml.nvmlDeviceGetCount())

    def device_name(self, index: int) -> str:
        return _text(self._nvml.nvmlDeviceGetName(self._handle(index)))

    def device_uuid(self, index: int) -> str | None:
        try:
            return _text(self._nvml.nvmlDeviceGetUUID(self._handle(index)))
        except Exception:  # not every driver answers; the uuid is optional
            return None

    def memory(self, index: int) -> GpuMemory:
        nvml, handle = self._nvml, self._handle(index)
        try:
            info = nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2)
            reserved = int(info.reserved)
        except Exception:  # drivers without v2 answer v1 only (FACTS "NVML")
            info = nvml.nvmlDeviceGetMemoryInfo(handle)
            reserved = None
        return GpuMemory(
            total=int(info.total), used=int(info.used), free=int(info.free), reserved=reserved
        )

    def close(self) -> None:
        # Shutting down twice or after a lost driver is harmless.
        with contextlib.suppress(Exception):
            self._nvml.nvmlShutdown()


class FakeBackend:
    """Replays a recorded JSON fixture: {"driver_version", "devices": [{"name", "uuid",
    "memory": [{"total", "used", "free", "reserved"}, ...]}]}; each `memory()` call returns the
    next recorded sample of that device (the last one repeats)."""

    def __init__(self, fixture: dict | str | Path) -> None:
        if not isinstance(fixture, dict):
            fixture = json.loads(Path(fixture).read_text(encoding="utf-8"))
        if fixture.get("unavailable"):
            raise NvmlUnavailable(str(fixture["unavailable"]))
        self._fixture = fixture
        self._calls: dict[int, int] = {}

    def driver_version(self) -> str:
        return str(self._fixture.get("driver_version", "unknown"))

    def device_count(self) -> int:
        return len(self._fixture.get("devices", []))

    def _device(self, index: int) -> dict:
        return self._fixture["devices"][index]

    def device_name(self, index: int) -> str:
        return str(self._device(index)["name"])

    def device_uuid(self, index: int) -> str | None:
        return self._device(index).get("uuid")

    def memory(self, index: int) -> GpuMemory:
        samples = self._device(index)["memory"]
        call = self._calls.get(index, 0)
        self._calls[index] = call + 1
        return GpuMemory(**samples[min(call, len(samples) - 1)])

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
    from planner.errors import PlanError
    from planner.gpus import resolve_gpu

    try:
        return resolve_gpu(name).name
    except PlanError:
        return None


def probe(backend: NvmlBackend | None = None) -> ProbeResult:
    """Every NVIDIA GPU NVML sees, with memory in use, or why none can be seen."""
    try:
        backend = backend or open_backend()
    except NvmlUnavailable as error:
        return ProbeResult(available=False, reason=f"no NVIDIA GPU visible: {error}")
    try:
        devices = []
        for index in range(backend.device_count()):
            name = backend.device_name(index)
            devices.append(
                GpuDevice(
                    index=index,
                    name=name,
                    uuid=backend.device_uuid(index),
                    memory=backend.memory(index),
                    profile=_profile_name(name),
                )
            )
        driver = backend.driver_version()
    except Exception as error:  # a GPU lost mid-probe, an old driver's plain Exception
        return ProbeResult(available=False, reason=f"NVML failed while reading devices: {error}")
    finally:
        backend.close()
    if not devices:
        reason = "no NVIDIA GPU visible: NVML reports 0 devices"
        return ProbeResult(available=False, reason=reason, driver_version=driver)
    return ProbeResult(available=True, driver_version=driver, devices=devices)


def memory_reader(backend: NvmlBackend | None = None):
    """A function returning [(index, used bytes, total bytes)] per device for polling, or None
    where NVML sees no GPU. The caller keeps the backend open by keeping the function."""
    try:
        backend = backend or open_backend()
    except NvmlUnavailable:
        return None
    count = backend.device_count()
    if count == 0:
        backend.close()
        return None

    def read() -> list[tuple[int, int, int]]:
        readings = []
        for index in range(count):
            memory = backend.memory(index)
            readings.append((index, memory.used, memory.total))
        return readings

    return read

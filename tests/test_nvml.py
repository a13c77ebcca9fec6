"""NVML probes: the fake backend replays fixtures; the real adapter is driven through pynvml's
own ctypes structs with its functions monkeypatched."""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

import pynvml
import pytest

from advisor.cli import main
from planner.nvml import FakeBackend, PynvmlBackend, device_reader, probe

FIXTURES = Path(__file__).parent / "fixtures" / "nvml"
GIB = 2**30


def test_probe_lists_devices_and_matches_profiles():
    result = probe(FakeBackend(FIXTURES / "a100x2.json"))
    assert result.available and result.driver_version == "550.54.15"
    assert [d.profile for d in result.devices] == ["A100-80GB", "A100-80GB"]
    assert result.devices[0].memory.total == 80 * 2**30


def test_card_without_a_profile_is_listed_without_one():
    result = probe(FakeBackend(FIXTURES / "unknown-card.json"))
    assert result.devices[0].name == "NVIDIA RTX A6000" and result.devices[0].profile is None


def test_device_reader_replays_samples_in_order():
    read = device_reader(FakeBackend(FIXTURES / "a100x2.json"))
    first, second = read(), read()
    assert first[0].used_bytes == 524288000 and second[0].used_bytes == 20971520000
    assert second[1].used_bytes == 524288000  # the last sample repeats


def test_one_lost_gpu_is_listed_with_its_error_and_the_others_as_usual():
    result = probe(FakeBackend(FIXTURES / "gpu1-lost.json"))
    assert result.available
    good, lost = result.devices
    assert good.profile == "A100-80GB" and good.memory.used == GIB // 2 and good.error is None
    assert (lost.index, lost.error, lost.memory) == (1, "GPU is lost", None)


def test_a_gpu_in_mig_mode_is_listed_with_its_instances_as_devices():
    result = probe(FakeBackend(FIXTURES / "mig.json"))
    where = [(d.parent, d.index) for d in result.devices]
    assert where == [(None, 0), (0, 0), (0, 2), (None, 1)]  # slot 1 is empty
    gpu, first, third, other = result.devices
    assert gpu.mig_enabled and gpu.profile == "A100-80GB" and not other.mig_enabled
    assert first.name.endswith("MIG 3g.40gb") and first.uuid == "MIG-3333-a0"
    assert first.profile is None  # a slice is not the card its profile describes
    assert first.memory.total < gpu.memory.total and third.memory.used == 5422396211
    assert first.label == "GPU 0 MIG 0"


def test_the_reader_watches_mig_instances_not_the_gpu_that_holds_them():
    readings = device_reader(FakeBackend(FIXTURES / "mig.json"))()
    assert [(r.parent, r.index) for r in readings] == [(0, 0), (0, 2), (None, 1)]
    assert readings[1].processes[0].pid == 3003 and readings[0].processes == []


def test_a_device_that_fails_mid_run_is_a_reading_with_an_error():
    fixture = json.loads((FIXTURES / "a100x2.json").read_text())
    fixture["devices"][1]["memory"].append({"error": "GPU is lost"})
    fixture["devices"][0]["processes"] = [{"error": "Unknown Error"}]
    read = device_reader(FakeBackend(fixture))
    read()
    zero, one = read()
    assert one.error == "GPU is lost" and one.used_bytes is None
    assert zero.used_bytes == 20971520000 and zero.processes_error == "Unknown Error"


def test_gpus_that_all_fail_make_no_gpu_available_but_are_listed():
    fixture = {"devices": [{"name": "x", "error": "Insufficient Permissions"}]}
    result = probe(FakeBackend(fixture))
    assert not result.available and "GPU 0: Insufficient Permissions" in result.reason
    assert result.devices[0].error == "Insufficient Permissions"


def test_probe_command_says_plainly_when_there_is_no_gpu(monkeypatch, capsys):
    monkeypatch.setenv("ADVISOR_FAKE_NVML", str(FIXTURES / "no-driver.json"))
    assert main(["probe", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["available"] is False
    assert "no NVIDIA GPU" in result["reason"] and "not installed" in result["reason"]


def test_probe_command_json_lists_fake_devices(monkeypatch, capsys):
    monkeypatch.setenv("ADVISOR_FAKE_NVML", str(FIXTURES / "a100x2.json"))
    assert main(["probe", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["devices"]) == 2
    assert main(["probe"]) == 0
    assert "A100-80GB" in capsys.readouterr().out


def test_probe_command_shows_a_gpus_error_and_mig_instances(monkeypatch, capsys):
    monkeypatch.setenv("ADVISOR_FAKE_NVML", str(FIXTURES / "gpu1-lost.json"))
    assert main(["probe", "--json"]) == 0
    devices = json.loads(capsys.readouterr().out)["devices"]
    assert [d["error"] for d in devices] == [None, "GPU is lost"]
    monkeypatch.setenv("COLUMNS", "160")
    assert main(["probe"]) == 0
    assert "GPU is lost" in capsys.readouterr().out
    monkeypatch.setenv("ADVISOR_FAKE_NVML", str(FIXTURES / "mig.json"))
    assert main(["probe", "--json"]) == 0
    devices = json.loads(capsys.readouterr().out)["devices"]
    assert [d["parent"] for d in devices] == [None, 0, 0, None] and devices[0]["mig_enabled"]
    assert main(["probe"]) == 0
    out = capsys.readouterr().out
    assert "0 MIG 2" in out and "MIG 3g.40gb" in out and "MIG on" in out


def _handle_key(handle) -> str:
    """`handle0` for a GPU (the fake hands out strings), `handle0-mig2` for a MIG handle."""
    if isinstance(handle, str):
        return handle
    value = ctypes.cast(handle, ctypes.c_void_p).value
    return f"handle{(value >> 8) - 1}-mig{value & 0xFF}"


def _fake_library(state):
    """NVML's C functions as pynvml calls them (through _nvmlGetFunctionPointer), filling
    pynvml's own ctypes structs, so that pynvml's wrappers run unchanged."""

    def mig_mode(device, current, pending):
        if _handle_key(device) not in state["mig"]:
            return pynvml.NVML_ERROR_NOT_SUPPORTED
        current._obj.value = pending._obj.value = pynvml.NVML_DEVICE_MIG_ENABLE
        return pynvml.NVML_SUCCESS

    def max_mig_count(device, count):
        count._obj.value = len(state["mig"][_handle_key(device)])
        return pynvml.NVML_SUCCESS

    def mig_handle(device, index, out):
        key = _handle_key(device)
        if state["mig"][key][index.value] is None:
            return pynvml.NVML_ERROR_NOT_FOUND
        value = ((int(key.removeprefix("handle")) + 1) << 8) | index.value
        ctypes.c_void_p.from_address(ctypes.addressof(out._obj)).value = value
        return pynvml.NVML_SUCCESS

    def running(kind):
        def listing(handle, count, array):
            processes = state[kind].get(_handle_key(handle), [])
            count._obj.value = len(processes)
            if array is None:
                return pynvml.NVML_ERROR_INSUFFICIENT_SIZE if processes else pynvml.NVML_SUCCESS
            for slot, (pid, used) in enumerate(processes):
                array[slot].pid = pid
                array[slot].usedGpuMemory = (
                    pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value if used is None else used
                )
            return pynvml.NVML_SUCCESS

        return listing

    functions = {
        "nvmlDeviceGetMigMode": mig_mode,
        "nvmlDeviceGetMaxMigDeviceCount": max_mig_count,
        "nvmlDeviceGetMigDeviceHandleByIndex": mig_handle,
        "nvmlDeviceGetComputeRunningProcesses_v3": running("compute"),
        "nvmlDeviceGetComputeRunningProcesses_v2": running("compute"),
        "nvmlDeviceGetGraphicsRunningProcesses_v3": running("graphics"),
        "nvmlDeviceGetGraphicsRunningProcesses_v2": running("graphics"),
    }

    def pointer(name):
        if name not in functions or name in state["missing"]:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        return functions[name]

    return pointer


@pytest.fixture
def fake_driver(monkeypatch):
    """pynvml's functions answering with its own ctypes structs, as a driver would: memory
    and names through its Python functions; MIG and process lists through its C function
    pointers, so that pynvml's own wrappers and structs do the work."""
    state = {
        "v2": True,
        "shutdown": 0,
        "count": 1,
        "lost": set(),  # handle keys whose calls fail with GPU_IS_LOST
        "used": {},  # handle key -> bytes used (2 GiB by default)
        "mig": {},  # GPU handle key -> MIG slots (None: empty); absent: MIG not supported
        "compute": {},  # handle key -> [(pid, bytes or None)]
        "graphics": {},
        "missing": set(),  # C functions this "driver" lacks
    }

    def check(handle):
        if _handle_key(handle) in state["lost"]:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return _handle_key(handle)

    def memory_info(handle, version=None):
        key = check(handle)
        if version is not None:
            if not state["v2"]:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
            info = pynvml.c_nvmlMemory_v2_t()
            info.reserved = 300 * 2**20
        else:
            info = pynvml.c_nvmlMemory_t()
        total = 20 * GIB if "mig" in key else 80 * GIB
        info.total, info.used = total, state["used"].get(key, 2 * GIB)
        info.free = info.total - info.used
        return info

    def name(handle):
        key = check(handle)
        return b"NVIDIA H100 80GB HBM3 MIG 2g.20gb" if "mig" in key else b"NVIDIA H100 80GB HBM3"

    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: state.__setitem__("shutdown", 1))
    monkeypatch.setattr(pynvml, "nvmlSystemGetDriverVersion", lambda: "550.54.15")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: state["count"])
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda i: f"handle{i}")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetName", name)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetUUID", lambda h: f"GPU-{_handle_key(h)}")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", memory_info)
    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer", _fake_library(state))
    return state


def test_real_adapter_reads_memory_v2_structs(fake_driver):
    result = probe(PynvmlBackend())
    device = result.devices[0]
    assert device.name == "NVIDIA H100 80GB HBM3" and device.profile == "H100-80GB"
    assert device.memory.reserved == 300 * 2**20 and device.memory.used == 2 * 2**30
    assert fake_driver["shutdown"] == 1


def test_real_adapter_falls_back_to_v1_memory_on_old_drivers(fake_driver):
    fake_driver["v2"] = False
    device = probe(PynvmlBackend()).devices[0]
    assert device.memory.reserved is None and device.memory.total == 80 * 2**30


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "not installed"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "not loaded"),
        (pynvml.NVML_ERROR_NO_PERMISSION, "permission"),
        (pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH, "do not match"),
    ],
)
def test_nvml_start_errors_become_plain_reasons(monkeypatch, code, words):
    def fail():
        raise pynvml.NVMLError(code)

    monkeypatch.setattr(pynvml, "nvmlInit", fail)
    result = probe()
    assert not result.available and words in result.reason


def test_plain_exception_from_an_old_driver_is_unavailable_too(monkeypatch):
    class NVMLLibraryMismatchError(Exception):
        pass

    def fail():
        raise NVMLLibraryMismatchError("Unversioned function called")

    monkeypatch.setattr(pynvml, "nvmlInit", fail)
    assert probe().available is False


def test_wizard_prefills_the_gpu_from_nvml(monkeypatch):
    from advisor.wizard.gpu_detect import detect_gpu

    monkeypatch.setenv("ADVISOR_FAKE_NVML", str(FIXTURES / "a100x2.json"))
    assert detect_gpu() == ("a100-80gb", 2)
    monkeypatch.setenv("ADVISOR_FAKE_NVML", str(FIXTURES / "unknown-card.json"))
    assert detect_gpu() is None
    monkeypatch.setenv("ADVISOR_FAKE_NVML", str(FIXTURES / "no-driver.json"))
    assert detect_gpu() is None


def test_the_wizard_counts_readable_whole_gpus_only(monkeypatch):
    from advisor.wizard.gpu_detect import detect_gpu

    monkeypatch.setenv("ADVISOR_FAKE_NVML", str(FIXTURES / "gpu1-lost.json"))
    assert detect_gpu() == ("a100-80gb", 1)  # the lost GPU is not planned for
    monkeypatch.setenv("ADVISOR_FAKE_NVML", str(FIXTURES / "mig.json"))
    assert detect_gpu() is None  # a MIG slice is not the card the profile describes


def test_an_nvml_error_while_reading_devices_is_an_answer_not_a_crash(fake_driver, monkeypatch):
    def lost(handle):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetName", lost)
    result = probe(PynvmlBackend())
    assert not result.available and "reading devices" in result.reason
    assert result.devices[0].error == "GPU is lost"
    assert fake_driver["shutdown"] == 1


def test_real_adapter_lists_the_gpus_around_one_that_is_lost(fake_driver):
    fake_driver["count"] = 3
    fake_driver["lost"] = {"handle1"}
    result = probe(PynvmlBackend())
    assert result.available
    assert [d.error for d in result.devices] == [None, "GPU is lost", None]
    assert result.devices[2].memory.used == 2 * GIB


def test_real_adapter_finds_mig_instances_through_pynvml(fake_driver):
    fake_driver["count"] = 2
    fake_driver["mig"] = {"handle0": [True, None, True]}  # slot 1 is empty
    fake_driver["used"] = {"handle0-mig2": 7 * GIB}
    result = probe(PynvmlBackend())
    assert [(d.parent, d.index) for d in result.devices] == [(None, 0), (0, 0), (0, 2), (None, 1)]
    mig = result.devices[2]
    assert mig.uuid == "GPU-handle0-mig2" and mig.name.endswith("MIG 2g.20gb")
    assert (mig.memory.used, mig.memory.total) == (7 * GIB, 20 * GIB) and mig.profile is None
    assert result.devices[0].mig_enabled and not result.devices[3].mig_enabled
    readings = device_reader(PynvmlBackend())()
    assert [(r.parent, r.index, r.used_bytes) for r in readings] == [
        (0, 0, 2 * GIB),
        (0, 2, 7 * GIB),
        (None, 1, 2 * GIB),
    ]


def test_real_adapter_reads_process_structs_and_memory_it_cannot_see(fake_driver):
    fake_driver["compute"] = {"handle0": [(4242, 5 * GIB), (77, None)]}
    fake_driver["graphics"] = {"handle0": [(4242, 5 * GIB), (88, GIB)]}
    processes = PynvmlBackend().processes(0)
    assert {(p.pid, p.used_bytes) for p in processes} == {(4242, 5 * GIB), (77, None), (88, GIB)}


def test_real_adapter_on_an_old_driver_falls_back_to_the_v2_process_call(fake_driver):
    fake_driver["compute"] = {"handle0": [(4242, 3 * GIB)]}
    fake_driver["missing"] = {
        "nvmlDeviceGetComputeRunningProcesses_v3",
        "nvmlDeviceGetGraphicsRunningProcesses_v3",
    }
    with pytest.raises(pynvml.NVMLLibraryMismatchError):  # what the old driver gives (FACTS)
        pynvml.nvmlDeviceGetComputeRunningProcesses("handle0")
    assert [(p.pid, p.used_bytes) for p in PynvmlBackend().processes(0)] == [(4242, 3 * GIB)]


def test_a_driver_that_cannot_list_processes_still_reports_memory(fake_driver):
    fake_driver["missing"] = {
        "nvmlDeviceGetComputeRunningProcesses_v3",
        "nvmlDeviceGetComputeRunningProcesses_v2",
    }
    (reading,) = device_reader(PynvmlBackend())()
    assert reading.used_bytes == 2 * GIB and reading.processes is None
    assert "Function Not Found" in reading.processes_error


def test_launch_samples_gpu_memory_through_the_same_adapter(monkeypatch):
    from runners.validation import nvml_reader

    monkeypatch.setenv("ADVISOR_FAKE_NVML", str(FIXTURES / "a100x2.json"))
    read = nvml_reader()
    assert [g["used_bytes"] for g in read()] == [524288000, 524288000]
    assert read()[0]["used_bytes"] == 20971520000
    monkeypatch.setenv("ADVISOR_FAKE_NVML", str(FIXTURES / "no-driver.json"))
    assert nvml_reader() is None


def test_an_nvml_error_while_sampling_reaches_the_sampler_as_data(fake_driver, tmp_path):
    from runners.validation import GpuSampler, nvml_reader

    fake_driver["count"] = 2
    sampler = GpuSampler(tmp_path / "gpu.jsonl", nvml_reader(PynvmlBackend()))
    sampler.sample()
    fake_driver["lost"] = {"handle1"}
    sampler.sample()  # must not raise
    last = json.loads((tmp_path / "gpu.jsonl").read_text().splitlines()[-1])
    assert last["gpus"][1] == {"index": 1, "error": "GPU is lost"}
    assert last["gpus"][0]["used_bytes"] == 2 * GIB
    assert "GPU 1: GPU is lost" in sampler.status()

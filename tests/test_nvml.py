"""NVML probes: the fake backend replays fixtures; the real adapter is driven through pynvml's
own ctypes structs with its functions monkeypatched."""

from __future__ import annotations

import json
from pathlib import Path

import pynvml
import pytest

from advisor.cli import main
from planner.nvml import FakeBackend, PynvmlBackend, memory_reader, probe

FIXTURES = Path(__file__).parent / "fixtures" / "nvml"


def test_probe_lists_devices_and_matches_profiles():
    result = probe(FakeBackend(FIXTURES / "a100x2.json"))
    assert result.available and result.driver_version == "550.54.15"
    assert [d.profile for d in result.devices] == ["A100-80GB", "A100-80GB"]
    assert result.devices[0].memory.total == 80 * 2**30


def test_card_without_a_profile_is_listed_without_one():
    result = probe(FakeBackend(FIXTURES / "unknown-card.json"))
    assert result.devices[0].name == "NVIDIA RTX A6000" and result.devices[0].profile is None


def test_memory_reader_replays_samples_in_order():
    read = memory_reader(FakeBackend(FIXTURES / "a100x2.json"))
    first, second = read(), read()
    assert first[0][1] == 524288000 and second[0][1] == 20971520000
    assert second[1][1] == 524288000  # the last sample repeats


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


@pytest.fixture
def fake_driver(monkeypatch):
    """pynvml's functions answering with its own ctypes structs, as a driver would."""
    state = {"v2": True, "shutdown": 0}

    def memory_info(handle, version=None):
        if version is not None:
            if not state["v2"]:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
            info = pynvml.c_nvmlMemory_v2_t()
            info.reserved = 300 * 2**20
        else:
            info = pynvml.c_nvmlMemory_t()
        info.total, info.used, info.free = 80 * 2**30, 2 * 2**30, 78 * 2**30
        return info

    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: state.__setitem__("shutdown", 1))
    monkeypatch.setattr(pynvml, "nvmlSystemGetDriverVersion", lambda: "550.54.15")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: 1)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda i: f"handle{i}")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetName", lambda h: b"NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetUUID", lambda h: "GPU-abc")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", memory_info)
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


def test_an_nvml_error_while_reading_devices_is_an_answer_not_a_crash(fake_driver, monkeypatch):
    def lost(handle):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetName", lost)
    result = probe(PynvmlBackend())
    assert not result.available and "reading devices" in result.reason
    assert fake_driver["shutdown"] == 1


def test_launch_samples_gpu_memory_through_the_same_adapter(monkeypatch):
    from runners.validation import nvml_reader

    monkeypatch.setenv("ADVISOR_FAKE_NVML", str(FIXTURES / "a100x2.json"))
    read = nvml_reader()
    assert [g["used_bytes"] for g in read()] == [524288000, 524288000]
    assert read()[0]["used_bytes"] == 20971520000
    monkeypatch.setenv("ADVISOR_FAKE_NVML", str(FIXTURES / "no-driver.json"))
    assert nvml_reader() is None

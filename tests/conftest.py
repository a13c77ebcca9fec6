"""Fixtures shared by the test files that train: one tiny local model per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from runners.tiny import ensure_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, worker_id) -> Path:
    """A random-weight Llama and a locally trained tokenizer, built once per test session (no
    download): pytest-xdist's workers share the session's temporary root and take turns."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        root = root.parent  # the session's folder, above each worker's own
    with FileLock(str(root / "tiny-llama.lock")):
        return ensure_model(root / "tiny-llama")


@pytest.fixture(autouse=True, scope="session")
def _private_calibration_store(tmp_path_factory):
    """Every test (and the processes it starts) reads and writes a calibration store of its
    session, never the user's cache; a test that needs its own sets ADVISOR_CALIBRATION."""
    import os

    path = tmp_path_factory.mktemp("calibration") / "calibration.jsonl"
    previous = os.environ.get("ADVISOR_CALIBRATION")
    os.environ["ADVISOR_CALIBRATION"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("ADVISOR_CALIBRATION", None)
    else:
        os.environ["ADVISOR_CALIBRATION"] = previous


@pytest.fixture(autouse=True, scope="session")
def _no_hub_network():
    """No test reaches the Hugging Face Hub: HF_HUB_OFFLINE=1 for the session and the processes
    it starts; tests/test_models_hub.py serves a fake Hub on localhost and lifts it there."""
    import os

    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    yield
    if previous is None:
        os.environ.pop("HF_HUB_OFFLINE", None)
    else:
        os.environ["HF_HUB_OFFLINE"] = previous

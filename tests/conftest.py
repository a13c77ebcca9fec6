"""Fixtures shared by the test files that train: one tiny local model per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from runners.tiny import ensure_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A random-weight Llama and a locally trained tokenizer, built once (no download)."""
    return ensure_model(tmp_path_factory.getbasetemp() / "tiny-llama")

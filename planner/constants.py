"""The editable constants in `profiles/constants.toml`: runtime overheads, MFU, defaults."""

from __future__ import annotations

import functools
import tomllib
from typing import Any

from planner.paths import profiles_dir


@functools.cache
def constants() -> dict[str, dict[str, Any]]:
    """The whole constants file, by section (`runtime`, `throughput`, `defaults`)."""
    with (profiles_dir() / "constants.toml").open("rb") as handle:
        return tomllib.load(handle)


def runtime(key: str) -> float:
    return float(constants()["runtime"][key])


def throughput(key: str) -> float:
    return float(constants()["throughput"][key])

"""The editable constants in `profiles/constants.toml` (runtime overheads, MFU, defaults), and
the fixed units the planner counts in: binary byte multiples and the width of each dtype."""

from __future__ import annotations

import functools
import tomllib
from typing import Any

from planner.paths import profiles_dir

KIB = 2**10
MIB = 2**20
GIB = 2**30
"""Binary byte multiples (IEC 80000-13: KiB, MiB, GiB)."""

FP32_BYTES = 4
"""Bytes per float32 element."""
HALF_BYTES = 2
"""Bytes per 16-bit float element, bfloat16 or float16 alike."""
INT8_BYTES = 1
"""Bytes per 8-bit element (bitsandbytes' 8-bit optimizer states)."""


@functools.cache
def constants() -> dict[str, dict[str, Any]]:
    """The whole constants file, by section (`runtime`, `throughput`, `defaults`)."""
    with (profiles_dir() / "constants.toml").open("rb") as handle:
        return tomllib.load(handle)


def runtime(key: str) -> float:
    return float(constants()["runtime"][key])


def throughput(key: str) -> float:
    return float(constants()["throughput"][key])


def learning_rate(method: str) -> tuple[float, float, str]:
    """A method's starting learning rates, (full tuning, LoRA adapters, source)."""
    row = constants()["learning_rate"][method]
    return float(row["full"]), float(row["lora"]), str(row["source"])


def suggestion(key: str) -> float:
    """A share of memory at which the plan starts suggesting a change ([suggestions])."""
    return float(constants()["suggestions"][key])

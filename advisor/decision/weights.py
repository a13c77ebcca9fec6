"""The decision engine's tunable numbers, read from profiles/decision.toml."""

from __future__ import annotations

import functools
import tomllib
from typing import Any

from planner.paths import profiles_dir


@functools.cache
def _table() -> dict[str, dict[str, Any]]:
    with (profiles_dir() / "decision.toml").open("rb") as handle:
        return tomllib.load(handle)


def weight(section: str, key: str) -> float:
    """One number of profiles/decision.toml, e.g. weight("strength", "clear")."""
    return float(_table()[section][key])

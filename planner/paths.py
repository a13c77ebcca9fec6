"""Where the editable data lives: `profiles/` beside the packages, or $ADVISOR_PROFILES."""

from __future__ import annotations

import os
from pathlib import Path


def profiles_dir() -> Path:
    """The profiles folder: GPU specs, model architectures, constants, example interviews."""
    override = os.environ.get("ADVISOR_PROFILES")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / "profiles"

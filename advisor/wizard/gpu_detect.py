"""The machine's GPU, from NVML when it answers, to pre-fill the plan's GPU picker."""

from __future__ import annotations


def detect_gpu() -> tuple[str, int] | None:
    """(GPU profile name, count) of this machine's first NVIDIA GPU, or None.

    None when NVML sees no GPU (no pynvml, no driver, no permission) or the card has no
    profile; the wizard then shows its picker. planner.nvml imports pynvml only when called.
    """
    from planner.nvml import probe

    result = probe()
    if not result.available or result.devices[0].profile is None:
        return None
    return result.devices[0].profile.lower(), len(result.devices)

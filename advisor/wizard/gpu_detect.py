"""The machine's GPU, from NVML when it answers, to pre-fill the plan's GPU picker."""

from __future__ import annotations


def detect_gpu() -> tuple[str, int] | None:
    """(GPU profile name, count) of this machine's readable NVIDIA GPUs of the first GPU's
    kind, or None.

    None when NVML sees no GPU (no pynvml, no driver, no permission), the first readable GPU
    has no profile, or it is split into MIG instances (a slice is not the card a profile
    describes); the wizard then shows its picker. GPUs that NVML cannot read are not
    counted. planner.nvml imports pynvml only when called.
    """
    from planner.nvml import probe

    result = probe()
    gpus = [d for d in result.devices if d.parent is None and d.memory is not None]
    if not result.available or not gpus or gpus[0].profile is None or gpus[0].mig_enabled:
        return None
    return gpus[0].profile.lower(), sum(1 for d in gpus if d.profile == gpus[0].profile)

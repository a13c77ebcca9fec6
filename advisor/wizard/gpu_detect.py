"""The machine's GPU, from NVML when it answers, to pre-fill the plan's GPU picker."""

from __future__ import annotations


def detect_gpu() -> tuple[str, int] | None:
    """(GPU profile name, count) of this machine's first NVIDIA GPU, or None.

    None on any trouble: no pynvml, no driver, no permission, or a card with no profile;
    the wizard then shows its picker. pynvml is imported here so start-up never pays for it.
    """
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            count = pynvml.nvmlDeviceGetCount()
            if count < 1:
                return None
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
        finally:
            pynvml.nvmlShutdown()
        from planner.gpus import resolve_gpu

        if isinstance(name, bytes):
            name = name.decode()
        return resolve_gpu(name).name.lower(), int(count)
    except Exception:  # NVML raises NVMLError and, on old drivers, plain Exceptions
        return None

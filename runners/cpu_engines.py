"""FSDP2 and DeepSpeed on CPU ranks, so a sharded run trains end to end on a machine with no GPU
(the tests, a laptop rehearsing a cluster launch). Used only inside the training process, only
for a run whose RunSpec says `device: cpu` and that accelerate launches with FSDP or DeepSpeed.

What accelerate 1.16 and DeepSpeed 0.19 do on CPU, and what this module changes:

- FSDP: accelerate turns `ACCELERATE_USE_FSDP` into `DistributedType.FSDP` only for accelerator
  device types (`AcceleratorState.__init__`, accelerate/state.py: MULTI_GPU, MULTI_XPU, ...);
  CPU ranks stay MULTI_CPU and train as plain DDP. torch's `fully_shard` itself runs on CPU
  with gloo, so the state is marked FSDP when the trainer hands accelerate an FSDP plugin, and
  accelerate's own FSDP2 preparation (one `fully_shard` per decoder layer, then the root) does
  the rest.
- DeepSpeed: with no accelerator device, `PartialState._prepare_backend` finds no distributed
  backend and counts one process, although DeepSpeed's CPU accelerator has joined every rank
  with gloo; the trainer's batch arithmetic then disagrees with DeepSpeed's. The backend is
  named gloo, as DeepSpeed's CPU accelerator names it.
- DeepSpeed's CPU communication first compiles a shared-memory all-reduce kernel (one to three
  minutes of C++ on first use); gloo's all-reduce does the same work, so the kernel is skipped.
"""

from __future__ import annotations

import os
from typing import Any


def engine_of(accelerate: dict[str, Any]) -> str | None:
    """'fsdp', 'deepspeed' or None for the accelerate config of a run."""
    return {"FSDP": "fsdp", "DEEPSPEED": "deepspeed"}.get(accelerate.get("distributed_type", ""))


def enable(engine: str | None) -> None:
    """Let `engine` run on this process's CPU ranks (see the module's docstring)."""
    if engine == "fsdp":
        _fsdp_on_cpu()
    elif engine == "deepspeed":
        _deepspeed_on_cpu()


def _fsdp_on_cpu() -> None:
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__
    if getattr(original, "_advisor_cpu_fsdp", False):
        return

    def init(self, *args, **kwargs) -> None:
        original(self, *args, **kwargs)
        plugin = kwargs.get("fsdp_plugin")
        if plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = plugin
            # A later AcceleratorState() copies PartialState's shared fields over its own.
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    init._advisor_cpu_fsdp = True  # type: ignore[attr-defined]
    AcceleratorState.__init__ = init


def _deepspeed_on_cpu() -> None:
    import deepspeed.comm.torch as ds_torch
    from accelerate.state import PartialState

    original = PartialState._prepare_backend
    if getattr(original, "_advisor_cpu_deepspeed", False):
        return

    def prepare_backend(self, cpu=False, sagemaker_dp=False, backend=None):
        backend, distributed_type = original(self, cpu, sagemaker_dp, backend)
        if backend is None and not cpu and os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true":
            backend = "gloo"
        return backend, distributed_type

    prepare_backend._advisor_cpu_deepspeed = True  # type: ignore[attr-defined]
    PartialState._prepare_backend = prepare_backend
    ds_torch.build_shm_op = lambda: None

"""The DeepSpeed configuration a run is launched with, as plain data, and the buffers it costs.

`deepspeed_config(request)` is written into the run's TRL config (`deepspeed`, which transformers
hands to DeepSpeed) and the memory model counts the same values, so the bucket sizes the plan
assumes are the ones the run gets. Values are DeepSpeed's own defaults (DeepSpeed docs, "ZeRO
Optimizations for FP16 Training": reduce_bucket_size 5e8, allgather_bucket_size 5e8,
stage3_prefetch_bucket_size 5e7, stage3_max_live_parameters 1e9, stage3_max_reuse_distance 1e9,
stage3_param_persistence_threshold 1e5; overlap_comm on for stage 3), written out explicitly:
they are what an accelerate-generated DeepSpeed config runs with, and what published DeepSpeed
runs measured. Batch-size fields stay "auto": transformers fills them from the TRL config.
"""

from __future__ import annotations

from typing import Any

from planner.constants import FP32_BYTES
from planner.precision import compute_bytes, effective_sharding, is_deepspeed
from planner.specs import Offload, PlanRequest

REDUCE_BUCKET = 500_000_000
ALLGATHER_BUCKET = 500_000_000
PREFETCH_BUCKET = 50_000_000
MAX_LIVE_PARAMETERS = 1_000_000_000
MAX_REUSE_DISTANCE = 1_000_000_000
PERSISTENCE_THRESHOLD = 100_000
SUB_GROUP_SIZE = 1_000_000_000
"""DeepSpeed's default `sub_group_size` (deepspeed/runtime/zero/config.py): ZeRO-3 steps its
optimizer over sub-groups of at most this many elements of a rank's partition."""


def deepspeed_installed() -> bool:
    """Whether the deepspeed package (the optional extra) is importable here: looked up, never
    imported."""
    import importlib.util

    return importlib.util.find_spec("deepspeed") is not None


def zero_stage(request: PlanRequest) -> int | None:
    sharding = effective_sharding(request)
    return int(sharding.value[-1]) if is_deepspeed(sharding) else None


def offload_targets(request: PlanRequest) -> tuple[str, str]:
    """(optimizer, parameters) offload devices: 'cpu' or 'none'."""
    stage = zero_stage(request)
    optimizer = "cpu" if request.offload is not Offload.none else "none"
    params = "cpu" if request.offload is Offload.optimizer_params and stage == 3 else "none"
    return optimizer, params


def deepspeed_config(request: PlanRequest) -> dict[str, Any] | None:
    """The DeepSpeed config for request, or None when it does not run under DeepSpeed."""
    stage = zero_stage(request)
    if stage is None:
        return None
    half = request.precision.half
    optimizer, params = offload_targets(request)
    zero: dict[str, Any] = {
        "stage": stage,
        "offload_optimizer": {"device": optimizer},
        "contiguous_gradients": True,
        "overlap_comm": stage == 3,
        "reduce_bucket_size": REDUCE_BUCKET,
    }
    if stage == 3:
        zero |= {
            "offload_param": {"device": params},
            "stage3_prefetch_bucket_size": PREFETCH_BUCKET,
            "stage3_max_live_parameters": MAX_LIVE_PARAMETERS,
            "stage3_max_reuse_distance": MAX_REUSE_DISTANCE,
            "stage3_param_persistence_threshold": PERSISTENCE_THRESHOLD,
            "stage3_gather_16bit_weights_on_model_save": True,
        }
    else:
        zero["allgather_bucket_size"] = ALLGATHER_BUCKET
    return {
        "bf16": {"enabled": half == "bf16"},
        "fp16": {"enabled": half == "fp16"},
        "zero_optimization": zero,
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
    }


def bucket_bytes(request: PlanRequest) -> float:
    """GPU bytes of DeepSpeed's gradient-reduction buckets, allocated at start-up in the
    gradient dtype: stages 1-2 keep one `reduce_bucket_size` buffer with contiguous gradients,
    two with overlap_comm (deepspeed/runtime/zero/stage_1_and_2.py `ipg_buffer`); stage 3 one
    (stage3.py `__ipg_bucket_flat_buffer`)."""
    config = deepspeed_config(request)
    if config is None:
        return 0.0
    zero = config["zero_optimization"]
    element = compute_bytes(request)  # the gradient dtype: 16-bit under bf16 / fp16
    buffers = 2 if zero["overlap_comm"] and zero["stage"] < 3 else 1
    return buffers * zero["reduce_bucket_size"] * element


def step_gradient_bytes(request: PlanRequest, trainable: int) -> float:
    """GPU bytes DeepSpeed adds during its optimizer step under bf16 / fp16: the rank's 16-bit
    gradient partition flattened into a new buffer, then cast to an fp32 copy while the flat
    one is still referenced, 2 + 4 bytes per element. Stages 1-2 do it for the whole partition
    at once (stage_1_and_2.py `step`: `self.flatten(averaged_gradients)`, `.to(fp32)`); stage
    3 one sub-group of at most `SUB_GROUP_SIZE` elements at a time (stage3.py
    `_prepare_fp32_grad_for_sub_group`). DeepSpeed's own estimators count the fp32 copy (their
    18 = 2 + 4 + 12 bytes per parameter) but not the flat 16-bit one. None with the optimizer
    on the CPU, or in fp32 (the cast is a no-op)."""
    stage = zero_stage(request)
    if stage is None or not request.precision.half or request.offload is not Offload.none:
        return 0.0
    partition = trainable / request.world_size
    if stage == 3:
        partition = min(partition, SUB_GROUP_SIZE)
    return (compute_bytes(request) + FP32_BYTES) * partition


def gathered_params(request: PlanRequest, largest_layer: int) -> float:
    """Parameters live at once under ZeRO-3 beyond the shards: the module in use plus what is
    prefetched (stage3_prefetch_bucket_size), capped by stage3_max_live_parameters."""
    config = deepspeed_config(request)
    if config is None or config["zero_optimization"]["stage"] != 3:
        return 0.0
    zero = config["zero_optimization"]
    return min(
        largest_layer + zero["stage3_prefetch_bucket_size"], zero["stage3_max_live_parameters"]
    )

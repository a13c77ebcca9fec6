"""How a run holds its numbers: load dtype, autocast, master weights and optimizer-state dtype,
and the bytes per trained parameter that follow, for each precision, tuning and sharding.

The memory model counts these bytes and the runners write the same settings into the configs
(TRL's `dtype`, `bf16`/`fp16`, accelerate's `mixed_precision`, DeepSpeed's `bf16`/`fp16`
blocks): both read `precision_plan`. Sources, one line each:

- TRL 1.12 loads a model given by name in float32 unless `dtype` is set (`create_model_from_path`
  in trl/trainer/utils.py; `ModelConfig.dtype` defaults to "float32"); `bf16: true` then autocasts.
- torch.optim.AdamW keeps its two moments in the parameter's dtype (torch/optim/adamw.py).
- DeepSpeed ZeRO with bf16/fp16: 16-bit parameters and gradients, and an fp32 master copy plus
  fp32 Adam moments in the optimizer partition: 2 + 2 + 12 bytes (Rajbhandari et al. 2020, §3;
  DeepSpeed's `estimate_zero3_model_states_mem_needs` counts the same 18 = 2 + 4 + 12 on the CPU).
- accelerate's FSDP2 keeps the sharded parameters in fp32 under mixed precision and gathers each
  layer in the compute dtype (accelerate/utils/fsdp_utils.py `fsdp2_prepare_model`; PyTorch
  `MixedPrecisionPolicy`).
- peft keeps LoRA adapters in fp32 over a 16-bit base (`autocast_adapter_dtype=True`), except
  that TRL turns that off under ZeRO-3 (trl/trainer/dpo_trainer.py, TRL issue #6089); DeepSpeed
  then keeps their fp32 master copy in its optimizer.
"""

from __future__ import annotations

from planner.constants import FP32_BYTES, HALF_BYTES, INT8_BYTES
from planner.specs import (
    Optimizer,
    PlanRequest,
    Precision,
    PrecisionPlan,
    Sharding,
    Tuning,
)

DTYPE = {"bf16": "bfloat16", "fp16": "float16", None: "float32"}
"""Compute dtype names as TRL's `dtype` field spells them."""

TYPICAL_WEIGHT = 0.02
"""A typical magnitude of a transformer weight (the std of Llama / GPT-2 initialisation)."""
BF16_HALF_ULP = 2.0**-9
"""Half a bf16 unit in the last place, relative to the value: bf16 keeps 8 significant bits."""
BF16_UPDATE_FLOOR = TYPICAL_WEIGHT * BF16_HALF_ULP
"""An Adam step (≈ the learning rate) smaller than this rounds away on a typical bf16 weight."""


def effective_sharding(request: PlanRequest) -> Sharding:
    """`none` on more than one GPU means plain data parallelism (DDP)."""
    if request.sharding is Sharding.none and request.world_size > 1:
        return Sharding.ddp
    return request.sharding


def is_deepspeed(sharding: Sharding) -> bool:
    return sharding in (Sharding.zero1, Sharding.zero2, Sharding.zero3)


def adam_moments_bytes(request: PlanRequest, state_bytes: float) -> float:
    """Optimizer moments per trainable parameter: AdamW 2 states in `state_bytes`; 8-bit AdamW
    2 × 1 byte + fp32 block absmax per 256 (bitsandbytes blockwise quantisation, Dettmers et al.
    2022); SGD without momentum 0."""
    if request.optimizer is Optimizer.adamw:
        return 2.0 * state_bytes
    if request.optimizer in (Optimizer.adamw8bit, Optimizer.paged_adamw8bit):
        return 2.0 * (INT8_BYTES + FP32_BYTES / 256)
    return 0.0


def trained_bytes(request: PlanRequest, adapters: bool = False) -> tuple[float, float, float]:
    """(weight, gradient, optimizer) bytes per trained parameter as the run holds them, before
    sharding. `adapters`: LoRA adapters rather than fully trained weights."""
    sharding = effective_sharding(request)
    half = request.precision.half
    fp32, half_bytes = float(FP32_BYTES), float(HALF_BYTES)
    if is_deepspeed(sharding):
        if half is None:
            return fp32, fp32, adam_moments_bytes(request, FP32_BYTES)
        # 16-bit weights and gradients; fp32 master weights + fp32 moments in the optimizer.
        return half_bytes, half_bytes, fp32 + adam_moments_bytes(request, FP32_BYTES)
    if adapters or sharding is Sharding.fsdp or request.precision is not Precision.bf16_true:
        return fp32, fp32, adam_moments_bytes(request, FP32_BYTES)
    # pure bf16: weights, gradients and states
    return half_bytes, half_bytes, adam_moments_bytes(request, HALF_BYTES)


def runnable_precision(precision: Precision, supports_bf16: bool) -> Precision:
    """The precision a GPU can run: fp16-mixed with fp32 master weights in place of bf16 on a
    card without bf16 (T4, V100), else as asked."""
    if precision.half == "bf16" and not supports_bf16:
        return Precision.fp16_mixed
    return precision


def compute_bytes(request: PlanRequest) -> int:
    """Bytes per element of activations and of a frozen LoRA base: 2 under bf16/fp16 (autocast
    or 16-bit weights), else 4."""
    return HALF_BYTES if request.precision.half else FP32_BYTES


def autocast_over_fp32(request: PlanRequest) -> bool:
    """Full tuning with fp32 weights run under 16-bit autocast (TRL's default without DeepSpeed
    or FSDP, which cast or gather the weights in 16-bit). Then the residual stream stays fp32
    (the fp32 embedding output plus each block's 16-bit output promotes), every linear casts
    its input to 16-bit on its own, and each weight's 16-bit cast is kept for backward
    (torch.amp autocast: `cached_cast` caches casts of leaf weights until the region exits)."""
    sharding = effective_sharding(request)
    return (
        request.tuning is Tuning.full
        and request.precision.half is not None
        and request.precision is not Precision.bf16_true
        and not is_deepspeed(sharding)
        and sharding is not Sharding.fsdp
    )


def outputs_in_fp32(request: PlanRequest) -> bool:
    """Whether accelerate runs the forward under its native AMP: autocast, then the model's
    outputs (logits) converted to fp32 (`convert_outputs_to_fp32`). accelerate turns native AMP
    on for bf16 / fp16 except under DeepSpeed, whose engine holds the model in 16-bit itself
    (accelerate/accelerator.py, `self.native_amp`)."""
    return request.precision.half is not None and not is_deepspeed(effective_sharding(request))


def load_dtype(request: PlanRequest) -> str:
    """The dtype the weights are loaded in (TRL's `dtype`): fp32 for mixed-precision full
    tuning, bf16 for bf16-true, the compute dtype for a LoRA / QLoRA base."""
    if request.tuning is not Tuning.full:
        return DTYPE[request.precision.half]
    return "bfloat16" if request.precision is Precision.bf16_true else "float32"


def optimizer_state_dtype(request: PlanRequest, optimizer_bytes: float) -> str:
    """The dtype of the optimizer's moments: bitsandbytes' 8-bit AdamW keeps them as uint8
    blocks with fp32 scales; SGD without momentum keeps none; AdamW keeps them in fp32 unless
    pure bf16 put them in bf16."""
    if request.optimizer in (Optimizer.adamw8bit, Optimizer.paged_adamw8bit):
        return "uint8 (blockwise, fp32 scales)"
    if request.optimizer is Optimizer.sgd:
        return "none"
    fp32_moments = 2 * FP32_BYTES  # AdamW's two moments in fp32
    return (
        "float32"
        if optimizer_bytes >= fp32_moments or request.precision.half is None
        else "bfloat16"
    )


def precision_plan(request: PlanRequest) -> PrecisionPlan:
    """The run's precision as it will really hold it."""
    sharding = effective_sharding(request)
    half = request.precision.half
    full = request.tuning is Tuning.full
    notes: list[str] = []
    weight, grad, optimizer = trained_bytes(request, adapters=not full)
    autocast = half
    master = half is None or request.precision is not Precision.bf16_true or not full
    if is_deepspeed(sharding) and half:
        autocast = None
        master = True
        notes.append(
            f"DeepSpeed casts the model to {half} and keeps fp32 master weights and fp32 Adam "
            "moments in its optimizer: 2 + 2 + 12 bytes per trained parameter (ZeRO paper)"
        )
    elif sharding is Sharding.fsdp and half:
        master = True
        notes.append(
            "accelerate's FSDP keeps sharded fp32 parameters and gathers each layer in "
            f"{half}: 4 + 4 + 8 bytes per trained parameter"
        )
    elif full and request.precision is Precision.bf16_true:
        notes.append("pure bf16: weights, gradients and AdamW moments all in bf16 (8 bytes/param)")
    elif full and half:
        notes.append(
            f"mixed precision: fp32 weights, gradients and AdamW moments (16 bytes/param), "
            f"{half} autocast — TRL's default when the config does not set dtype"
        )
    if not full:
        notes.append(
            f"LoRA: frozen {DTYPE[half]} base, trainable adapters in "
            + ("fp32" if weight == FP32_BYTES else f"{half} with an fp32 master copy")
        )
    if request.precision is Precision.bf16_true and not full:
        notes.append("bf16-true with LoRA: peft still keeps the adapters in fp32")
    return PrecisionPlan(
        load_dtype=load_dtype(request),
        autocast=autocast,
        master_weights=master,
        optimizer_state_dtype=optimizer_state_dtype(request, optimizer),
        weight_bytes=weight,
        gradient_bytes=grad,
        optimizer_bytes=optimizer,
        notes=notes,
    )


def pure_bf16(request: PlanRequest) -> bool:
    """Weights are updated in bf16 itself (no fp32 master): full tuning in bf16-true, unsharded
    or under DDP."""
    return (
        request.tuning is Tuning.full
        and request.precision is Precision.bf16_true
        and not is_deepspeed(effective_sharding(request))
        and effective_sharding(request) is not Sharding.fsdp
    )


def learning_rate_warning(request: PlanRequest, learning_rate: float) -> str | None:
    """A warning when pure bf16 would round most weight updates of `learning_rate` to zero."""
    if not pure_bf16(request) or learning_rate >= BF16_UPDATE_FLOOR:
        return None
    return (
        f"bf16-true: a learning rate of {learning_rate:g} is below half a bf16 step of a typical "
        f"weight ({TYPICAL_WEIGHT} × 2^-9 ≈ {BF16_UPDATE_FLOOR:.1e}), so most updates round to "
        "zero; use --precision bf16-mixed (fp32 master weights) or a higher learning rate"
    )

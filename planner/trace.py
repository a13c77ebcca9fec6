"""The traced memory estimate (`advisor plan --trace`): one training step on fake tensors.

A real Hugging Face architecture is built from its config inside PyTorch's ``FakeTensorMode``
(CPU, nothing allocated) and one training step runs the way TRL 1.12 runs it: the method's
forwards (policy, reference, KTO's KL batch), its logits -> loss chain including the no-grad
metrics that touch the full logits, backward, gradient clipping, the optimizer step and
``zero_grad``. ``MemTracker`` counts every tensor's bytes by category as the step goes; the
result is the tensor-level peak, where it falls and what is live there. This is the ground
truth that the analytic model (``planner.memory``) is checked against. CUDA-only terms (context,
allocator rounding and slack, cuBLAS/NCCL workspaces) are not tensors and stay out of it.

Importing this module imports neither torch nor transformers nor peft: they are imported inside
the functions that need them, so ``advisor plan`` without ``--trace`` stays fast.

What a traced step assumes (each also appears in ``TraceResult.notes``):

- The model is loaded as the runners load it, in the dtype the plan states
  (``planner.precision``): bf16-mixed full tuning loads fp32 weights and runs its forwards under
  bf16 autocast (fp32 gradients and AdamW states); bf16-true loads bf16 weights (bf16 grads and
  states); fp16-mixed is fp32 weights under fp16 autocast; LoRA's frozen base is in the compute
  dtype and its adapters in fp32, as peft makes them.
- The runners set ``bf16=True`` (or ``fp16=True``), so accelerate wraps every prepared model's
  forward in autocast and converts its outputs to fp32: the logits the loss sees are an fp32
  copy. SFT uses TRL 1.12's default ``loss_type="chunked_nll"`` and never holds full logits.
- The optimizer and LoRA are what the runners configure (``adamw_torch``: AdamW with foreach on
  CUDA; LoRA alpha 2r, dropout 0.05, which TRL disables in every trainer but SFT's).
- Steady state: optimizer states exist before the step; with ``grad_accum > 1`` the traced
  micro-batch is the last of its window, so the gradients of the earlier ones are live from the
  start; ``zero_grad(set_to_none=True)`` ends the step.
- Batches are full length with the prompt/completion split of the request; the attention mask
  is materialised as for a padded batch (fake tensors cannot tell it is all ones; real batches
  are padded), so sdpa keeps a B x 1 x S x S mask per layer for backward. KTO batches are half
  desirable, half undesirable.
- Where CUDA differs from CPU in what it allocates, the CUDA behaviour is emulated: dropout
  keeps a bool mask (fused kernel); logsumexp allocates ``self - max`` inside the op.

Checked against TRL itself: tests/test_trace.py runs TRL 1.12's own loss code on real CPU
tensors through the same tracker and requires the fake trace to match it byte for byte.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from planner import precision
from planner.errors import PlanError
from planner.memory import ADAMW_OPTIM
from planner.precision import load_dtype
from planner.recipes import LORA_ALPHA_PER_RANK, LORA_DROPOUT, RECIPES
from planner.specs import (
    Attention,
    LoraTargets,
    Method,
    Offload,
    Optimizer,
    PlanRequest,
    Sharding,
    Tuning,
)

TRACED_METHODS = (Method.sft, Method.dpo, Method.kto, Method.orpo, Method.simpo, Method.reward)
"""Methods whose step ``trace_step`` runs; ppo/grpo/rloo (generation) stay analytic."""

CATEGORIES = (
    "params",
    "adapters",
    "reference_model",
    "buffers",
    "grads",
    "activations",
    "temporaries",
    "optimizer",
    "other",
)
"""Byte categories of a trace. MemTracker's own (params, buffers, grads, activations,
temporaries, optimizer, other) with its parameter bytes split three ways: ``params`` is the
trained model's own weights (for LoRA the frozen base), ``adapters`` what peft adds (LoRA A/B,
``modules_to_save`` copies), ``reference_model`` a separate frozen reference's weights.
``other`` holds the batch's input tensors."""

PHASES = (
    "kl_forward",
    "forward",
    "loss",
    "reference_forward",
    "backward",
    "optimizer_step",
)
"""Parts of the step, in the order TRL 1.12 runs them (KTO's no-grad KL pass first; DPO and KTO
run the reference after the policy forward). ``loss`` is everything done with the policy's
logits: log-probs, the loss and the no-grad metrics (entropy, token accuracy, mean logits).
``reference_forward`` includes the reference's log-probs; ``optimizer_step`` includes gradient
clipping and ``zero_grad``."""

LORA_TARGET_MODULES: dict[LoraTargets, list[str] | str] = {
    LoraTargets.qv: ["q_proj", "v_proj"],
    LoraTargets.attention: ["q_proj", "k_proj", "v_proj", "o_proj"],
    LoraTargets.all_linear: "all-linear",
}

DISABLES_DROPOUT = frozenset(m for m, r in RECIPES.items() if r.disables_dropout)
"""Methods whose TRL 1.12 config has ``disable_dropout=True`` by default (from the recipes)."""

ADAMW_IMPLEMENTATION = ADAMW_OPTIM
"""The transformers ``optim`` the runners use for ``--optimizer adamw`` (planner.memory
ADAMW_OPTIM): ``adamw_torch_fused`` steps in one kernel with no temporaries;
``adamw_torch`` (foreach on CUDA) would allocate one state-sized ``exp_avg_sq.sqrt()``."""

EAGER_ONLY_MODEL_TYPES = frozenset({"gemma2"})
"""Architectures traced with eager attention: Gemma2 with sdpa raises in transformers 5.24
(softcapping), and eager is what its model card asks for."""

EMULATE_CUDA_WORKSPACES = True
"""Allocate, for their duration, the buffers CUDA kernels allocate inside a single op that fake
tensors cannot see (logsumexp's ``self - max``). Off only to compare with a CPU run."""

_NOT_TRACED = (
    "--trace covers sft, dpo, kto, orpo, simpo and reward; ppo/grpo/rloo are estimated analytically"
)


class TraceResult(BaseModel):
    """Tensor bytes of one traced training step (no CUDA context, allocator slack or workspaces)."""

    peak_bytes: int = Field(description="total tensor bytes at the step's peak")
    peak_phase: str = Field(description="the phase of the step where the peak falls")
    at_peak_bytes: dict[str, int] = Field(
        description="bytes per category at the moment of the peak"
    )
    max_bytes: dict[str, int] = Field(description="each category's own maximum over the step")
    phase_peaks: dict[str, int] = Field(description="peak total bytes within each phase")
    seconds: float = Field(description="wall time of the trace")
    model_params: int = Field(
        default=0, description="parameters of the trained model (no adapters)"
    )
    trainable_params: int = Field(default=0, description="parameters the optimizer updates")
    reference_params: int = Field(default=0, description="parameters of a separate reference model")
    weight_dtype: str = Field(default="", description="dtype the model's weights are loaded in")
    attention: str = Field(default="", description="attention implementation traced")
    notes: list[str] = Field(default_factory=list, description="what this trace assumed")

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / 2**30


# --------------------------------------------------------------------------- validation


def check_traceable(request: PlanRequest) -> None:
    """Raise PlanError when ``trace_step`` cannot trace this request (before importing torch)."""
    if request.method not in TRACED_METHODS:
        raise PlanError(_NOT_TRACED)
    if request.tuning is Tuning.qlora:
        raise PlanError(
            "--trace does not support qlora: bitsandbytes 4-bit layers cannot run on fake CPU "
            "tensors; trace --tuning lora for the same adapters, or drop --trace"
        )
    if request.optimizer in (Optimizer.adamw8bit, Optimizer.paged_adamw8bit):
        raise PlanError(
            f"--trace does not support --optimizer {request.optimizer.value}: 8-bit optimizers "
            "(bitsandbytes) cannot run on fake CPU tensors; trace with --optimizer adamw, or drop --trace"
        )
    if request.sharding not in (Sharding.none, Sharding.ddp):
        raise PlanError(
            f"--trace traces one unsharded GPU; --sharding {request.sharding.value} is estimated "
            "analytically (drop --trace)"
        )
    if request.offload is not Offload.none:
        raise PlanError("--trace does not model CPU offload; drop --trace or --offload")


# --------------------------------------------------------------------------- the trace


def trace_step(request: PlanRequest, hf_config: dict[str, Any]) -> TraceResult:
    """Trace one training step of ``request`` on the architecture of ``hf_config`` (a config.json).

    Raises PlanError for what cannot be traced: qlora, 8-bit optimizers, ppo/grpo/rloo,
    sharded or offloaded plans, and architectures that do not run on fake tensors.
    """
    return _trace(request, hf_config, fake=True)


def _trace(
    request: PlanRequest,
    hf_config: dict[str, Any],
    fake: bool = True,
    step: Callable[[_Step], Any] | None = None,
) -> TraceResult:
    """``trace_step``; ``fake=False`` runs the same step on real CPU tensors and ``step``
    replaces the method's step function (both only to check the emulation against TRL)."""
    check_traceable(request)
    start = time.perf_counter()

    from torch._subclasses.fake_tensor import (
        DataDependentOutputException,
        DynamicOutputShapeException,
        FakeTensorMode,
        UnsupportedOperatorException,
    )

    fake_failures = (
        DataDependentOutputException,
        DynamicOutputShapeException,
        UnsupportedOperatorException,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fake_mode = FakeTensorMode() if fake else None
        try:
            with fake_mode if fake_mode is not None else nullcontext():
                setup = _build(request, hf_config, fake_mode)
                tracker = _run_step(setup, step or _STEPS[request.method])
        except PlanError:
            raise
        except fake_failures as exc:
            raise PlanError(
                f"--trace cannot run {hf_config.get('model_type', 'this model')} on fake tensors "
                f"({type(exc).__name__}: data-dependent shapes, e.g. MoE routing); drop --trace"
            ) from exc
    return _result(setup, tracker, time.perf_counter() - start)


@dataclass
class _Setup:
    """Everything the traced step needs, built under the fake mode before tracking starts."""

    request: Any
    model: Any
    ref_model: Any | None
    optimizer: Any
    trainable: list
    inputs: dict[str, Any]
    weight_dtype: Any
    autocast_dtype: Any | None
    fp32_outputs: bool
    attention: str
    model_params: int = 0
    model_param_bytes: int = 0
    adapter_params: int = 0
    adapter_bytes: int = 0
    reference_params: int = 0
    reference_bytes: int = 0
    notes: list[str] = field(default_factory=list)


def _build(request: PlanRequest, hf_config: dict[str, Any], fake_mode: Any) -> _Setup:
    import torch

    notes: list[str] = []
    config = _config(request, hf_config)
    model_type = config.model_type
    attention = _attention(request, model_type, notes)

    # Dtypes as the runners load the model (see the module docstring).
    load = load_dtype(request)
    weight_dtype = getattr(torch, load)
    half = request.precision.half
    autocast_dtype = None
    if half is not None and (load == "float32" or half == "fp16"):
        # fp32 weights under 16-bit autocast (mixed precision), or a fp16 base.
        autocast_dtype = torch.bfloat16 if half == "bf16" else torch.float16
        notes.append(
            f"{half} autocast traced on CPU (op lists close to CUDA's); GradScaler's in-place "
            "unscale and inf checks are not traced (no memory of their own)"
        )
    fp32_outputs = precision.outputs_in_fp32(request)
    if fp32_outputs:
        notes.append("accelerate mixed precision: model outputs (logits) converted to fp32")

    model = _new_model(request, config, weight_dtype, attention)
    model_params = sum(p.numel() for p in model.parameters())
    model_param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())

    if request.tuning is Tuning.lora:
        model = _apply_lora(request, hf_config, model, fake_mode)
    if request.method in DISABLES_DROPOUT:
        # TRL's disable_dropout (default True) sets p=0 on every nn.Dropout, LoRA's included.
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0
    if request.grad_checkpointing:
        _enable_checkpointing(model)
    model.train()

    trainable = [p for p in model.parameters() if p.requires_grad]
    adapter_params = adapter_bytes = 0
    if request.tuning is Tuning.lora:
        adapter_params = sum(p.numel() for p in trainable)
        adapter_bytes = sum(p.numel() * p.element_size() for p in trainable)

    # Full tuning with a reference (DPO, KTO): TRL loads a second copy from the same path and
    # dtype, frozen in eval mode. LoRA uses the same model with the adapters disabled; precomputed
    # reference log-probs need no reference at all.
    ref_model = None
    needs_reference = (
        request.method in (Method.dpo, Method.kto) and not request.precompute_ref_log_probs
    )
    if needs_reference and request.tuning is Tuning.full:
        ref_model = _new_model(request, config, weight_dtype, attention)
        ref_model.eval()
        ref_model.requires_grad_(False)
    reference_params = sum(p.numel() for p in ref_model.parameters()) if ref_model else 0
    reference_bytes = (
        sum(p.numel() * p.element_size() for p in ref_model.parameters()) if ref_model else 0
    )

    optimizer = _optimizer(request, model, notes)
    _warm_optimizer(optimizer, trainable)
    if request.grad_accum > 1:
        # The last micro-batch of the window: earlier ones left their gradients behind.
        for p in trainable:
            p.grad = torch.zeros_like(p)
        notes.append(
            f"grad_accum={request.grad_accum}: traced the last micro-batch of the window, with "
            "the earlier micro-batches' gradients live from its start"
        )
    notes.append("steady state: optimizer states exist before the step")
    notes.extend(_method_notes(request))

    return _Setup(
        request=request,
        model=model,
        ref_model=ref_model,
        optimizer=optimizer,
        trainable=trainable,
        inputs=_inputs(request, config),
        weight_dtype=weight_dtype,
        autocast_dtype=autocast_dtype,
        fp32_outputs=fp32_outputs,
        attention=attention,
        model_params=model_params,
        model_param_bytes=model_param_bytes,
        adapter_params=adapter_params,
        adapter_bytes=adapter_bytes,
        reference_params=reference_params,
        reference_bytes=reference_bytes,
        notes=notes,
    )


def _method_notes(request: PlanRequest) -> list[str]:
    notes = []
    if request.method is Method.sft:
        notes.append(
            f"sft: TRL 1.12's default loss_type='chunked_nll' (lm_head and cross-entropy in "
            f"checkpointed chunks of {SFT_CHUNK_SIZE} tokens; no full logits)"
        )
    if request.method in (Method.dpo, Method.kto) and not request.precompute_ref_log_probs:
        notes.append(
            "reference forward runs after the policy forward (TRL 1.12 _compute_loss), while "
            "the policy's activations and fp32 logits are live; its logits stay referenced "
            "until the loss returns"
        )
    if request.world_size > 1 or request.sharding is Sharding.ddp:
        notes.append("one GPU's step: DDP's gradient buckets and NCCL buffers are not traced")
    return notes


def _config(request: PlanRequest, hf_config: dict[str, Any]) -> Any:
    from transformers import AutoConfig

    values = {k: v for k, v in hf_config.items() if k not in ("quantization_config", "auto_map")}
    model_type = values.pop("model_type", None)
    if not model_type:
        raise PlanError("--trace needs the model's config.json with its model_type")
    try:
        config = AutoConfig.for_model(model_type, **values)
    except (KeyError, ValueError) as exc:
        raise PlanError(
            f"--trace cannot build model_type {model_type!r} with this transformers ({exc})"
        ) from exc
    config.use_cache = False
    if request.method is Method.reward:
        # RewardTrainer loads AutoModelForSequenceClassification with num_labels=1 and sets
        # the pad token, which the model needs to find each sequence's last token.
        config.num_labels = 1
        if getattr(config, "pad_token_id", None) is None:
            eos = getattr(config, "eos_token_id", None)
            config.pad_token_id = (eos[0] if isinstance(eos, list) else eos) or 0
    return config


def _attention(request: PlanRequest, model_type: str, notes: list[str]) -> str:
    if model_type in EAGER_ONLY_MODEL_TYPES or request.attention is Attention.eager:
        if request.attention is not Attention.eager:
            notes.append(f"{model_type} traced with eager attention (sdpa unsupported for it)")
        return "eager"
    if request.attention is Attention.flash:
        notes.append("flash attention traced as sdpa (same saved tensors: output and logsumexp)")
    return "sdpa"


def _new_model(request: PlanRequest, config: Any, dtype: Any, attention: str) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    auto = (
        AutoModelForSequenceClassification
        if request.method is Method.reward
        else AutoModelForCausalLM
    )
    try:
        return auto.from_config(config, dtype=dtype, attn_implementation=attention)
    except ValueError as exc:
        raise PlanError(f"--trace cannot build {config.model_type}: {exc}") from exc


@contextmanager
def _swappable(fake_mode: Any) -> Iterator[None]:
    """Let ``Module.to()`` swap fake parameters (peft moves its new layers with ``.to()``).

    ``torch.utils.swap_tensors`` refuses tensors with weak references; the fake mode's
    real->fake memo holds some. Clearing the memo before each swap lets the swap through
    (the memo only caches conversions of real tensors; the traced numbers are unchanged).
    """
    import torch

    original = torch.utils.swap_tensors
    memo = fake_mode.fake_tensor_converter.meta_converter.tensor_memo

    def swap(t1: Any, t2: Any) -> None:
        memo.clear()
        original(t1, t2)

    torch.utils.swap_tensors = swap
    try:
        yield
    finally:
        torch.utils.swap_tensors = original


def _apply_lora(request: PlanRequest, hf_config: dict[str, Any], model: Any, fake_mode: Any) -> Any:
    from peft import LoraConfig, get_peft_model

    # As runners/settings.py:peft_fields writes it (alpha 2r, dropout 0.05, the same targets).
    config = LoraConfig(
        r=request.lora_rank,
        lora_alpha=LORA_ALPHA_PER_RANK * request.lora_rank,
        lora_dropout=LORA_DROPOUT,
        target_modules=_lora_targets(request, hf_config),
        task_type="SEQ_CLS" if request.method is Method.reward else "CAUSAL_LM",
    )
    try:
        with _swappable(fake_mode) if fake_mode is not None else nullcontext():
            model = get_peft_model(model, config)
    except ValueError as exc:
        raise PlanError(
            f"--trace could not apply LoRA ({request.lora_targets.value}): {exc}"
        ) from exc
    if fake_mode is not None:
        _adopt_foreign_tensors(model, fake_mode)
    return model


def _lora_targets(request: PlanRequest, hf_config: dict[str, Any]) -> Any:
    """peft ``target_modules`` from planner.parameters, the function the runners use."""
    from planner.models import spec_from_config
    from planner.parameters import lora_target_modules

    try:
        spec = spec_from_config(hf_config, str(hf_config.get("model_type")), "trace")
    except PlanError:
        return LORA_TARGET_MODULES[request.lora_targets]
    return lora_target_modules(spec, request.lora_targets.value)


def _adopt_foreign_tensors(model: Any, fake_mode: Any) -> None:
    """Re-create, in ``fake_mode``, parameters that ``copy.deepcopy`` put in a fake mode of their
    own (peft's ``modules_to_save`` copies, e.g. the reward head): ops cannot mix fake modes."""
    import torch

    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is not None and getattr(param, "fake_mode", fake_mode) is not fake_mode:
                fresh = torch.empty(param.shape, dtype=param.dtype)
                module._parameters[name] = torch.nn.Parameter(
                    fresh, requires_grad=param.requires_grad
                )
        for name, buf in list(module._buffers.items()):
            if buf is not None and getattr(buf, "fake_mode", fake_mode) is not fake_mode:
                module._buffers[name] = torch.empty(buf.shape, dtype=buf.dtype)


def _enable_checkpointing(model: Any) -> None:
    """Non-reentrant activation checkpointing, TRL's default, as Trainer.train() turns it on.

    transformers 5.x names it ``activation_checkpointing_enable``; it also makes the input
    embeddings' output require grad (what TRL asks for with PEFT + checkpointing).
    """
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


@contextmanager
def _checkpointing_disabled(model: Any) -> Iterator[None]:
    """TRL's ``disable_gradient_checkpointing`` around reference forwards."""
    was_enabled = bool(getattr(model, "is_gradient_checkpointing", False))
    if was_enabled:
        model.gradient_checkpointing_disable()
    try:
        yield
    finally:
        if was_enabled:
            _enable_checkpointing(model)


def _optimizer(request: PlanRequest, model: Any, notes: list[str]) -> Any:
    """The optimizer as transformers' Trainer builds it: two groups (weight decay on all but
    biases and norms), torch AdamW as the runners' ``optim`` asks, or SGD without momentum."""
    import re

    import torch

    no_decay = re.compile(r"bias|layernorm|rmsnorm|(?:^|\.)norm(?:$|\.)|_norm(?:$|\.)")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if not no_decay.search(n.lower())], "weight_decay": 0.0},
        {"params": [p for n, p in named if no_decay.search(n.lower())], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    if request.optimizer is Optimizer.sgd:
        notes.append("optimizer: torch SGD without momentum (transformers' sgd): no state")
        return torch.optim.SGD(groups, lr=1e-5, foreach=True)
    if ADAMW_IMPLEMENTATION == "adamw_torch_fused":
        notes.append("optimizer: torch AdamW(fused=True) (adamw_torch_fused): no step temporaries")
        return torch.optim.AdamW(groups, lr=1e-5, fused=True)
    notes.append(
        "optimizer: torch AdamW with foreach, as adamw_torch runs on CUDA: the step holds one "
        "state-sized temporary per parameter group"
    )
    return torch.optim.AdamW(groups, lr=1e-5, foreach=True)


def _warm_optimizer(optimizer: Any, params: list) -> None:
    """Create the optimizer's states as after the first step (the steady state of a run)."""
    import torch

    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _inputs(request: PlanRequest, config: Any) -> dict[str, Any]:
    """The collated batch TRL's collator hands the trainer (random ids, full length)."""
    import torch

    b, s = request.batch_size, request.seq_len
    vocab = config.vocab_size
    prompt, completion = request.prompt_and_completion()
    completion = min(completion, s - 1) if s > 1 else 0
    prompt = s - completion
    rows = 2 * b if request.method in (Method.dpo, Method.orpo, Method.simpo, Method.reward) else b

    ids = torch.randint(0, vocab, (rows, s))
    completion_mask = torch.cat(
        [
            torch.zeros(rows, prompt, dtype=torch.long),
            torch.ones(rows, completion, dtype=torch.long),
        ],
        dim=1,
    )
    inputs: dict[str, Any] = {
        "input_ids": ids,
        "attention_mask": torch.ones(rows, s, dtype=torch.long),
        "completion_mask": completion_mask,
    }
    if request.method in (Method.dpo, Method.kto):
        # Positions of the completion tokens after the shift, per half, standing in for the
        # boolean masks TRL indexes logits with (their nonzero() has a data-dependent size).
        inputs["completion_rows"] = torch.arange(b).repeat_interleave(completion)
        inputs["completion_cols"] = torch.arange(prompt - 1, s - 1).repeat(b)
    if request.method is Method.sft:
        # Loss on the completion only when the request splits prompt and completion (TRL's
        # completion_only_loss on prompt-completion data), else on every token (plain text).
        labels = ids.clone()
        if request.prompt_len is not None or request.completion_len is not None:
            labels[:, :prompt] = -100
            inputs["n_valid_labels"] = b * completion
        else:
            inputs["n_valid_labels"] = b * (s - 1)
        inputs["labels"] = labels
    if request.method in (Method.orpo, Method.simpo):
        # The ORPO/CPO collator keeps chosen and rejected apart; concatenated_inputs joins them.
        labels = ids.clone()
        labels[:, :prompt] = -100
        for key, value in (("input_ids", ids), ("attention_mask", inputs.pop("attention_mask"))):
            inputs[f"chosen_{key}"] = value[:b].clone()
            inputs[f"rejected_{key}"] = value[b:].clone()
        inputs["chosen_labels"] = labels[:b].clone()
        inputs["rejected_labels"] = labels[b:].clone()
        del inputs["input_ids"], labels
    if request.method is Method.kto:
        chosen = (b + 1) // 2
        inputs["KL_input_ids"] = torch.randint(0, vocab, (b, s))
        inputs["KL_attention_mask"] = torch.ones(b, s, dtype=torch.long)
        inputs["KL_completion_mask"] = completion_mask.clone()
        inputs["label"] = torch.arange(b) < chosen
        inputs["chosen_idx"] = torch.arange(chosen)
        inputs["rejected_idx"] = torch.arange(chosen, b)
    if request.precompute_ref_log_probs:
        if request.method is Method.dpo:
            inputs["ref_chosen_logps"] = torch.zeros(b)
            inputs["ref_rejected_logps"] = torch.zeros(b)
        elif request.method is Method.kto:
            inputs["ref_logps"] = torch.zeros(b)
            inputs["ref_KL_logps"] = torch.zeros(b)
    return inputs


# --------------------------------------------------------------------------- tracking


def _tracker_class() -> type:
    """MemTracker with the adjustments a whole training step on fake tensors needs."""
    from torch.distributed._tools.mem_tracker import _TOTAL_KEY, MemTracker

    class _Handle:
        def remove(self) -> None:
            pass

    class StepTracker(MemTracker):
        def __init__(self) -> None:
            super().__init__()
            self.phase_name = "setup"
            self.peak_phase = "setup"
            self.phase_peaks: dict[str, int] = {}
            self.max_by_type: dict[Any, int] = {}

        @contextmanager
        def phase(self, name: str) -> Iterator[None]:
            previous, self.phase_name = self.phase_name, name
            self._note()
            try:
                yield
            finally:
                self._note()
                self.phase_name = previous

        def _note(self) -> None:
            for dev, snap in self._curr_mem_snap.items():
                total = snap[_TOTAL_KEY]
                if total > self._peak_mem.get(dev, 0):
                    self._peak_mem[dev] = total
                    self._peak_mem_snap[dev] = dict(snap)
                    self.peak_phase = self.phase_name
                if total > self.phase_peaks.get(self.phase_name, 0):
                    self.phase_peaks[self.phase_name] = total
                for key, value in snap.items():
                    if value > self.max_by_type.get(key, 0):
                        self.max_by_type[key] = value

        # Stock MemTracker walks every tracked module after every op to keep per-module peaks
        # (quadratic in depth: 161 s for a 7B DPO step); only the global peak is needed, so
        # update it from the current snapshot alone (same totals; that step now takes ~10 s).
        def _update_peak_stats(self, peak_state: Any) -> None:
            self._note()

        # Stock MemTracker registers a grad hook on every parameter of a module it meets and
        # fails on frozen ones (reference model, LoRA base): mark those as already hooked.
        def _track_module_params_and_buffers(
            self, module: Any, install_grad_hooks: bool = True
        ) -> tuple[int, int]:
            frozen = [
                p
                for p in module.parameters()
                if not p.requires_grad and self._param_to_grad_hook_handles.get(p) is None
            ]
            for p in frozen:
                self._param_to_grad_hook_handles[p] = (_Handle(), _Handle())
            try:
                return super()._track_module_params_and_buffers(module, install_grad_hooks)
            finally:
                for p in frozen:
                    del self._param_to_grad_hook_handles[p]

        # Stock MemTracker refuses a second forward of a root module (it takes it for the next
        # iteration); a step runs the same model several times (KTO's KL batch, LoRA's
        # reference with adapters disabled). Start that module's stats afresh instead.
        def _pre_fw_hook(self, module: Any, inputs: Any) -> None:
            if not self._mod_tracker.is_bw and module in self.memory_tracking:
                del self.memory_tracking[module]
            super()._pre_fw_hook(module, inputs)

        def hook_trainable(self, model: Any) -> None:
            """Install the gradient hooks on the trainable parameters now, before a reference
            pass with adapters disabled could see them frozen (and count their grads as temps)."""
            self._track_module_params_and_buffers(model, install_grad_hooks=True)

    return StepTracker


@contextmanager
def _cuda_dropout() -> Iterator[None]:
    """``F.dropout`` in training as CUDA runs it: the fused ``native_dropout``, which keeps a
    bool mask for backward (CPU's fallback keeps a noise tensor in the input's dtype)."""
    import torch
    import torch.nn.functional as F

    original = F.dropout

    def dropout(input: Any, p: float = 0.5, training: bool = True, inplace: bool = False) -> Any:
        if training and 0 < p < 1 and not inplace and input.numel() > 0:
            return torch.native_dropout(input, p, training)[0]
        return original(input, p, training, inplace)

    F.dropout = dropout
    try:
        yield
    finally:
        F.dropout = original


def _run_step(setup: _Setup, step: Callable[[_Step], Any]) -> Any:
    import torch

    tracker = _tracker_class()()
    batch = [v for v in setup.inputs.values() if isinstance(v, torch.Tensor)]
    external = [setup.model, setup.optimizer, *batch]
    if setup.ref_model is not None:
        external.append(setup.ref_model)
    tracker.track_external(*external)
    with tracker, _cuda_dropout():
        tracker.hook_trainable(setup.model)
        loss = step(_Step(setup, tracker.phase))
        with tracker.phase("backward"):
            loss.backward()
            del loss
        with tracker.phase("optimizer_step"):
            # Trainer: clip_grad_norm_(max_grad_norm=1.0), optimizer.step(), model.zero_grad().
            torch.nn.utils.clip_grad_norm_(setup.trainable, 1.0)
            setup.optimizer.step()
            setup.model.zero_grad(set_to_none=True)
    return tracker


def _result(setup: _Setup, tracker: Any, seconds: float) -> TraceResult:
    from torch.distributed._tools.mem_tracker import _TOTAL_KEY, _MemRefType

    names = {
        _MemRefType.PARAM: "params",
        _MemRefType.BUFFER: "buffers",
        _MemRefType.GRAD: "grads",
        _MemRefType.ACT: "activations",
        _MemRefType.TEMP: "temporaries",
        _MemRefType.OPT: "optimizer",
        _MemRefType.OTH: "other",
    }

    def split(by_type: dict[Any, int]) -> dict[str, int]:
        out = dict.fromkeys(CATEGORIES, 0)
        for key, value in by_type.items():
            if key in names:
                out[names[key]] += value
        # Parameters are never freed during the step, so the split is exact at any moment.
        out["adapters"] = setup.adapter_bytes
        out["reference_model"] = setup.reference_bytes
        out["params"] -= setup.adapter_bytes + setup.reference_bytes
        return out

    peak_snap = next(iter(tracker._peak_mem_snap.values()), {})
    phase_peaks = {p: tracker.phase_peaks[p] for p in PHASES if p in tracker.phase_peaks}
    return TraceResult(
        peak_bytes=int(peak_snap.get(_TOTAL_KEY, 0)),
        peak_phase=tracker.peak_phase,
        at_peak_bytes=split(peak_snap),
        max_bytes=split(tracker.max_by_type),
        phase_peaks=phase_peaks,
        seconds=round(seconds, 3),
        model_params=setup.model_params,
        trainable_params=sum(p.numel() for p in setup.trainable),
        reference_params=setup.reference_params,
        weight_dtype=str(setup.weight_dtype).removeprefix("torch."),
        attention=setup.attention,
        notes=setup.notes,
    )


# --------------------------------------------------------------------------- the methods


class _Step:
    """What a method's step function uses: the models' forwards as TRL calls them, and phases."""

    def __init__(self, setup: _Setup, phase: Callable[[str], Any]) -> None:
        self.setup = setup
        self.request = setup.request
        self.inputs = setup.inputs
        self.phase = phase
        self.b = setup.request.batch_size

    def autocast(self) -> Any:
        """accelerate's autocast around a prepared model's forward (fp16 only: see _build)."""
        import torch

        if self.setup.autocast_dtype is None:
            return nullcontext()
        return torch.autocast("cpu", dtype=self.setup.autocast_dtype)

    def _call(self, model: Any, **kwargs: Any) -> Any:
        """A forward through accelerate's wrapper: autocast, then outputs converted to fp32."""
        import torch

        with self.autocast():
            out = model(use_cache=False, **kwargs)
        loss = out.get("loss")
        logits = out["logits"]
        del out
        if self.setup.fp32_outputs:
            if loss is not None and loss.dtype in (torch.float16, torch.bfloat16):
                loss = loss.float()
            if logits.dtype in (torch.float16, torch.bfloat16):
                logits = logits.float()
        return loss, logits

    def policy(self, **kwargs: Any) -> Any:
        return self._call(self.setup.model, **kwargs)

    def reference(self, **kwargs: Any) -> Any:
        """A reference forward as TRL does it: under no_grad, checkpointing disabled on the
        policy, through the separate reference model or the policy with adapters disabled."""
        import torch

        model = self.setup.model
        with torch.no_grad(), _checkpointing_disabled(model):
            if self.setup.ref_model is not None:
                return self._call(self.setup.ref_model, **kwargs)
            with model.disable_adapter():
                return self._call(model, **kwargs)


def _selective_log_softmax(logits: Any, index: Any) -> Any:
    """trl.trainer.utils.selective_log_softmax (TRL 1.12), with logsumexp's hidden buffer.

    fp32 logits: gather, then logsumexp row by row. On CUDA, each logsumexp allocates
    ``self - max`` (one row of logits) inside the kernel, which fake tensors cannot see: it is
    allocated here for the duration of the row. 16-bit logits: log_softmax row by row.
    """
    import torch
    import torch.nn.functional as F

    squeeze = index.ndim == logits.ndim - 1
    if squeeze:
        index = index.unsqueeze(-1)
    if logits.dtype in (torch.float32, torch.float64):
        selected_logits = torch.gather(logits, dim=-1, index=index)
        rows = []
        for lg in logits:
            workspace = (
                torch.empty_like(lg, requires_grad=False) if EMULATE_CUDA_WORKSPACES else None
            )
            rows.append(torch.logsumexp(lg, dim=-1))
            del workspace
        logsumexp_values = torch.stack(rows)
        per_token_logps = selected_logits - logsumexp_values.unsqueeze(-1)
    else:
        per_token = []
        for row_logits, row_labels in zip(logits, index, strict=True):
            row_logps = F.log_softmax(row_logits, dim=-1)
            per_token.append(row_logps.gather(dim=-1, index=row_labels))
        per_token_logps = torch.stack(per_token)
    if squeeze:
        per_token_logps = per_token_logps.squeeze(-1)
    return per_token_logps


def _entropy_from_logits(logits: Any, chunk_size: int = 128) -> Any:
    """trl.trainer.utils.entropy_from_logits (TRL 1.12): the reshape copies a sliced batch."""
    import torch
    import torch.nn.functional as F

    original_shape = logits.shape[:-1]
    flat_logits = logits.reshape(-1, logits.shape[-1])
    entropies = []
    for chunk in flat_logits.split(chunk_size, dim=0):
        logps = F.log_softmax(chunk, dim=-1)
        entropies.append(-(torch.exp(logps) * logps).sum(-1))
    return torch.cat(entropies, dim=0).reshape(original_shape)


def _masked_rows(step: _Step, logits: Any) -> Any:
    """``logits[completion_mask.bool()]`` for a slice of the batch: a (tokens x vocab) copy.

    Boolean indexing has a data-dependent size (nonzero), which fake tensors refuse; integer
    indices of the completion positions give the same copy.
    """
    rows = logits.shape[0]
    if rows == 0:
        return logits[:, 0]
    per_row = len(step.inputs["completion_rows"]) // step.b
    n = rows * per_row
    return logits[step.inputs["completion_rows"][:n], step.inputs["completion_cols"][:n]]


SFT_CHUNK_SIZE = 256
"""Tokens per chunk of TRL 1.12's chunked cross-entropy (``_CHUNKED_LM_HEAD_CHUNK_SIZE``)."""


def _sft_step(step: _Step) -> Any:
    """SFTTrainer with TRL 1.12's default ``loss_type="chunked_nll"``: the patched forward runs
    the decoder only, then the cross-entropy in checkpointed chunks of 256 valid tokens (each
    chunk's fp32 logits, and an fp32 copy of the lm_head weight, live only within the chunk).
    The full logits are never materialised; entropy and accuracy come out of the chunks."""
    import torch
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    inputs, setup = step.inputs, step.setup
    model = setup.model
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = causal_lm.base_model
    lm_head = causal_lm.get_output_embeddings()
    text_config = causal_lm.config.get_text_config()
    softcap = getattr(text_config, "final_logit_softcapping", None)
    logit_scale = getattr(text_config, "logit_scale", None)
    if logit_scale is None:
        logit_scale = getattr(text_config, "output_multiplier", None)
    logit_scale = 1.0 if logit_scale is None else logit_scale

    def chunk_loss(h: Any, w: Any, b: Any, lbl: Any) -> Any:  # trl.trainer.sft_trainer._chunk
        logits = h.float() @ w.float().t()
        if b is not None:
            logits = logits + b.float()
        if logit_scale != 1.0:
            logits = logits * logit_scale
        if softcap is not None:
            logits = softcap * F.tanh(logits / softcap)
        log_p = F.log_softmax(logits, dim=-1)
        loss = F.nll_loss(log_p, lbl, ignore_index=-100, reduction="sum")
        valid = lbl != -100
        correct = ((logits.argmax(dim=-1) == lbl) & valid).sum().float()
        entropy = (-(log_p.exp() * log_p).sum(dim=-1) * valid).sum()
        return loss, correct, entropy

    with step.autocast():
        with step.phase("forward"):
            outputs = backbone(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                use_cache=False,
            )
            hidden_states = outputs.last_hidden_state
        with step.phase("loss"):
            # trl.trainer.sft_trainer._chunked_cross_entropy_loss, with the chunk count (read
            # from the device there) computed here from the known number of valid labels.
            labels_in = inputs["labels"]
            hidden = hidden_states[..., :-1, :].reshape(-1, hidden_states.size(-1))
            labels = labels_in[..., 1:].reshape(-1)
            valid = labels != -100
            n_valid_tensor = valid.sum()
            order = valid.to(torch.int8).argsort(descending=True, stable=True)
            hidden = hidden[order]
            labels = labels[order]
            n_valid = inputs["n_valid_labels"]
            n_padded = max(1, -(-n_valid // SFT_CHUNK_SIZE)) * SFT_CHUNK_SIZE
            loss = hidden.new_zeros((), dtype=torch.float32)
            correct = hidden.new_zeros((), dtype=torch.float32)
            entropy_sum = hidden.new_zeros((), dtype=torch.float32)
            for start in range(0, n_padded, SFT_CHUNK_SIZE):
                c_loss, c_correct, c_entropy = checkpoint(
                    chunk_loss,
                    hidden[start : start + SFT_CHUNK_SIZE],
                    lm_head.weight,
                    lm_head.bias,
                    labels[start : start + SFT_CHUNK_SIZE],
                    use_reentrant=False,
                )
                loss = loss + c_loss
                correct = correct + c_correct
                entropy_sum = entropy_sum + c_entropy
            loss = loss / n_valid_tensor.clamp(min=1)
            del outputs, hidden_states, hidden, labels, correct, entropy_sum
    return loss


def _dpo_step(step: _Step) -> Any:
    """DPOTrainer._compute_loss (sigmoid loss): the policy forward on chosen+rejected first,
    its log-probs, then the reference forward (its logits stay referenced to the end), the
    loss, then no-grad metrics on the full logits (entropy, mean logits, token accuracy)."""
    import torch
    import torch.nn.functional as F

    inputs, beta = step.inputs, 0.1
    input_ids, completion_mask = inputs["input_ids"], inputs["completion_mask"]
    with step.phase("forward"):
        _, logits = step.policy(input_ids=input_ids, attention_mask=inputs["attention_mask"])
    with step.phase("loss"):
        shift_logits = logits[..., :-1, :]
        shift_labels = input_ids[..., 1:]
        shift_completion_mask = completion_mask[..., 1:]
        per_token_logps = _selective_log_softmax(shift_logits, shift_labels)
        per_token_logps[shift_completion_mask == 0] = 0.0
        logps = per_token_logps.sum(dim=1)
        chosen_logps, rejected_logps = logps.chunk(2, dim=0)

    ref_logits = None
    if step.request.precompute_ref_log_probs:
        ref_chosen_logps, ref_rejected_logps = (
            inputs["ref_chosen_logps"],
            inputs["ref_rejected_logps"],
        )
    else:
        with step.phase("reference_forward"):
            _, ref_logits = step.reference(
                input_ids=input_ids, attention_mask=inputs["attention_mask"]
            )
            ref_per_token_logps = _selective_log_softmax(ref_logits[..., :-1, :], shift_labels)
            ref_per_token_logps[shift_completion_mask == 0] = 0.0
            ref_chosen_logps, ref_rejected_logps = ref_per_token_logps.sum(dim=1).chunk(2, dim=0)

    with step.phase("loss"):
        chosen_logratios = chosen_logps - ref_chosen_logps
        rejected_logratios = rejected_logps - ref_rejected_logps
        delta_score = chosen_logratios - rejected_logratios
        loss = 0.0 + (-F.logsigmoid(beta * delta_score)).mean() * 1.0

        per_token_entropy = _entropy_from_logits(shift_logits.detach())
        entropy_sum = (per_token_entropy * shift_completion_mask).sum()
        chosen_logits, rejected_logits = shift_logits.detach().chunk(2, dim=0)
        total_chosen_logits = _masked_rows(step, chosen_logits).mean(-1).sum()
        total_rejected_logits = _masked_rows(step, rejected_logits).mean(-1).sum()
        predictions = chosen_logits.argmax(dim=-1)
        chosen_mask = shift_completion_mask[: len(shift_completion_mask) // 2].bool()
        correct = ((predictions == shift_labels[: len(shift_labels) // 2]) & chosen_mask).sum()
        with torch.no_grad():
            margins = beta * chosen_logratios.detach() - beta * rejected_logratios.detach()
        del entropy_sum, total_chosen_logits, total_rejected_logits, correct, margins
    del ref_logits  # TRL's ref_outputs lives until _compute_loss returns
    return loss


def _kto_step(step: _Step) -> Any:
    """KTOTrainer._compute_loss: the KL batch through the policy under no_grad first, the
    policy forward, the reference on the KL batch and on the batch, the KTO loss, then no-grad
    metrics (entropy; chosen/rejected logits copied out with index_select)."""
    import torch
    import torch.nn.functional as F

    inputs, beta = step.inputs, 0.1
    input_ids = inputs["input_ids"]
    chosen_idx, rejected_idx = inputs["chosen_idx"], inputs["rejected_idx"]

    def kl_logps(forward: Callable[..., Any]) -> Any:
        _, kl_logits = forward(
            input_ids=inputs["KL_input_ids"], attention_mask=inputs["KL_attention_mask"]
        )
        per_token = _selective_log_softmax(kl_logits[:, :-1, :], inputs["KL_input_ids"][:, 1:])
        per_token[inputs["KL_completion_mask"][:, 1:] == 0] = 0.0
        return per_token.sum(-1)

    def policy_no_grad(**kwargs: Any) -> Any:
        with torch.no_grad():
            return step.policy(**kwargs)

    with step.phase("kl_forward"):
        kl_policy_logps = kl_logps(policy_no_grad)
    with step.phase("forward"):
        _, logits = step.policy(input_ids=input_ids, attention_mask=inputs["attention_mask"])
    with step.phase("loss"):
        shift_logits = logits[:, :-1, :]
        per_token_logps = _selective_log_softmax(shift_logits, input_ids[:, 1:])
        per_token_logps[inputs["completion_mask"][:, 1:] == 0] = 0.0
        completion_logps = per_token_logps.sum(-1)
        chosen_logps = completion_logps.index_select(0, chosen_idx)
        rejected_logps = completion_logps.index_select(0, rejected_idx)

    ref_logits = None
    if step.request.precompute_ref_log_probs:
        ref_chosen_logps = inputs["ref_logps"].index_select(0, chosen_idx)
        ref_rejected_logps = inputs["ref_logps"].index_select(0, rejected_idx)
        ref_kl_logps = inputs["ref_KL_logps"]
    else:
        with step.phase("reference_forward"):
            ref_kl_logps = kl_logps(step.reference)
            _, ref_logits = step.reference(
                input_ids=input_ids, attention_mask=inputs["attention_mask"]
            )
            ref_per_token = _selective_log_softmax(ref_logits[:, :-1, :], input_ids[:, 1:])
            ref_per_token[inputs["completion_mask"][:, 1:] == 0] = 0.0
            ref_completion_logps = ref_per_token.sum(-1)
            ref_chosen_logps = ref_completion_logps.index_select(0, chosen_idx)
            ref_rejected_logps = ref_completion_logps.index_select(0, rejected_idx)

    with step.phase("loss"):
        kl = (kl_policy_logps - ref_kl_logps).mean().detach().clamp(min=0)
        chosen_losses = 1 - F.sigmoid(beta * (chosen_logps - ref_chosen_logps - kl))
        rejected_losses = 1 - F.sigmoid(beta * (kl - (rejected_logps - ref_rejected_logps)))
        losses = torch.cat((1.0 * chosen_losses, 1.0 * rejected_losses), 0)

        per_token_entropy = _entropy_from_logits(shift_logits.detach())
        shift_completion_mask = inputs["completion_mask"][:, 1:]
        entropy_sum = (per_token_entropy * shift_completion_mask).sum()
        chosen_logits = shift_logits.detach().index_select(0, chosen_idx)
        rejected_logits = shift_logits.detach().index_select(0, rejected_idx)
        total_chosen_logits = _masked_rows(step, chosen_logits).mean(-1).sum()
        total_rejected_logits = _masked_rows(step, rejected_logits).mean(-1).sum()
        loss = losses.nanmean()
        del entropy_sum, total_chosen_logits, total_rejected_logits, chosen_logits, rejected_logits
    del ref_logits
    return loss


def _batch_logps(logits: Any, labels: Any, average: bool) -> Any:
    """ORPOTrainer / CPOTrainer.get_batch_logps (decoder-only)."""
    import torch

    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    loss_mask = labels != -100
    labels = torch.where(labels == -100, 0, labels)
    per_token_logps = _selective_log_softmax(logits, labels)
    if average:
        return (per_token_logps * loss_mask).sum(-1) / loss_mask.sum(-1)
    return (per_token_logps * loss_mask).sum(-1)


def _nll(logits: Any, labels: Any) -> Any:
    """The ``cross_entropy_loss`` of ORPO/CPO's concatenated_forward: a contiguous shifted copy."""
    import torch.nn as nn

    logits = logits[..., :-1, :].contiguous()
    labels = labels[..., 1:].contiguous()
    return nn.CrossEntropyLoss()(logits.view(-1, logits.shape[-1]), labels.view(-1))


def _orpo_step(step: _Step, simpo: bool = False) -> Any:
    """ORPOTrainer (NLL on the chosen half + odds ratio) or CPOTrainer with loss_type="simpo"
    and cpo_alpha=0 (no NLL): one forward on chosen+rejected, no reference."""
    import torch
    import torch.nn.functional as F

    inputs, b, beta = step.inputs, step.b, 0.1

    def joined(key: str) -> Any:
        return torch.cat((inputs[f"chosen_{key}"], inputs[f"rejected_{key}"]), dim=0)

    def log1mexp(x: Any) -> Any:
        return torch.where(
            x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x))
        )

    input_ids, attention_mask = joined("input_ids"), joined("attention_mask")
    concatenated_labels = joined("labels")
    with step.phase("forward"):
        _, all_logits = step.policy(input_ids=input_ids, attention_mask=attention_mask)
    with step.phase("loss"):
        if simpo:
            labels = concatenated_labels.clone()
            nll_loss = torch.tensor(0.0)
        else:
            labels = torch.where(attention_mask == 1, input_ids.clone(), -100)
            nll_loss = _nll(all_logits[:b], labels[:b])
        all_logps = _batch_logps(all_logits, concatenated_labels, average=True)
        chosen_logps, rejected_logps = all_logps[:b], all_logps[b:]
        if simpo:
            logits = chosen_logps - rejected_logps - 0.5 / beta
            loss = (-F.logsigmoid(beta * logits)).mean() + 0.0 * nll_loss
            chosen_logits, rejected_logits = all_logits[:b], all_logits[b:]
        else:
            chosen_logps, rejected_logps = chosen_logps.float(), rejected_logps.float()
            log_odds = (chosen_logps - rejected_logps) - (
                log1mexp(chosen_logps) - log1mexp(rejected_logps)
            )
            loss = nll_loss - (beta * F.logsigmoid(log_odds)).mean()
            chosen_logits, rejected_logits = all_logits[:b, :-1, :], all_logits[b:, :-1, :]
        means = (chosen_logits.detach().mean(), rejected_logits.detach().mean())
        del means
    return loss


def _simpo_step(step: _Step) -> Any:
    return _orpo_step(step, simpo=True)


def _reward_step(step: _Step) -> Any:
    """RewardTrainer.compute_loss: a sequence-classification model on chosen+rejected
    (the collator concatenates them), loss -logsigmoid(r_chosen - r_rejected)."""
    import torch.nn.functional as F

    with step.phase("forward"):
        _, logits = step.policy(
            input_ids=step.inputs["input_ids"], attention_mask=step.inputs["attention_mask"]
        )
    with step.phase("loss"):
        rewards_chosen, rewards_rejected = logits.squeeze(-1).chunk(2)
        loss = -F.logsigmoid(rewards_chosen - rewards_rejected).mean()
    return loss


_STEPS: dict[Method, Callable[[_Step], Any]] = {
    Method.sft: _sft_step,
    Method.dpo: _dpo_step,
    Method.kto: _kto_step,
    Method.orpo: _orpo_step,
    Method.simpo: _simpo_step,
    Method.reward: _reward_step,
}

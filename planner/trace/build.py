"""Building a traced step on fake tensors: the model as the runners load it, LoRA, the
optimizer in its steady state and the collated batch."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from planner import precision
from planner.architectures import SUPPORTED_TYPES, architecture
from planner.errors import InputError
from planner.memory import (
    ADAMW_OPTIM,
    ROUTER_AUX_LOSS_METHODS,
    SFT_LOSS_CHUNK_TOKENS,
    TRL_ROUTER_AUX_LOSS_COEF,
)
from planner.methods import Loop, loop
from planner.parameters import lora_modules
from planner.precision import load_dtype
from planner.recipes import LORA_ALPHA_PER_RANK, LORA_DROPOUT, lora_dropout, recipe
from planner.specs import Attention, Method, Optimizer, PlanRequest, Sharding, Tuning

ADAMW_IMPLEMENTATION = ADAMW_OPTIM
"""The transformers ``optim`` the runners use for ``--optimizer adamw`` (planner.memory
ADAMW_OPTIM): ``adamw_torch_fused`` steps in one kernel with no temporaries;
``adamw_torch`` (foreach on CUDA) would allocate one state-sized ``exp_avg_sq.sqrt()``."""


@dataclass
class Setup:
    """Everything the traced step needs, built under the fake mode before tracking starts."""

    request: Any
    loop: Loop
    """The method's step as its recipe describes it (rows, reference)."""
    model: Any
    ref_model: Any | None
    optimizer: Any
    trainable: list
    inputs: dict[str, Any]
    weight_dtype: Any
    autocast_dtype: Any | None
    fp32_outputs: bool
    attention: str
    router_aux_loss: bool = False
    """The policy's forwards return the router's load-balancing loss, which the step adds to
    its loss × TRL's `router_aux_loss_coef` (MoE models, `ROUTER_AUX_LOSS_METHODS`)."""
    model_params: int = 0
    model_param_bytes: int = 0
    adapter_params: int = 0
    adapter_bytes: int = 0
    reference_params: int = 0
    reference_bytes: int = 0
    notes: list[str] = field(default_factory=list)


def build(request: PlanRequest, hf_config: dict[str, Any], fake_mode: Any) -> Setup:
    import torch

    notes: list[str] = []
    lp = loop(request)
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
    if recipe(request.method).disables_dropout:
        # TRL's disable_dropout (default True) sets p=0 on every nn.Dropout, LoRA's included.
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0
    if request.grad_checkpointing:
        enable_checkpointing(model)
    model.train()

    trainable = [p for p in model.parameters() if p.requires_grad]
    adapter_params = adapter_bytes = 0
    if request.tuning is Tuning.lora:
        adapter_params = sum(p.numel() for p in trainable)
        adapter_bytes = sum(p.numel() * p.element_size() for p in trainable)

    # A reference copy (full tuning of DPO, KTO): TRL loads a second copy from the same path and
    # dtype, frozen in eval mode. LoRA uses the same model with the adapters disabled; precomputed
    # reference log-probs need no reference at all (the recipe's reference_kind).
    ref_model = None
    if lp.reference == "copy":
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
    notes.extend(_method_notes(request, lp))
    router_aux_loss = architecture(model_type).is_moe and request.method in ROUTER_AUX_LOSS_METHODS
    if router_aux_loss:
        notes.append(
            f"router auxiliary loss on (TRL 1.12's {request.method.value} trainer: "
            f"output_router_logits=True, router_aux_loss_coef={TRL_ROUTER_AUX_LOSS_COEF})"
        )

    return Setup(
        request=request,
        loop=lp,
        model=model,
        ref_model=ref_model,
        optimizer=optimizer,
        trainable=trainable,
        inputs=_inputs(request, lp, config),
        weight_dtype=weight_dtype,
        autocast_dtype=autocast_dtype,
        fp32_outputs=fp32_outputs,
        attention=attention,
        router_aux_loss=router_aux_loss,
        model_params=model_params,
        model_param_bytes=model_param_bytes,
        adapter_params=adapter_params,
        adapter_bytes=adapter_bytes,
        reference_params=reference_params,
        reference_bytes=reference_bytes,
        notes=notes,
    )


def _method_notes(request: PlanRequest, lp: Loop) -> list[str]:
    notes = []
    if request.method is Method.sft:
        notes.append(
            f"sft: TRL 1.12's default loss_type='chunked_nll' (lm_head and cross-entropy in "
            f"checkpointed chunks of {SFT_LOSS_CHUNK_TOKENS} tokens; no full logits)"
        )
    if lp.reference != "none":
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
        raise InputError("--trace needs the model's config.json with its model_type")
    try:
        config = AutoConfig.for_model(model_type, **values)
    except (KeyError, ValueError) as exc:
        raise InputError(
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
    if architecture(model_type).eager_only or request.attention is Attention.eager:
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
        raise InputError(f"--trace cannot build {config.model_type}: {exc}") from exc


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
        lora_dropout=_lora_dropout(request, hf_config),
        target_modules=_lora_targets(request, hf_config),
        task_type="SEQ_CLS" if request.method is Method.reward else "CAUSAL_LM",
    )
    try:
        with _swappable(fake_mode) if fake_mode is not None else nullcontext():
            model = get_peft_model(model, config)
    except ValueError as exc:
        hint = ""
        if "ParamWrapper" in str(exc):  # peft's wrapper of stacked MoE expert weights
            hint = " (peft adapts the MoE experts here; use --lora-targets attention)"
        raise InputError(
            f"--trace could not apply LoRA ({request.lora_targets.value}): {exc}{hint}"
        ) from exc
    if fake_mode is not None:
        _adopt_foreign_tensors(model, fake_mode)
    return model


def _lora_dropout(request: PlanRequest, hf_config: dict[str, Any]) -> float:
    """The runners' LoRA dropout (planner.recipes.lora_dropout); LORA_DROPOUT is this module's
    name for it, so a test can set it."""
    model_type = hf_config.get("model_type", "")
    is_moe = model_type in SUPPORTED_TYPES and architecture(model_type).is_moe
    if lora_dropout(model_type, is_moe, request.lora_targets) == 0.0:
        return 0.0
    return LORA_DROPOUT


def _lora_targets(request: PlanRequest, hf_config: dict[str, Any]) -> Any:
    """peft ``target_modules`` from planner.parameters, the function the runners use."""
    traits = architecture(hf_config.get("model_type"))
    return lora_modules(traits, request.lora_targets.value)


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


def enable_checkpointing(model: Any) -> None:
    """Non-reentrant activation checkpointing, TRL's default, as Trainer.train() turns it on.

    transformers 5.x names it ``activation_checkpointing_enable``; it also makes the input
    embeddings' output require grad (what TRL asks for with PEFT + checkpointing).
    """
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


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


def _inputs(request: PlanRequest, lp: Loop, config: Any) -> dict[str, Any]:
    """The collated batch TRL's collator hands the trainer (random ids, full length): the
    recipe's rows per sample (chosen + rejected joined for DPO, ORPO, SimPO and reward), and
    KTO's no-grad KL batch."""
    import torch

    b, s = request.batch_size, request.seq_len
    vocab = config.vocab_size
    prompt, completion = request.prompt_and_completion()
    completion = min(completion, s - 1) if s > 1 else 0
    prompt = s - completion
    rows = lp.rows_per_sample * b

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
        kl_rows = lp.no_grad_rows_per_sample * b
        inputs["KL_input_ids"] = torch.randint(0, vocab, (kl_rows, s))
        inputs["KL_attention_mask"] = torch.ones(kl_rows, s, dtype=torch.long)
        inputs["KL_completion_mask"] = completion_mask.clone()
        inputs["label"] = torch.arange(b) < chosen
        inputs["chosen_idx"] = torch.arange(chosen)
        inputs["rejected_idx"] = torch.arange(chosen, b)
    if lp.reference == "none":  # precomputed reference log-probs, one per sequence
        if request.method is Method.dpo:
            inputs["ref_chosen_logps"] = torch.zeros(b)
            inputs["ref_rejected_logps"] = torch.zeros(b)
        elif request.method is Method.kto:
            inputs["ref_logps"] = torch.zeros(b)
            inputs["ref_KL_logps"] = torch.zeros(b)
    return inputs

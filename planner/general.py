"""The general path: causal LMs that have no analytic model (no record in planner.architectures).

Any `model_type` that transformers 5.24 maps to `AutoModelForCausalLM` is planned here. The
parameter count is exact: the real model class is built from the config on the meta device
(no memory, no weights) and its parameters are summed. The step's tensor memory is the traced
step (`planner.trace`, fake tensors), run for every plan; the per-GPU peak then adds what the
analytic path adds outside the traced tensors (runtime overhead, DDP's bucket copy of the
gradients, calibration). Architecture figures the time model needs (layers, hidden size, heads,
vocabulary) are read from the transformers config; what had to be assumed is said in the spec's
notes.

torch and transformers are imported only inside these functions: only a config without an
analytic model comes here, so `advisor plan --model 7b` still imports neither.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from planner.config_fields import positive_int
from planner.errors import InputError
from planner.memory import MemoryBreakdown, runtime_overhead_bytes, world
from planner.precision import load_dtype
from planner.specs import COMPONENTS, ModelSpec, Offload, Optimizer, PlanRequest, Sharding, Tuning

UNPLANNABLE_KEYS = ("quantization_config", "auto_map")
"""Config keys the meta-device build leaves out: a quantized checkpoint is planned as its
unquantized architecture (as the trace does), and remote code is never run."""

EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
"""Config keys that hold a mixture-of-experts model's expert count, as transformers names them."""
TOP_K_KEYS = ("num_experts_per_tok", "num_experts_per_token", "moe_topk", "moe_top_k", "top_k")
"""Config keys that hold how many experts each token runs through."""


def causal_lm_class(model_type: str) -> str | None:
    """transformers' `AutoModelForCausalLM` class name for `model_type`, or None."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)


def known_model_type(model_type: str) -> bool:
    """Whether transformers 5.24 has a config class for `model_type` at all."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return model_type in CONFIG_MAPPING_NAMES


def model_kind(model_type: str) -> str | None:
    """'encoder-decoder' or 'encoder-only' when transformers files `model_type` as a
    sequence-to-sequence or masked LM (BERT's LM-head decoder mode aside); None otherwise."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    )

    if model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
        return "encoder-decoder"
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "encoder-only"
    return None


def text_config(config: dict[str, Any], where: str) -> dict[str, Any] | None:
    """The language tower's config of a vision-language config that has no `text_config` key
    (transformers' config class supplies it), or None when `config` is not vision-language."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    model_type = config.get("model_type")
    vision = isinstance(config.get("vision_config"), dict)
    if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES and not vision:
        return None
    if not known_model_type(model_type):
        return None
    outer = transformers_config(config, where)
    inner = outer.get_text_config(decoder=True)
    if inner is outer:
        return None
    return inner.to_dict()


TEXT_MODULES = ("language_model", "text_model", "lm_head")
"""Module names of a vision-language model's language tower in transformers 5.24 (LLaVA, Gemma-3,
Mistral-3: `model.language_model`; Idefics3, SmolVLM: `model.text_model`; Llama-4:
`language_model`), and its head."""


def vision_params(config: dict[str, Any], where: str) -> int | None:
    """Parameters of a vision-language model outside its language tower (vision encoder,
    projector), counted on the meta device; None when transformers cannot build it."""
    import torch
    from transformers import AutoModelForImageTextToText

    try:
        outer = transformers_config(config, where)
        with _quiet(), torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(outer)
    except Exception:  # the tower is planned all the same; the note then gives no count
        return None
    text = {
        id(p)
        for name, module in model.named_modules()
        if name.rsplit(".", 1)[-1] in TEXT_MODULES
        for p in module.parameters()
    }
    if not text:
        return None
    return sum(p.numel() for p in model.parameters() if id(p) not in text)


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence transformers' config warnings (e.g. token ids past a tiny vocabulary) and torch's
    fake-tensor error log: the plan says what matters in one line."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    fake_log = logging.getLogger("torch._subclasses.fake_tensor")
    fake_level = fake_log.level
    hf_logging.set_verbosity_error()
    fake_log.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        fake_log.setLevel(fake_level)


def transformers_config(config: dict[str, Any], where: str) -> Any:
    """The transformers config object for a config.json (AutoConfig.for_model); InputError when
    transformers cannot build it."""
    from transformers import AutoConfig

    values = {k: v for k, v in config.items() if k not in UNPLANNABLE_KEYS}
    model_type = values.pop("model_type")
    try:
        with _quiet():
            return AutoConfig.for_model(model_type, **values)
    except Exception as exc:  # any config class's validation error is the user's
        raise InputError(
            f"{where}: transformers cannot read this {model_type} config ({_first(exc)})"
        ) from None


@dataclass(frozen=True)
class Counted:
    """What the meta-device build found."""

    params: int
    routed_experts: int
    """Parameters inside modules named `experts` (a mixture-of-experts model's routed experts)."""
    tied: bool = False
    """The lm_head shares the input embedding's weight."""


@lru_cache(maxsize=16)
def _count_on_meta(config_json: str, where: str) -> Counted:
    import torch
    from transformers import AutoModelForCausalLM

    config = transformers_config(json.loads(config_json), where)
    try:
        with _quiet(), torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception as exc:  # a config the model class refuses is the user's
        raise InputError(
            f"{where}: transformers cannot build {config.model_type} from this config "
            f"({_first(exc)})"
        ) from None
    # parameters() yields a tied lm_head once: the count transformers reports.
    params = sum(p.numel() for p in model.parameters())
    routed = sum(
        sum(p.numel() for p in module.parameters())
        for name, module in model.named_modules()
        if name.rsplit(".", 1)[-1] == "experts"
    )
    head, embedding = model.get_output_embeddings(), model.get_input_embeddings()
    tied = head is not None and embedding is not None and head.weight is embedding.weight
    return Counted(params=params, routed_experts=routed, tied=tied)


def count_on_meta(config: dict[str, Any], where: str) -> Counted:
    """The exact parameter count of `config`'s causal-LM class, built on the meta device."""
    return _count_on_meta(json.dumps(config, sort_keys=True, default=str), where)


def general_spec(
    config: dict[str, Any], name: str, source: str, where: str, notes: list[str]
) -> ModelSpec:
    """A spec for a causal LM without an analytic model: the exact count from the real model
    class on the meta device; the figures the time model reads, from the transformers config."""

    model_type = config["model_type"]
    hf = transformers_config(config, where)
    assumed: list[str] = []

    def read(field: str, fallback: int | None = None, why: str = "") -> int:
        value = getattr(hf, field, None)
        if value is None and fallback is not None and why:
            assumed.append(f"{field} {fallback:,} ({why})")
        values = {} if value is None else {field: value}
        return positive_int(values, field, where, fallback)

    hidden = read("hidden_size")
    layers = read("num_hidden_layers")
    heads = read("num_attention_heads")
    vocab = read("vocab_size")
    kv_heads = read("num_key_value_heads", heads, "no num_key_value_heads: one per query head")
    head_dim = read("head_dim", max(1, hidden // heads))  # the usual definition: no assumption
    intermediate = read("intermediate_size", 4 * hidden, "no intermediate_size: 4 x hidden_size")
    max_positions = read("max_position_embeddings", 2048, "the config names no context length")
    # After the sizes are checked against the planner's ceilings: the build takes time per layer.
    counted = count_on_meta(config, where)
    act = getattr(hf, "hidden_act", None) or getattr(hf, "hidden_activation", None)
    notes = list(notes)
    active = None
    if counted.routed_experts:
        active = active_params(hf, counted)
        if active == counted.params:
            notes.append(
                "mixture of experts: the config names no expert count or experts per token, so "
                "time assumes every expert runs for every token"
            )
        else:
            notes.append(
                f"mixture of experts: memory holds every expert (traced); time counts the "
                f"{active:,} of {counted.params:,} parameters a token runs through"
            )
    if assumed:
        notes.append("read from the config for the time model, assumed: " + "; ".join(assumed))
    return ModelSpec(
        name=name,
        source=source,
        model_type=model_type,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=intermediate,
        vocab_size=vocab,
        max_position_embeddings=max_positions,
        tie_word_embeddings=counted.tied,
        hidden_act=act if isinstance(act, str) else "unknown",
        params=counted.params,
        hf_config=config,
        estimate_path="traced",
        active_params=active,
        notes=notes,
    )


def active_params(hf: Any, counted: Counted) -> int:
    """Parameters a token runs through: total − routed experts × (E − k)/E, only the top-k of E
    routed experts running per token (Shazeer et al. 2017); shared experts, routers and dense
    layers run whole. The total when the config does not say E and k."""
    experts = next((getattr(hf, k) for k in EXPERT_KEYS if getattr(hf, k, None)), None)
    top_k = next((getattr(hf, k) for k in TOP_K_KEYS if getattr(hf, k, None)), None)
    if not isinstance(experts, int) or not isinstance(top_k, int) or not 0 < top_k <= experts:
        return counted.params
    idle = counted.routed_experts * (experts - top_k) // experts
    return counted.params - idle


# --------------------------------------------------------------------------- the traced memory


def traced_path_problem(spec: ModelSpec, request: PlanRequest) -> str | None:
    """Why the traced step cannot plan `request` for a general-path model, in one line; None
    when it can. The analytic model's methods and layouts that fake tensors cannot run."""
    from planner.trace import TRACED_METHODS

    why = f"{spec.model_type} has no analytic model, so its memory comes from a traced step"
    if request.method not in TRACED_METHODS:
        traced = ", ".join(m.value for m in TRACED_METHODS)
        return f"{why}, and {request.method.value}'s rollouts cannot be traced (traced: {traced})"
    if request.tuning is Tuning.qlora:
        return (
            f"{why}, and 4-bit (bitsandbytes) layers cannot run on fake tensors: use --tuning lora"
        )
    if request.optimizer in (Optimizer.adamw8bit, Optimizer.paged_adamw8bit):
        return (
            f"{why}, and 8-bit optimizers (bitsandbytes) cannot run on fake tensors: "
            "use --optimizer adamw"
        )
    if request.sharding not in (Sharding.none, Sharding.ddp):
        return f"{why} on one unsharded GPU; --sharding {request.sharding.value} cannot be traced"
    if request.offload is not Offload.none:
        return f"{why}, which does not model CPU offload: drop --offload"
    if spec.active_params is not None and load_dtype(request) != "bfloat16":
        # torch's grouped_mm (transformers 5.24's default experts) takes bf16 only.
        return (
            f"{why}, and its experts run as torch grouped_mm, which takes bf16 weights only: "
            "plan --precision bf16-true, or LoRA over a bf16 base"
        )
    return None


UNTRACEABLE_FLAGS = ("--fit", "--tuning qlora", "--sharding", "--offload")
"""Flags a suggestion may name that the general path refuses (`traced_path_problem`)."""


def traced_suggestions(suggestions: list[str]) -> list[str]:
    """The plan's suggestions that the general path can plan: none that names a flag a traced
    step cannot run, and no 'for more room:' heading left without items."""
    kept = [s for s in suggestions if not any(flag in s for flag in UNTRACEABLE_FLAGS)]
    return [] if len(kept) == 1 and kept[0].endswith("for more room:") else kept


@dataclass
class TracedMemory:
    """The traced step turned into the plan's memory breakdown."""

    breakdown: MemoryBreakdown
    trainable_params: int
    seconds: float


PHASE_NAMES = {
    "kl_forward": "KL forward (no grad)",
    "forward": "forward",
    "loss": "loss",
    "reference_forward": "reference / scoring forward",
    "backward": "backward",
    "optimizer_step": "optimizer step",
}
"""The trace's phases as the plan names them."""


def traced_memory(spec: ModelSpec, request: PlanRequest) -> TracedMemory:
    """Per-GPU memory of a general-path model: the traced step's tensors, plus what the analytic
    path adds outside them (DDP's bucket copy of the gradients, `memory.model_states`; the
    runtime overhead, `memory.runtime_overhead_bytes`)."""
    from planner.trace import trace_step

    problem = traced_path_problem(spec, request)
    if problem:
        raise InputError(problem)
    try:
        with _quiet():
            trace = trace_step(request, spec.hf_config)
    except InputError as exc:  # worded for --trace: say it for the general path
        reason = str(exc).removeprefix("--trace ").removesuffix("; drop --trace")
        raise InputError(
            f"{spec.model_type} has no analytic model and its step could not be traced: {reason}"
        ) from None
    except Exception as exc:  # any architecture transformers knows may fail its own way
        raise InputError(
            f"{spec.model_type} has no analytic model and its step could not be traced on fake "
            f"tensors ({type(exc).__name__}: {_first(exc)})"
        ) from None
    top = trace.max_bytes
    buckets = 0.0
    notes = list(trace.notes)
    if request.sharding is Sharding.ddp and world(request) > 1:
        # DDP's reducer copies gradients into buckets (PyTorch DDP docs), as model_states counts.
        buckets = float(top["grads"])
        notes.append("DDP bucket buffers hold a second copy of the gradients (not traced)")
    tensor_peak = trace.peak_bytes + buckets
    overhead = runtime_overhead_bytes(request, tensor_peak)
    # Each component's own high point over the step; the logits are inside the activations
    # and temporaries (the trace does not tell them apart).
    components = dict.fromkeys(COMPONENTS, 0.0)
    components |= {
        "weights": float(top["params"]),
        "trainable_weights": float(top["adapters"]),
        "gradients": float(top["grads"]) + buckets,
        "optimizer": float(top["optimizer"]),
        "activations": float(top["activations"] + top["temporaries"] + top["other"]),
        "reference_model": float(top["reference_model"]),
        "runtime_overhead": overhead,
    }
    live = {
        "weights": "params",
        "trainable_weights": "adapters",
        "gradients": "grads",
        "optimizer": "optimizer",
        "reference_model": "reference_model",
    }
    at_peak = trace.at_peak_bytes
    members = [name for name, category in live.items() if at_peak.get(category)]
    if at_peak.get("activations") or at_peak.get("temporaries"):
        members.insert(members.index("gradients") if "gradients" in members else 0, "activations")
    peak_phase = PHASE_NAMES.get(trace.peak_phase, trace.peak_phase)
    phases = {PHASE_NAMES.get(k, k): v + buckets for k, v in trace.phase_peaks.items()}
    phase_members = dict.fromkeys(phases, members)
    notes.append("logits are counted within the activations (the trace does not separate them)")
    breakdown = MemoryBreakdown(
        components=components,
        phases=phases,
        phase_members={**phase_members, peak_phase: members},
        peak_phase=peak_phase,
        tensor_peak=tensor_peak,
        overhead=overhead,
        cpu_offload=0.0,
        notes=notes,
    )
    return TracedMemory(breakdown, trace.trainable_params, trace.seconds)


def _first(exc: BaseException) -> str:
    """An exception's first line, short enough for a one-line error."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 160 else text[:159] + "…"

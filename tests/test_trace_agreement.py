"""The analytic estimate's tensor-level peak agrees with a traced step within 5% (issue #2).

Matrix: sft / dpo / dpo+lora / kto / orpo / reward × Llama-, Qwen2- and Gemma-2-style
architectures scaled down to trace in about a second × sequence 256 and 1024 × gradient
checkpointing on and off, halved so that every three-way combination still occurs
(`every_three_way`); then the same at TRL's default precision (fp32 weights under bf16
autocast), and at one length with the logits left in bf16 as under DeepSpeed and in fp32,
halved so that every pair still occurs (`every_two_way`; the known gaps stay in). The trace builds the
real transformers architecture on fake tensors (planner.trace); the estimate is
planner.memory, which never imports torch.
"""

from __future__ import annotations

import itertools

import pytest

from planner.memory import estimate_memory
from planner.models import spec_from_config
from planner.specs import PlanRequest
from tests.tiny_architectures import (
    GEMMA2_TINY,
    GEMMA3_TEXT_TINY,
    GPT_OSS_TINY,
    GRANITE_TINY,
    LLAMA_TINY,
    MIXTRAL_TINY,
    OLMO2_TINY,
    PHI_TINY,
    QWEN2_TINY,
    QWEN3_MOE_TINY,
)

ARCHITECTURES = {"llama": LLAMA_TINY, "qwen2": QWEN2_TINY, "gemma2": GEMMA2_TINY}
METHODS = ["sft", "dpo", "dpo+lora", "kto", "orpo", "reward"]


def every_three_way(methods: list[str]) -> list[tuple[str, str, int, bool]]:
    """Half of methods × architectures × {256, 1024} × checkpointing off / on, chosen so that
    every combination of any three of the four still occurs: each method on each architecture
    at both lengths, and with checkpointing both on and off (the other half repeats only
    four-way combinations, and took half of CI's tracing time)."""
    rows = itertools.product(enumerate(methods), enumerate(ARCHITECTURES), (256, 1024), (0, 1))
    return [
        (method, arch, seq, bool(ckpt))
        for (m, method), (a, arch), seq, ckpt in rows
        if (m + a + (seq == 1024) + ckpt) % 2 == 0
    ]


MATRIX = every_three_way(METHODS)
FULL_METHODS = [m for m in METHODS if "+" not in m]
MIXED_MATRIX = every_three_way(FULL_METHODS)


@pytest.mark.parametrize(("matrix", "methods"), [(MATRIX, METHODS), (MIXED_MATRIX, FULL_METHODS)])
def test_the_halved_matrices_keep_every_three_way_combination(matrix, methods):
    whole = list(itertools.product(methods, ARCHITECTURES, (256, 1024), (False, True)))
    assert len(matrix) == len(whole) // 2
    for axes in itertools.combinations(range(4), 3):
        seen = {tuple(row[i] for i in axes) for row in matrix}
        assert seen == {tuple(row[i] for i in axes) for row in whole}, axes


def every_two_way(
    methods: list[str], architectures: list[str], seq: int
) -> list[tuple[str, str, int, bool]]:
    """Half of methods × architectures × checkpointing off / on at one length, chosen so that
    every pair still occurs: each method on each architecture, each method and each
    architecture with checkpointing both on and off."""
    rows = itertools.product(enumerate(methods), enumerate(architectures), (0, 1))
    return [
        (method, arch, seq, bool(ckpt))
        for (m, method), (a, arch), ckpt in rows
        if (m + a + ckpt) % 2 == 0
    ]


DEEPSPEED_METHODS = ["dpo", "dpo+lora", "kto", "orpo", "simpo"]
# 1024 tokens for every method; 256 for DPO, where the entropy metric's fixed-size chunk weighs
# most (the others were checked at 256 when the 16-bit counts were set, all within 5%).
DEEPSPEED_1024 = every_two_way(DEEPSPEED_METHODS, list(ARCHITECTURES), 1024)
DEEPSPEED_MATRIX = [*DEEPSPEED_1024, *every_two_way(["dpo"], list(ARCHITECTURES), 256)]
# Llama- and Gemma-2-style (eager attention, softcapping); Qwen2-style differs from Llama in
# its tied embeddings, which the default-precision matrix covers.
FP32_METHODS = [*METHODS, "simpo"]
FP32_MATRIX = every_two_way(FP32_METHODS, ["llama", "gemma2"], 1024)
FP32_KNOWN_GAPS = {
    ("reward", "gemma2", 1024, True): (
        "eager attention's recomputed layer in fp32 holds less than the estimate counts "
        "(about +8%); not yet attributed tensor by tensor"
    ),
}
FP32_MATRIX += [row for row in FP32_KNOWN_GAPS if row not in FP32_MATRIX]  # gaps stay in view


@pytest.mark.parametrize(
    ("matrix", "methods", "architectures"),
    [
        (DEEPSPEED_1024, DEEPSPEED_METHODS, list(ARCHITECTURES)),
        (FP32_MATRIX, FP32_METHODS, ["llama", "gemma2"]),
    ],
    ids=["16bit-logits", "fp32"],
)
def test_the_halved_one_length_matrices_keep_every_pair(matrix, methods, architectures):
    whole = list(itertools.product(methods, architectures, (False, True)))
    assert len(matrix) <= len(whole) // 2 + 1
    rows = [(m, a, c) for m, a, _, c in matrix]
    for axes in itertools.combinations(range(3), 2):
        seen = {tuple(row[i] for i in axes) for row in rows}
        assert seen == {tuple(row[i] for i in axes) for row in whole}, axes


KNOWN_GAPS = {
    ("sft", "gemma2", 1024, True): (
        "eager attention's backward under autocast over fp32 weights holds more than the "
        "estimate counts (about -7%); not yet attributed tensor by tensor"
    ),
}


def request_for(
    method: str, arch: str, seq: int, checkpointing: bool, precision: str | None = None
) -> PlanRequest:
    """Full tuning traced in pure bf16 (bf16-true) by default, as when this matrix was set;
    LoRA in TRL's default (bf16 base, fp32 adapters)."""
    name, _, tuning = method.partition("+")
    return PlanRequest(
        method=name,
        tuning=tuning or "full",
        precision=precision or ("bf16-true" if not tuning else "bf16-mixed"),
        seq_len=seq,
        grad_checkpointing=checkpointing,
        batch_size=2,
        grad_accum=1,
        attention="eager" if arch == "gemma2" else "sdpa",
    )


def within_5_percent(request: PlanRequest, arch: str):
    """Trace `request` on `arch`, assert the estimate's tensor peak is within 5%, return the
    trace."""
    from planner.trace import trace_step

    config = ARCHITECTURES.get(arch) or ONE_ROW_ARCHITECTURES[arch]
    traced = trace_step(request, config)
    estimated = estimate_memory(spec_from_config(config, arch, "test"), request)
    error = estimated.tensor_peak / traced.peak_bytes - 1
    assert abs(error) <= 0.05, (
        f"estimate {estimated.tensor_peak / 2**20:.1f} MiB ({estimated.peak_phase}) vs traced "
        f"{traced.peak_bytes / 2**20:.1f} MiB ({traced.peak_phase}): {error:+.1%}"
    )
    return traced


@pytest.mark.parametrize(
    ("method", "arch", "seq", "checkpointing"),
    MATRIX,
    ids=[f"{m}-{a}-s{s}-{'ckpt' if c else 'nockpt'}" for m, a, s, c in MATRIX],
)
def test_analytic_peak_within_5_percent_of_traced_step(method, arch, seq, checkpointing):
    request = request_for(method, arch, seq, checkpointing)
    within_5_percent(request, arch)


@pytest.mark.parametrize(
    ("method", "arch", "seq", "checkpointing"),
    [
        pytest.param(*row, marks=pytest.mark.xfail(reason=KNOWN_GAPS[row], strict=True))
        if row in KNOWN_GAPS
        else row
        for row in MIXED_MATRIX
    ],
    ids=[f"{m}-{a}-s{s}-{'ckpt' if c else 'nockpt'}" for m, a, s, c in MIXED_MATRIX],
)
def test_default_precision_peak_within_5_percent_of_traced_step(method, arch, seq, checkpointing):
    """Full tuning as TRL runs it by default: fp32 weights under bf16 autocast (fp32 residual
    stream, a 16-bit input cast per linear, the weights' 16-bit casts kept for backward)."""
    request = request_for(method, arch, seq, checkpointing, precision="bf16-mixed")
    assert within_5_percent(request, arch).weight_dtype == "float32"


@pytest.mark.parametrize(
    ("method", "arch", "seq", "checkpointing"),
    DEEPSPEED_MATRIX,
    ids=[f"{m}-{a}-s{s}-{'ckpt' if c else 'nockpt'}" for m, a, s, c in DEEPSPEED_MATRIX],
)
def test_16bit_logits_peak_within_5_percent_of_traced_step(
    method, arch, seq, checkpointing, monkeypatch
):
    """The loss as it runs under DeepSpeed: the engine holds the model in bf16 and accelerate
    makes no fp32 copy of the outputs (no native AMP), so TRL's loss sees bf16 logits. Traced
    on one GPU as a bf16 model with accelerate's conversion off, the same forward and loss;
    the estimate counts the recipe's 16-bit logit copies (`Recipe.logit_copies_16bit`)."""
    from planner import precision

    monkeypatch.setattr(precision, "outputs_in_fp32", lambda request: False)
    request = request_for(method, arch, seq, checkpointing, precision="bf16-true")
    assert within_5_percent(request, arch).weight_dtype == "bfloat16"


@pytest.mark.parametrize(
    ("method", "arch", "seq", "checkpointing"),
    [
        pytest.param(*row, marks=pytest.mark.xfail(reason=FP32_KNOWN_GAPS[row], strict=True))
        if row in FP32_KNOWN_GAPS
        else row
        for row in FP32_MATRIX
    ],
    ids=[f"{m}-{a}-s{s}-{'ckpt' if c else 'nockpt'}" for m, a, s, c in FP32_MATRIX],
)
def test_fp32_peak_within_5_percent_of_traced_step(method, arch, seq, checkpointing):
    """--precision fp32 (TRL's default without bf16/fp16): fp32 logits from the start, no
    autocast copies; eager attention keeps the fp32 softmax itself as the probabilities."""
    request = request_for(method, arch, seq, checkpointing, precision="fp32")
    within_5_percent(request, arch)


@pytest.mark.parametrize(
    ("method", "arch"),
    [("sft", "llama"), ("dpo", "qwen2"), ("dpo+lora", "gemma2"), ("kto", "llama")],
)
def test_gradient_accumulation_keeps_earlier_gradients_live(method, arch):
    """With grad_accum > 1 the last micro-batch runs with the earlier gradients in memory."""
    request = request_for(method, arch, 512, True).model_copy(update={"grad_accum": 4})
    within_5_percent(request, arch)


ONE_ROW_ARCHITECTURES = {
    "phi": PHI_TINY,
    "olmo2": OLMO2_TINY,
    "granite": GRANITE_TINY,
    "gemma3_text": GEMMA3_TEXT_TINY,
    "mixtral": MIXTRAL_TINY,
    "qwen3_moe": QWEN3_MOE_TINY,
    "gpt_oss": GPT_OSS_TINY,
}
"""Architectures checked by a row or two each, outside the matrices (CI's time budget)."""
ONE_ROW_CHECKS = [
    # Phi: parallel attention + MLP under one LayerNorm, gelu_new's saved intermediates, and in
    # SFT (dropout left on) the resid_pdrop masks.
    ("sft", "phi", 256, False),
    ("dpo+lora", "phi", 1024, True),
    # OLMo-2: post-norms in fp32 and q/k norms over the whole projections, trained and frozen.
    ("dpo", "olmo2", 1024, False),
    ("dpo+lora", "olmo2", 256, True),
    # Granite: Llama's layers under scalar multipliers, tied embeddings, logits scaled.
    ("dpo", "granite", 1024, False),
    # Gemma-3: Gemma-2's fp32 norms plus per-head q/k norms, sdpa, sliding windows.
    ("sft", "gemma3_text", 1024, True),
    ("dpo+lora", "gemma3_text", 256, False),
    # MoE (grouped_mm experts in bf16, router softmax and indices, the router aux loss that
    # TRL's SFT/DPO add): Mixtral; Qwen3-MoE with q/k norms and a dense layer, the largest one
    # recomputed at the checkpointed peak; GPT-OSS
    # with sinks under eager attention (asked for sdpa: it has none), biased clamped-SwiGLU
    # experts, and LoRA whose "all-linear" adapts the attention alone.
    ("sft", "mixtral", 1024, True),
    ("dpo", "qwen3_moe", 1024, False),
    ("sft", "qwen3_moe", 1024, True),
    ("sft", "gpt_oss", 256, False),
    ("dpo+lora", "gpt_oss", 256, True),
]


@pytest.mark.parametrize(
    ("method", "arch", "seq", "checkpointing"),
    ONE_ROW_CHECKS,
    ids=[f"{m}-{a}-s{s}-{'ckpt' if c else 'nockpt'}" for m, a, s, c in ONE_ROW_CHECKS],
)
def test_other_architectures_peak_within_5_percent_of_traced_step(method, arch, seq, checkpointing):
    request = request_for(method, arch, seq, checkpointing)
    within_5_percent(request, arch)


@pytest.mark.slow
@pytest.mark.parametrize(("method", "tuning"), [("dpo", "full"), ("dpo", "lora"), ("sft", "full")])
def test_llama_2_7b_estimate_matches_its_trace(method, tuning):
    """At real size the optimizer step (weights, gradients and AdamW states) competes with
    backward for the peak of full tuning; LoRA peaks in backward."""
    from planner.models import resolve_model
    from planner.trace import trace_step

    spec = resolve_model("llama-2-7b")
    request = PlanRequest(method=method, tuning=tuning, seq_len=1024, batch_size=2, grad_accum=1)
    traced = trace_step(request, spec.hf_config)
    estimated = estimate_memory(spec, request)
    assert abs(estimated.tensor_peak / traced.peak_bytes - 1) <= 0.02
    if tuning == "lora":
        assert estimated.peak_phase == "forward / backward" and traced.peak_phase == "backward"
        # The trace holds the exact model: every parameter once, in bf16, no reference copy
        # (the adapters disabled are the reference), gradients only for the fp32 adapters.
        assert traced.model_params == 6_738_415_616
        assert traced.at_peak_bytes["params"] == 6_738_415_616 * 2
        assert traced.at_peak_bytes["reference_model"] == 0
        assert traced.max_bytes["grads"] == traced.at_peak_bytes["adapters"]
        assert traced.at_peak_bytes["adapters"] == 4 * traced.trainable_params

"""planner.trace: one TRL 1.12 training step traced on fake tensors."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest

from planner import parameters
from planner.architectures import ARCHITECTURES, architecture
from planner.errors import InputError
from planner.models import spec_from_config
from planner.specs import PlanRequest
from planner.trace import CATEGORIES, PHASES, TraceResult, build, result, trace_step
from planner.trace.steps import common
from tests.tiny_architectures import ARCHITECTURE_CONFIGS, GEMMA2_TINY, LLAMA_TINY, QWEN2_TINY

ROOT = Path(__file__).resolve().parent.parent
ARCHS = {"llama": LLAMA_TINY, "qwen2": QWEN2_TINY, "gemma2": GEMMA2_TINY}


@cache
def traced(arch: str = "llama", **fields) -> TraceResult:
    request = {"seq_len": 128, "batch_size": 2, "grad_accum": 1, **fields}
    return trace_step(PlanRequest(**request), ARCHS[arch])


def test_result_is_consistent():
    r = traced(method="dpo", tuning="full")
    assert set(r.at_peak_bytes) == set(CATEGORIES) == set(r.max_bytes)
    assert sum(r.at_peak_bytes.values()) == r.peak_bytes
    assert max(r.phase_peaks.values()) == r.peak_bytes
    assert r.peak_phase in PHASES and list(r.phase_peaks) == [
        p for p in PHASES if p in r.phase_peaks
    ]
    assert all(r.max_bytes[c] >= r.at_peak_bytes[c] for c in CATEGORIES)
    assert r.seconds > 0
    assert TraceResult.model_validate_json(r.model_dump_json()) == r


def test_lora_dpo_gradients_are_only_the_adapters():
    r = traced(method="dpo", tuning="lora", lora_targets="all-linear", lora_rank=8)
    assert r.reference_params == 0 and r.at_peak_bytes["reference_model"] == 0
    # peft makes the adapters fp32; the frozen base stays bf16 and gets no gradient.
    assert r.at_peak_bytes["adapters"] == 4 * r.trainable_params
    assert r.max_bytes["grads"] == r.at_peak_bytes["adapters"]
    assert r.at_peak_bytes["params"] == 2 * r.model_params
    assert r.trainable_params < r.model_params // 10
    # The reference is the same model with the adapters disabled: a reference pass, no copy.
    assert "reference_forward" in r.phase_peaks


def test_full_dpo_has_a_reference_model_as_big_as_the_policy():
    r = traced(method="dpo", tuning="full", precision="bf16-true")
    assert r.reference_params == r.model_params == r.trainable_params
    assert r.at_peak_bytes["reference_model"] == r.at_peak_bytes["params"] == 2 * r.model_params
    # bf16 model: bf16 grads, AdamW's two states in bf16.
    assert r.max_bytes["grads"] == 2 * r.model_params
    assert r.at_peak_bytes["optimizer"] >= 4 * r.model_params
    # TRL's default (bf16-mixed): fp32 weights, reference, grads and states.
    mixed = traced(method="dpo", tuning="full")
    assert mixed.weight_dtype == "float32"
    assert mixed.at_peak_bytes["reference_model"] == mixed.at_peak_bytes["params"]
    assert mixed.at_peak_bytes["params"] == 4 * mixed.model_params
    assert mixed.max_bytes["grads"] == 4 * mixed.model_params


@pytest.mark.parametrize("tuning", ["full", "lora"])
def test_precomputed_reference_log_probs_remove_the_reference(tuning):
    with_ref = traced(method="dpo", tuning=tuning)
    without = traced(method="dpo", tuning=tuning, precompute_ref_log_probs=True)
    assert without.at_peak_bytes["reference_model"] == 0 and without.reference_params == 0
    assert "reference_forward" not in without.phase_peaks
    assert without.peak_bytes < with_ref.peak_bytes


@pytest.mark.parametrize(
    ("arch", "method"),
    [(arch, ("sft", "dpo")[n % 2]) for n, arch in enumerate(ARCHS)],
)
def test_checkpointing_lowers_the_activation_max(arch, method):
    """Each architecture once, the methods alternating (both methods' checkpointed peaks are
    held to their traces in tests/test_trace_agreement.py)."""
    on = traced(arch, method=method, tuning="full", seq_len=256, grad_checkpointing=True)
    off = traced(arch, method=method, tuning="full", seq_len=256, grad_checkpointing=False)
    assert on.max_bytes["activations"] < off.max_bytes["activations"]
    assert on.peak_bytes < off.peak_bytes


def test_kto_runs_the_kl_batch_and_both_references():
    r = traced(method="kto", tuning="full")
    assert {"kl_forward", "forward", "reference_forward", "backward"} <= set(r.phase_peaks)
    assert r.at_peak_bytes["reference_model"] == r.at_peak_bytes["params"]


def test_grad_accumulation_keeps_earlier_gradients_live():
    one = traced(method="orpo", tuning="full", grad_accum=1, precision="bf16-true")
    many = traced(method="orpo", tuning="full", grad_accum=4, precision="bf16-true")
    assert many.phase_peaks["forward"] - one.phase_peaks["forward"] == 2 * one.model_params


def test_gemma2_is_traced_with_eager_attention():
    r = traced("gemma2", method="orpo", tuning="full")
    assert r.attention == "eager"


@pytest.mark.parametrize("model_type", list(ARCHITECTURES))
def test_every_architecture_traces_as_its_traits_say(model_type):
    """Each record's tiny config traces: the counted parameters, the LoRA targets the traits
    name (as the runners pass them to peft) and the attention implementation."""
    config = ARCHITECTURE_CONFIGS[model_type]
    request = PlanRequest(
        method="dpo",
        tuning="lora",
        lora_targets="attention",
        seq_len=64,
        batch_size=1,
        grad_accum=1,
    )
    r = trace_step(request, config)
    spec = spec_from_config(config, model_type, "config")
    assert r.model_params == spec.params
    assert r.trainable_params == parameters.lora_params(spec, request.lora_rank, "attention")
    assert r.attention == ("eager" if architecture(model_type).eager_only else "sdpa")


@pytest.mark.parametrize("precision", ["bf16-mixed", "fp32"])
def test_moe_experts_over_weights_that_are_not_bf16_are_refused_with_a_one_line_reason(precision):
    """transformers 5.24 runs MoE experts as torch grouped_mm, which takes bf16 only: an
    InputError before anything is built, not a RuntimeError from inside torch."""
    request = PlanRequest(
        method="dpo", tuning="full", precision=precision, seq_len=64, batch_size=1, grad_accum=1
    )
    with pytest.raises(InputError, match="grouped_mm, which takes bf16 only"):
        trace_step(request, ARCHITECTURE_CONFIGS["qwen3_moe"])


def test_precisions_load_the_weights_as_the_runners_do():
    fp32 = traced(method="reward", tuning="full", precision="fp32")
    assert fp32.weight_dtype == "float32"
    assert fp32.at_peak_bytes["params"] == 4 * fp32.model_params
    # fp16 (approximated with CPU autocast): fp32 masters for full tuning, fp16 frozen base for LoRA.
    assert traced(method="sft", tuning="full", precision="fp16").weight_dtype == "float32"
    lora16 = traced(method="sft", tuning="lora", precision="fp16", lora_targets="qv")
    assert lora16.weight_dtype == "float16"
    assert lora16.at_peak_bytes["params"] == 2 * lora16.model_params


def test_fused_adamw_step_holds_no_temporary(monkeypatch):
    """The runners' adamw_torch_fused steps in one kernel; adamw_torch (foreach on CUDA) would
    hold exp_avg_sq.sqrt() for a whole group."""
    r = traced(method="sft", tuning="full", precision="bf16-true")
    states = 2 * 2 * r.model_params  # two bf16 states
    assert r.at_peak_bytes["optimizer"] == pytest.approx(states, abs=4096)
    assert r.max_bytes["optimizer"] == pytest.approx(states, rel=0.01)
    monkeypatch.setattr(build, "ADAMW_IMPLEMENTATION", "adamw_torch")
    # not the cached fused trace
    foreach = traced.__wrapped__(method="sft", tuning="full", precision="bf16-true")
    assert foreach.max_bytes["optimizer"] == pytest.approx(1.5 * states, rel=0.01)


def test_lora_dropout_is_active_in_sft_only(monkeypatch):
    """runners' lora_dropout=0.05 saves a bool mask per adapted layer; TRL's disable_dropout
    turns it off in every trainer but SFT's."""
    sft = traced(method="sft", tuning="lora", grad_checkpointing=False)
    dpo = traced(
        method="dpo", tuning="lora", precompute_ref_log_probs=True, grad_checkpointing=False
    )
    monkeypatch.setattr(build, "LORA_DROPOUT", 0.0)
    request = {
        "seq_len": 128,
        "batch_size": 2,
        "grad_accum": 1,
        "tuning": "lora",
        "grad_checkpointing": False,
    }
    sft_off = trace_step(PlanRequest(method="sft", **request), LLAMA_TINY)
    dpo_off = trace_step(
        PlanRequest(method="dpo", precompute_ref_log_probs=True, **request), LLAMA_TINY
    )
    assert sft.max_bytes["activations"] > sft_off.max_bytes["activations"]
    assert dpo.max_bytes["activations"] == dpo_off.max_bytes["activations"]


def test_sgd_has_no_optimizer_state():
    r = traced(method="simpo", tuning="full", optimizer="sgd")
    assert r.max_bytes["optimizer"] == 0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tuning": "qlora"}, "--trace does not support qlora"),
        ({"optimizer": "adamw8bit"}, "8-bit"),
        ({"optimizer": "paged_adamw8bit"}, "8-bit"),
        ({"method": "ppo"}, "ppo/grpo/rloo are estimated analytically"),
        ({"method": "grpo"}, "ppo/grpo/rloo are estimated analytically"),
        ({"method": "rloo"}, "ppo/grpo/rloo are estimated analytically"),
        ({"sharding": "zero3", "num_gpus": 2}, "unsharded"),
        ({"offload": "optimizer"}, "offload"),
    ],
)
def test_untraceable_requests_raise_input_error(fields, message):
    with pytest.raises(InputError, match=message):
        trace_step(PlanRequest(**{"method": "dpo", "tuning": "lora", **fields}), LLAMA_TINY)


def test_unknown_architecture_raises_plan_error():
    with pytest.raises(InputError, match="model_type"):
        trace_step(PlanRequest(method="sft"), {"hidden_size": 64})
    with pytest.raises(InputError, match="cannot build"):
        trace_step(PlanRequest(method="sft"), {"model_type": "no-such-model"})


def test_importing_planner_trace_imports_no_torch():
    """`advisor plan` without --trace stays fast: the module and its refusals import no torch."""
    script = (
        "import json, sys\n"
        "from planner.trace import trace_step, TraceResult\n"
        "from planner.errors import InputError\n"
        "from planner.specs import PlanRequest\n"
        "try:\n"
        "    trace_step(PlanRequest(tuning='qlora'), {'model_type': 'llama'})\n"
        "except InputError:\n"
        "    pass\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    )
    loaded = {name.split(".")[0] for name in json.loads(out.stdout.strip().splitlines()[-1])}
    assert not loaded & {"torch", "transformers", "peft", "trl", "accelerate"}


# ----------------------------------------------------------------- the emulation against TRL
#
# planner.trace re-implements what TRL 1.12's trainers do to the logits (it cannot call them
# on fake tensors: they read values with .item() and boolean masks). Here TRL's own methods run
# on real CPU tensors of the same tiny models, through the same tracker, with a padded batch
# (what real batches have and what the fake trace assumes); the fake trace must match them.


class _Accelerator:
    def __init__(self):
        import torch

        self.device = torch.device("cpu")

    def unwrap_model(self, model):
        return model

    def gather_for_metrics(self, tensor):
        return tensor

    def gather(self, tensor):
        return tensor


def _prepared(step):
    """Pad one position (as TRL's collators do) and wrap forwards as accelerate does."""
    from accelerate.utils.operations import convert_outputs_to_fp32

    inputs = step.inputs
    mask = inputs.get("attention_mask", inputs.get("rejected_attention_mask"))
    mask[0, -1] = 0
    for model in (step.setup.model, step.setup.ref_model):
        if model is not None:
            model.forward = convert_outputs_to_fp32(model.forward)
    return inputs


def _stub(step, **fields):
    base = {
        "model": step.setup.model,
        "ref_model": step.setup.ref_model,
        "accelerator": _Accelerator(),
        "aux_loss_enabled": False,
        "ld_alpha": None,
        "precompute_ref_logps": False,
        "args": types.SimpleNamespace(gradient_checkpointing_kwargs={"use_reentrant": False}),
        "f_divergence_type": "reverse_kl",
        "loss_types": ["sigmoid"],
        "loss_weights": [1.0],
        "loss_type": "kto",
        "beta": 0.1,
        "label_smoothing": 0.0,
        "use_weighting": False,
        "use_liger_kernel": False,
        "calculate_KL": True,
        "desirable_weight": 1.0,
        "undesirable_weight": 1.0,
        "is_encoder_decoder": False,
        "padding_value": 0,
        "pad_token_id": 0,
        "_metrics": defaultdict(lambda: defaultdict(list)),
        "_total_train_tokens": 0,
    }
    return types.SimpleNamespace(**{**base, **fields})


def _trl_dpo(step):
    from trl.trainer.dpo_trainer import DPOTrainer

    inputs = _prepared(step)
    batch = {k: inputs[k] for k in ("input_ids", "attention_mask", "completion_mask")}
    return DPOTrainer._compute_loss(_stub(step), step.setup.model, batch, False)


def _trl_kto(step):
    from trl.trainer.kto_trainer import KTOTrainer

    inputs = _prepared(step)
    keys = ("input_ids", "attention_mask", "completion_mask", "label")
    keys += ("KL_input_ids", "KL_attention_mask", "KL_completion_mask")
    stub = _stub(step)
    stub._compute_kl_logps = types.MethodType(KTOTrainer._compute_kl_logps, stub)
    return KTOTrainer._compute_loss(stub, step.setup.model, {k: inputs[k] for k in keys}, False)


def _trl_sft(step):
    from trl.trainer.sft_trainer import _CHUNKED_LM_HEAD_CHUNK_SIZE, _patch_chunked_ce_lm_head

    model = step.setup.model
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    _patch_chunked_ce_lm_head(target, chunk_size=_CHUNKED_LM_HEAD_CHUNK_SIZE)
    inputs = _prepared(step)
    out = model(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        labels=inputs["labels"],
        use_cache=False,
    )
    _ = (out.num_valid_tokens.item(), out.entropy_sum.item(), out.num_correct_tokens.item())
    return out["loss"]


def _pairs(inputs):
    keys = ("input_ids", "attention_mask", "labels")
    return {f"{side}_{k}": inputs[f"{side}_{k}"] for side in ("chosen", "rejected") for k in keys}


def _trl_orpo(step):
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    inputs = _prepared(step)
    stub = _stub(
        step,
        concatenated_inputs=ORPOTrainer.concatenated_inputs,
        get_batch_logps=ORPOTrainer.get_batch_logps,
    )
    stub.concatenated_forward = types.MethodType(ORPOTrainer.concatenated_forward, stub)
    stub.odds_ratio_loss = types.MethodType(ORPOTrainer.odds_ratio_loss, stub)
    loss, _ = ORPOTrainer.get_batch_loss_metrics(stub, step.setup.model, _pairs(inputs))
    return loss


def _trl_simpo(step):
    from trl.experimental.cpo.cpo_trainer import CPOTrainer

    inputs = _prepared(step)
    stub = _stub(
        step,
        concatenated_inputs=CPOTrainer.concatenated_inputs,
        get_batch_logps=CPOTrainer.get_batch_logps,
        alpha=0.0,
        loss_type="simpo",
        simpo_gamma=0.5,
        cpo_alpha=0.0,
    )
    stub.concatenated_forward = types.MethodType(CPOTrainer.concatenated_forward, stub)
    stub.cpo_loss = types.MethodType(CPOTrainer.cpo_loss, stub)
    loss, _ = CPOTrainer.get_batch_loss_metrics(stub, step.setup.model, _pairs(inputs))
    return loss


def _trl_reward(step):
    from trl.trainer.reward_trainer import RewardTrainer

    inputs = _prepared(step)
    stub = _stub(step, args=types.SimpleNamespace(center_rewards_coefficient=None))
    batch = {k: inputs[k] for k in ("input_ids", "attention_mask")}
    return RewardTrainer.compute_loss(stub, step.setup.model, batch)


TRL_STEPS = {
    "dpo": _trl_dpo,
    "kto": _trl_kto,
    "sft": _trl_sft,
    "orpo": _trl_orpo,
    "simpo": _trl_simpo,
    "reward": _trl_reward,
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "tuning", "ckpt", "arch"),
    # Each method's loss on both architectures where it has two setups, each setup once:
    # Gemma-2 (eager attention, softcapped logits) and Llama each for half of them.
    [
        ("dpo", "full", False, "llama"),
        ("dpo", "lora", True, "gemma2"),
        ("kto", "full", True, "gemma2"),
        ("kto", "lora", False, "llama"),
        ("sft", "full", False, "gemma2"),
        ("sft", "lora", True, "llama"),
        ("orpo", "full", True, "gemma2"),
        ("simpo", "lora", False, "llama"),
        ("reward", "full", False, "gemma2"),
    ],
)
def test_fake_trace_matches_trl_on_real_tensors(monkeypatch, method, tuning, ckpt, arch):
    # CUDA's hidden logsumexp buffer is emulated on fake tensors only; a CPU run has none.
    monkeypatch.setattr(common, "EMULATE_CUDA_WORKSPACES", False)
    request = PlanRequest(
        method=method,
        tuning=tuning,
        seq_len=160,
        batch_size=2,
        grad_accum=1,
        grad_checkpointing=ckpt,
        # Checked byte for byte with bf16 weights; fp32 weights under CPU bf16 autocast keep
        # its weight casts differently on real tensors (not yet reconciled).
        precision="bf16-true" if tuning == "full" else "bf16-mixed",
    )
    fake = trace_step(request, ARCHS[arch])
    real = result._trace(request, ARCHS[arch], fake=False, step=TRL_STEPS[method])
    # Equal up to a few scalars (metrics kept a little longer or shorter).
    assert abs(fake.peak_bytes - real.peak_bytes) <= 1024
    for category in CATEGORIES:
        assert abs(fake.max_bytes[category] - real.max_bytes[category]) <= 1024, category
    for phase in ("backward", "optimizer_step"):
        assert abs(fake.phase_peaks[phase] - real.phase_peaks[phase]) <= 1024, phase

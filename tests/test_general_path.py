"""The general path: a causal LM without an architecture record is planned from its real model
class (parameters counted on the meta device) and a traced step; encoders are refused; a
vision-language model is planned on its language tower."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

from planner.constants import GIB
from planner.errors import InputError
from planner.memory import runtime_overhead_bytes
from planner.models import spec_from_config
from planner.specs import COMPONENTS, PlanRequest
from planner.trace import trace_step
from tests.test_plan_cli import run_cli
from tests.tiny_architectures import QWEN2_TINY

# StarCoder2 (not in planner.architectures): biased LayerNorms, a plain biased MLP, GQA. Sized
# so that its states are whole GiB (a traced step costs the same at any size).
STARCODER2: dict = {
    "model_type": "starcoder2",
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 2,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "vocab_size": 32768,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
}


def meta_count(config: dict) -> int:
    """transformers' own count: the causal-LM class built on the meta device."""
    values = {k: v for k, v in config.items() if k != "model_type"}
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(
            AutoConfig.for_model(config["model_type"], **values)
        )
    return sum(p.numel() for p in model.parameters())


def write(tmp_path, config: dict, name: str = "config.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return str(path)


@pytest.mark.slow
def test_general_path_counts_on_the_meta_device_and_plans_the_traced_step(tmp_path, capsys):
    flags = ["--method", "dpo", "--tuning", "full", "--seq-len", "256", "--grad-accum", "1"]
    code, out, err = run_cli(
        capsys, "plan", "--model", write(tmp_path, STARCODER2), *flags, "--json"
    )
    assert code == 0, err
    assert "general path: starcoder2 has no analytic model" in err
    plan = json.loads(out)
    model = plan["model"]
    assert model["params"] == meta_count(STARCODER2)
    assert model["estimate_path"] == "traced" and model["trace_seconds"] > 0
    assert model["trainable_params"] == model["params"]

    # The tensor peak is the traced step's; the per-GPU peak adds the analytic runtime overhead.
    request = PlanRequest(**{k: v for k, v in plan["request"].items() if k != "model"})
    trace = trace_step(request, STARCODER2)
    memory = plan["memory"]
    assert memory["tensor_peak_gib"] == pytest.approx(trace.peak_bytes / GIB, abs=0.01)
    overhead = runtime_overhead_bytes(request, trace.peak_bytes) / GIB
    assert memory["components_gib"]["runtime_overhead"] == pytest.approx(overhead, abs=0.01)
    assert memory["per_gpu_peak_gib"] == pytest.approx(trace.peak_bytes / GIB + overhead, abs=0.02)
    # DPO's full-tuning reference copy (fp32, as the policy loads) is in the trace, and the
    # components cover the peak.
    reference = model["params"] * 4 / GIB
    assert memory["components_gib"]["reference_model"] == pytest.approx(reference, abs=0.01)
    assert set(COMPONENTS) <= set(memory["components_gib"])
    assert sum(memory["components_gib"].values()) >= memory["per_gpu_peak_gib"] - 0.01
    assert plan["time"]["step_seconds"] > 0


def test_a_fast_path_plan_says_it_is_analytic(capsys):
    code, out, err = run_cli(capsys, "plan", "--model", "7b", "--json")
    assert code == 0, err
    model = json.loads(out)["model"]
    assert model["estimate_path"] == "analytic" and model["trace_seconds"] is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--fit"], "--fit is not available for starcoder2: it has no analytic model"),
        (["--method", "ppo"], "ppo's rollouts cannot be traced"),
        (["--tuning", "qlora"], "4-bit (bitsandbytes) layers cannot run on fake tensors"),
        (["--num-gpus", "2", "--sharding", "zero3"], "--sharding zero3 cannot be traced"),
    ],
)
def test_what_the_general_path_cannot_trace_is_one_line(tmp_path, capsys, argv, message):
    code, out, err = run_cli(capsys, "plan", "--model", write(tmp_path, STARCODER2), *argv)
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("model_type", "kind"),
    [("bert", "encoder-only"), ("ernie", "encoder-only"), ("t5", "encoder-decoder"),
     ("bart", "encoder-decoder")],
)  # fmt: skip
def test_encoders_are_refused_with_the_reason(model_type, kind):
    with pytest.raises(InputError) as error:
        spec_from_config({"model_type": model_type, "hidden_size": 64}, model_type, "config")
    assert f"'{model_type}' is an {kind} model; the TRL trainers the advisor runs train " in str(
        error.value
    )


# OLMoE (not in planner.architectures): 8 routed experts, 2 per token, no shared expert.
OLMOE: dict = {"model_type": "olmoe", "hidden_size": 512, "intermediate_size": 256,
               "num_hidden_layers": 2, "num_attention_heads": 8, "vocab_size": 4096,
               "num_experts": 8, "num_experts_per_tok": 2}  # fmt: skip


def test_a_mixture_of_experts_model_counts_all_experts_for_memory_and_the_active_for_time(
    tmp_path, capsys
):
    path = write(tmp_path, OLMOE)
    argv = ["plan", "--model", path, "--method", "sft", "--tuning", "full", "--seq-len", "64"]
    code, _, err = run_cli(capsys, *argv)  # fp32 weights: grouped_mm takes bf16 only
    assert code == 2 and "grouped_mm, which takes bf16 weights only" in err

    plan = json.loads(run_cli(capsys, *argv, "--precision", "bf16-true", "--json")[1])
    assert plan["model"]["estimate_path"] == "traced"
    assert plan["model"]["params"] == meta_count(OLMOE)
    # Each layer's 8 experts are gate, up and down of h x I; a token runs 2 of them.
    h, i, layers = OLMOE["hidden_size"], OLMOE["intermediate_size"], OLMOE["num_hidden_layers"]
    active = plan["model"]["params"] - layers * (8 - 2) * 3 * h * i
    note = f"time counts the {active:,} of {plan['model']['params']:,} parameters a token runs"
    assert any(note in n for n in plan["model"]["notes"])
    assert plan["memory"]["components_gib"]["weights"] > 0


def test_a_vision_language_model_is_planned_on_its_language_tower(tmp_path, capsys):
    llava = {
        "model_type": "llava",
        "text_config": STARCODER2,
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": 64,
                          "intermediate_size": 128, "num_attention_heads": 4,
                          "num_hidden_layers": 2, "image_size": 32, "patch_size": 8},
    }  # fmt: skip
    path = write(tmp_path, llava)
    code, out, err = run_cli(capsys, "plan", "--model", path, "--method", "sft", "--seq-len", "128")
    assert code == 0, err
    text = " ".join(out.replace("│", " ").split())
    assert "General path: traced step (" in text and "starcoder2 has no analytic model" in text
    assert "llava is a vision-language model: planned on its language tower (starcoder2)" in text
    # What is left out, counted as transformers builds it: the whole model less its text model.
    with torch.device("meta"):
        whole = AutoModelForImageTextToText.from_config(
            AutoConfig.for_model("llava", **{k: v for k, v in llava.items() if k != "model_type"})
        )
    vision = sum(p.numel() for p in whole.parameters()) - meta_count(STARCODER2)
    assert f"vision encoder and projector ({vision:,} parameters) are left out" in text

    spec = spec_from_config(llava, "llava", "config")
    assert spec.params == meta_count(STARCODER2) and spec.estimate_path == "traced"


def test_a_vision_language_model_whose_tower_has_a_record_stays_analytic():
    config = {"model_type": "gemma3", "vision_config": {"hidden_size": 64}}  # no text_config
    spec = spec_from_config(config, "gemma3", "config")
    assert spec.model_type == "gemma3_text" and spec.estimate_path == "analytic"
    assert spec.notes[0].startswith("gemma3 is a vision-language model: planned on its language")


def test_a_vision_language_model_without_a_causal_text_model_is_refused():
    config = {"model_type": "qwen2_vl", "hidden_size": 64}
    with pytest.raises(InputError, match="text model 'qwen2_vl_text' has no causal-LM class"):
        spec_from_config(config, "qwen2-vl", "config")


def test_general_path_suggests_only_what_it_can_plan():
    from planner.general import traced_suggestions
    from planner.plan import FIT_SUGGESTION, estimate

    advice = estimate(PlanRequest(model="70b", method="dpo", tuning="full")).suggestions
    assert FIT_SUGGESTION in advice and any("--sharding zero3" in s for s in advice)
    kept = traced_suggestions(advice)
    assert kept and "use LoRA (--tuning lora): no full-size gradients or optimizer states" in kept
    assert not any(flag in s for s in kept for flag in ("--fit", "--sharding", "--offload"))
    assert traced_suggestions(["it fits with 9% headroom; for more room:", FIT_SUGGESTION]) == []


@pytest.mark.slow
def test_the_general_path_agrees_with_the_analytic_path_where_both_run():
    """Qwen2 (tied embeddings, q/k/v biases) with LoRA, planned both ways: the same counts
    (peft's adapters on the real model against the formula) and time, and tensor peaks within
    the 5% the analytic model is held to against traces (full tuning's reference copy is
    checked above)."""
    config, method, tuning = QWEN2_TINY, "dpo", "lora"
    from planner.general import general_spec
    from planner.gpus import resolve_gpu
    from planner.plan import estimate_for

    gpu = resolve_gpu("a100-80gb")
    request = PlanRequest(method=method, tuning=tuning, seq_len=512, batch_size=2, grad_accum=1)
    analytic = estimate_for(spec_from_config(config, "tiny", "config"), gpu, request)
    traced = estimate_for(general_spec(config, "tiny", "config", "tiny", []), gpu, request)
    assert traced.model.estimate_path == "traced" and analytic.model.estimate_path == "analytic"
    assert traced.model.params == analytic.model.params
    assert traced.model.trainable_params == analytic.model.trainable_params
    assert traced.time.step_seconds == analytic.time.step_seconds
    peak = analytic.memory.tensor_peak_gib
    assert traced.memory.tensor_peak_gib == pytest.approx(peak, rel=0.05, abs=0.01)


def test_a_recommendation_for_a_general_path_model_skips_the_compute_check(tmp_path, capsys):
    answers = {"use_case": "knowledge_assistant", "risk": "low", "ml_maturity": "medium",
               "feedback": "pairwise_preferences", "reward_model": "none", "sft_done": True,
               "priority": "cost", "model": write(tmp_path, STARCODER2), "gpus": "1x a100-80gb"}  # fmt: skip
    path = tmp_path / "answers.json"
    path.write_text(json.dumps(answers))
    code, out, err = run_cli(capsys, "recommend", "--answers", str(path), "--json")
    assert code == 0, err
    caveats = json.loads(out)["caveats"]
    assert any("compute check skipped: starcoder2 has no analytic model" in c for c in caveats)

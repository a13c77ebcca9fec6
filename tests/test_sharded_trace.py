"""Sharded memory checked by tracing the sharding: the planner's per-rank model states under
FSDP2 against `fully_shard` traced on fake tensors with a fake process group, and under the
ZeRO stages against a real DeepSpeed run on a fake process group and DeepSpeed's own
estimators; then the plan `--fit` proposes for a 70B DPO run checked the same way."""

from __future__ import annotations

import functools

import pytest

from planner import parameters
from planner.fit import search_for
from planner.gpus import resolve_gpu
from planner.memory import model_states
from planner.models import resolve_model, spec_from_config
from planner.specs import ModelSpec, PlanRequest
from planner.trace.sharded import deepspeed_estimate, trace_deepspeed, trace_fsdp
from tests.tiny_architectures import LLAMA_TINY, QWEN2_TINY

TOLERANCE = 0.05


def tiny(architecture: str = "llama") -> ModelSpec:
    config = {"llama": LLAMA_TINY, "qwen2": QWEN2_TINY}[architecture]
    return spec_from_config(config, f"{architecture}-tiny", "tests")


@functools.cache
def traced_tiny(world: int, depths: tuple[int, ...] | None = None, architecture: str = "llama"):
    return trace_fsdp(tiny(architecture), fsdp_request("tiny", world), depths=depths)


def fsdp_request(model: str, world: int, nodes: int = 1) -> PlanRequest:
    return PlanRequest(
        model=model, method="sft", tuning="full", num_gpus=world, nodes=nodes, sharding="fsdp"
    )


def planner_states(spec: ModelSpec, request: PlanRequest) -> float:
    """The planner's per-rank model states: sharded weights, gradients and optimizer states."""
    states = model_states(spec, request)
    return states.weights + states.trainable_weights + states.gradients + states.optimizer


def close(ours: float, theirs: float) -> bool:
    return abs(ours - theirs) <= TOLERANCE * theirs


@pytest.mark.parametrize(("architecture", "world"), [("llama", 2), ("qwen2", 4)])
def test_fsdp_states_per_rank_match_the_traced_fully_shard(architecture, world):
    """Llama-style (untied head) on 2 ranks, Qwen2-style (tied embeddings) on 4: the sharded
    states and the most gathered 16-bit buffers live at once."""
    spec = tiny(architecture)
    traced = traced_tiny(world, architecture=architecture)
    assert traced.traced_layers == [spec.num_layers]
    request = fsdp_request("tiny", world)
    ours = planner_states(spec, request)
    assert close(ours, traced.model_states), (ours, traced)
    # fp32 shards of parameters and gradients, two fp32 AdamW moments: 4 + 4 + 8 bytes / G.
    assert close(traced.sharded_params, 4 * parameters.count_params(spec) / world)
    assert close(model_states(spec, request).gathered, traced.gathered), traced


def test_fsdp_states_are_a_line_in_the_layer_count():
    """Deep models are traced at two depths: the line through them meets the whole model,
    and the planner's states on 4 ranks."""
    spec = tiny()
    line, whole = traced_tiny(4, (1, 2)), traced_tiny(4)
    assert "traced at 1 and 2 layers" in line.line
    assert abs(line.model_states - whole.model_states) <= 64 * spec.num_layers  # padding only
    assert close(planner_states(spec, fsdp_request("tiny", 4)), whole.model_states)


@pytest.mark.slow
@pytest.mark.parametrize(("sharding", "world"), [("zero3", 2)])
def test_zero_states_per_rank_match_a_traced_deepspeed_run(sharding, world):
    """A real DeepSpeed run (CPU tensors, fake process group): the states between steps and
    their high point during the step (the flattened 16-bit partition and its fp32 copy).
    ZeRO-3 here, where DeepSpeed's estimator (18P/G) falls between the two (16P/G resident,
    22P/G at the step); ZeRO-2 traces the same way (2P + 14P/G and 2P + 20P/G at G = 2)."""
    pytest.importorskip("deepspeed", reason="the ZeRO trace runs the optional DeepSpeed extra")
    spec = spec_from_config({**LLAMA_TINY, "num_hidden_layers": 1}, "llama-tiny-1", "tests")
    request = PlanRequest(
        model="llama-tiny-1", method="sft", tuning="full", num_gpus=world, sharding=sharding
    )
    import torch

    linear = torch.nn.functional.linear
    traced = trace_deepspeed(spec, request)
    assert torch.nn.functional.linear is linear  # ZeRO-3's own linear does not outlive the trace
    states = model_states(spec, request)
    resident = states.weights + states.optimizer + (states.gradients if sharding == "zero3" else 0)
    assert close(resident, traced.resident), (resident, traced)
    step = states.weights + states.gradients + states.optimizer + states.step_transient
    assert close(step, traced.step_high), (step, traced)


@pytest.mark.parametrize(
    ("model", "sharding", "world", "nodes", "tuning"),
    [
        ("8b", "zero2", 8, 2, "full"),
        ("70b", "zero2", 8, 4, "full"),
        ("8b", "zero3", 8, 1, "lora"),
        ("70b", "zero3", 8, 1, "lora"),
    ],
)
def test_zero_states_per_rank_agree_with_deepspeeds_estimators(
    model, sharding, world, nodes, tuning
):
    """DeepSpeed's estimators count 16-bit parameters, 16-bit and fp32 gradients, fp32 master
    weights and moments (2 + 2 + 4 + 4 + 8 bytes, the 16-bit parameters replicated under
    ZeRO-2): the planner's states plus the fp32 gradient copy its step makes. A frozen LoRA
    base is its 16-bit parameters alone. Fully trained ZeRO-3 is checked against the traced
    run instead: its estimator's 18P/G leaves out the 16-bit gradient partition that stage 3
    keeps (stage3.py `grad_partitions_flat_buffer`)."""
    pytest.importorskip("deepspeed", reason="the check calls the optional DeepSpeed extra")
    spec = resolve_model(model)
    request = PlanRequest(
        model=model, method="sft", tuning=tuning, num_gpus=world, nodes=nodes, sharding=sharding
    )
    estimate = deepspeed_estimate(spec, request)
    fp32_copy = 4 * parameters.trainable_params(spec, request) / request.world_size
    ours = planner_states(spec, request) + min(fp32_copy, 4e9)
    assert close(ours, estimate.states), (ours, estimate)


def test_fit_for_70b_dpo_proposes_a_plan_whose_states_agree_with_the_traced_sharding():
    """`advisor plan --model 70b --method dpo --fit --gpu h100-80gb`: the proposed plan's
    per-rank model states against the traced FSDP2 sharding, or DeepSpeed's estimator."""
    spec, gpu = resolve_model("70b"), resolve_gpu("h100-80gb")
    best = search_for(spec, gpu, PlanRequest(model="70b", method="dpo", gpu="h100-80gb"))[0]
    request = best.request
    assert request.world_size > 1
    ours = planner_states(spec, request)
    if request.sharding.value == "fsdp":
        theirs = trace_fsdp(spec, request).model_states
    else:
        pytest.importorskip("deepspeed", reason="the check calls the optional DeepSpeed extra")
        theirs = deepspeed_estimate(spec, request).states
        ours += 4 * parameters.trainable_params(spec, request) / request.world_size
    assert close(ours, theirs), (request.sharding, request.world_size, ours, theirs)

"""The analytic memory model: what each method keeps resident, by tuning, precision, sharding."""

from __future__ import annotations

import pytest

from planner import parameters
from planner.errors import InputError
from planner.fit import search
from planner.memory import GIB, activations, estimate_memory, model_states
from planner.models import resolve_model
from planner.plan import estimate
from planner.specs import PlanRequest

LLAMA7 = resolve_model("llama-2-7b")
P = 6_738_415_616


def mem(**settings):
    return estimate_memory(resolve_model(settings.get("model", "7b")), PlanRequest(**settings))


def states(**settings):
    return model_states(LLAMA7, PlanRequest(**settings))


def test_full_bf16_true_adamw_holds_weights_grads_and_two_bf16_states():
    s = states(method="sft", tuning="full", precision="bf16-true")
    assert (s.weights, s.gradients, s.optimizer) == (2 * P, 2 * P, 4 * P)


def test_full_bf16_mixed_is_trls_default_fp32_weights_grads_and_moments():
    """TRL loads float32 unless dtype is given and autocasts with bf16: 4 + 4 + 8 bytes."""
    s = states(method="sft", tuning="full")
    assert (s.weights, s.gradients, s.optimizer) == (4 * P, 4 * P, 8 * P)
    assert states(method="sft", tuning="full", precision="bf16") == s  # alias of bf16-mixed


@pytest.mark.parametrize("stage", ["zero1", "zero2", "zero3"])
def test_deepspeed_counts_twelve_optimizer_bytes_per_param_per_shard(stage):
    """ZeRO: 16-bit weights and gradients, fp32 master + fp32 moments = 12 B (ZeRO paper)."""
    for precision in ("bf16-mixed", "bf16-true"):
        s = states(method="sft", tuning="full", num_gpus=8, sharding=stage, precision=precision)
        assert s.optimizer == pytest.approx(12 * P / 8)
        assert s.gradients == pytest.approx(2 * P / (8 if stage != "zero1" else 1))
        assert s.weights == pytest.approx(2 * P / (8 if stage == "zero3" else 1))


def test_deepspeed_offload_moves_the_twelve_bytes_to_the_cpu():
    m = mem(method="sft", tuning="full", num_gpus=8, sharding="zero3", offload="optimizer")
    assert m.components["optimizer"] == 0
    assert m.cpu_offload >= 12 * P / 8


def test_ppo_value_model_is_sharded_and_offloaded_with_the_policy():
    value = parameters.value_model_params(LLAMA7)
    sharded = mem(method="ppo", tuning="full", num_gpus=8, sharding="zero3")
    assert sharded.components["value_model"] == pytest.approx((2 + 2 + 12) * value / 8)
    offloaded = mem(
        method="ppo", tuning="full", num_gpus=8, sharding="zero3", offload="optimizer+params"
    )
    assert offloaded.components["value_model"] == 0
    on_gpu = mem(method="ppo", tuning="full", num_gpus=8, sharding="zero3")
    assert offloaded.cpu_offload > on_gpu.cpu_offload + 12 * value / 8


def test_fp32_training_holds_sixteen_bytes_per_param():
    s = states(method="sft", tuning="full", precision="fp32")
    assert s.weights + s.gradients + s.optimizer == 16 * P


def test_fused_adamw_step_allocates_no_state_sized_buffer():
    m = mem(method="sft", tuning="full", seq_len=512)
    assert m.components["optimizer"] == 8 * P
    assert m.phases["optimizer step"] == 4 * P + 4 * P + 8 * P


def test_full_dpo_loads_a_frozen_reference_copy():
    m = mem(method="dpo", tuning="full")
    assert m.components["reference_model"] == 4 * P  # TRL loads it with the policy's dtype
    assert "reference_model" in m.live_at_peak
    true = mem(method="dpo", tuning="full", precision="bf16-true")
    assert true.components["reference_model"] == 2 * P


def test_lora_dpo_uses_no_second_model_copy():
    m = mem(method="dpo", tuning="lora")
    assert m.components["reference_model"] == 0
    assert m.components["weights"] == 2 * P


def test_precomputed_reference_log_probs_drop_the_reference():
    m = mem(method="dpo", tuning="full", precompute_ref_log_probs=True)
    assert m.components["reference_model"] == 0


def test_dpo_saves_activations_for_twice_the_rows_of_sft():
    """Per-token activations double; the 16-bit weight casts autocast keeps for backward (fp32
    weights, TRL's default) do not depend on the rows. DPO's lm_head runs under autocast and
    keeps its cast; SFT's chunked loss multiplies by the fp32 lm_head itself."""
    from planner.memory import autocast_weight_copies
    from planner.methods import loop

    sft_request = PlanRequest(method="sft", tuning="full", grad_checkpointing=False)
    dpo_request = PlanRequest(method="dpo", tuning="full", grad_checkpointing=False)
    sft, dpo = activations(LLAMA7, sft_request), activations(LLAMA7, dpo_request)
    layer, sft_head = autocast_weight_copies(LLAMA7, sft_request, loop(sft_request))
    _, dpo_head = autocast_weight_copies(LLAMA7, dpo_request, loop(dpo_request))
    casts = LLAMA7.num_layers * layer
    assert layer > 0 and sft_head == 0 and dpo_head == 2 * LLAMA7.vocab_size * LLAMA7.hidden_size
    assert dpo.saved - casts - dpo_head == pytest.approx(2 * (sft.saved - casts))


def test_pure_bf16_keeps_no_weight_casts():
    request = PlanRequest(method="dpo", tuning="full", precision="bf16-true")
    from planner.memory import autocast_weight_copies
    from planner.methods import loop

    assert autocast_weight_copies(LLAMA7, request, loop(request)) == (0.0, 0.0)


def test_orpo_and_simpo_have_no_reference_but_kto_has_one():
    assert mem(method="orpo", tuning="full").components["reference_model"] == 0
    assert mem(method="simpo", tuning="full").components["reference_model"] == 0
    assert mem(method="kto", tuning="full").components["reference_model"] == 4 * P


def test_reward_training_has_no_vocabulary_logits():
    m = mem(method="reward", tuning="full")
    assert m.components["logits"] < 0.01 * GIB
    assert m.components["weights"] == 4 * parameters.reward_model_params(LLAMA7)


def test_ppo_holds_policy_reference_reward_and_value_models_and_a_kv_cache():
    m = mem(method="ppo", tuning="full")
    for component in ("reference_model", "reward_model", "value_model", "generation_kv_cache"):
        assert m.components[component] > 0, component
    # The value model trains: weights, gradients and AdamW states of a sequence classifier.
    assert m.components["value_model"] == 16 * parameters.value_model_params(LLAMA7)


def test_grpo_loads_a_reference_only_when_beta_is_positive():
    assert mem(method="grpo", tuning="full").components["reference_model"] == 0
    assert mem(method="grpo", tuning="full", beta=0.04).components["reference_model"] == 4 * P
    assert mem(method="rloo", tuning="full").components["reference_model"] == 4 * P


def test_grpo_kv_cache_grows_with_completion_length():
    short = mem(method="grpo", prompt_len=256, completion_len=256)
    long = mem(method="grpo", prompt_len=256, completion_len=2048)
    assert long.components["generation_kv_cache"] > 4 * short.components["generation_kv_cache"]


def test_gradient_checkpointing_keeps_only_layer_inputs():
    on = mem(method="sft", tuning="full", grad_checkpointing=True, batch_size=4)
    off = mem(method="sft", tuning="full", grad_checkpointing=False, batch_size=4)
    assert on.components["activations"] < off.components["activations"] / 4


def test_qlora_base_is_about_a_quarter_of_bf16():
    lora = mem(method="dpo", tuning="lora")
    qlora = mem(method="dpo", tuning="qlora")
    assert qlora.components["weights"] < 0.35 * lora.components["weights"]


def test_zero3_shards_weights_gradients_and_optimizer_over_gpus():
    one = states(method="sft", tuning="full", precision="fp32")
    eight = states(method="sft", tuning="full", precision="fp32", num_gpus=8, sharding="zero3")
    assert eight.optimizer == pytest.approx(one.optimizer / 8)
    assert eight.gradients == pytest.approx(one.gradients / 8)
    assert eight.weights == pytest.approx(one.weights / 8)


def test_ddp_buckets_double_the_gradients():
    single = mem(method="sft", tuning="full")
    ddp = mem(method="sft", tuning="full", num_gpus=2, sharding="ddp")
    assert ddp.components["gradients"] == 2 * single.components["gradients"]


def test_optimizer_offload_moves_states_to_the_cpu():
    m = mem(method="sft", tuning="full", num_gpus=2, sharding="zero2", offload="optimizer")
    assert m.components["optimizer"] == 0
    assert m.cpu_offload > 0


def test_offload_without_sharding_is_refused():
    with pytest.raises(InputError, match="offload"):
        mem(method="sft", tuning="full", offload="optimizer")


def test_8bit_adam_states_take_about_two_bytes_per_param():
    m = mem(method="sft", tuning="full", optimizer="adamw8bit")
    assert m.components["optimizer"] == pytest.approx(2 * P, rel=0.02)


def test_eager_attention_adds_the_s_squared_scores():
    sdpa = mem(method="sft", tuning="full", grad_checkpointing=False, seq_len=4096)
    eager = mem(
        method="sft", tuning="full", grad_checkpointing=False, seq_len=4096, attention="eager"
    )
    assert eager.components["activations"] > 2 * sdpa.components["activations"]


def test_full_tuning_peaks_in_the_optimizer_step_or_backward():
    m = mem(method="sft", tuning="full", seq_len=512)
    assert m.peak_phase in ("optimizer step", "forward / backward")
    assert m.peak >= m.tensor_peak > 8 * P  # bf16 weights + grads + two bf16 AdamW states


def test_ppo_on_a_7b_model_does_not_fit_one_24gb_card_in_full():
    plan = estimate(PlanRequest(model="7b", method="ppo", tuning="full", gpu="rtx-4090"))
    assert not plan.fits
    assert any("LoRA" in s for s in plan.suggestions)


def test_fit_search_finds_a_way_to_run_full_dpo_on_24gb():
    request = PlanRequest(model="7b", method="dpo", tuning="full", gpu="rtx-4090")
    assert not estimate(request).fits
    plans = search(request)
    assert plans and all(p.fits for p in plans)
    best = plans[0].request
    # Something had to give: more GPUs, offloaded states, or no reference copy.
    assert best.world_size > 1 or best.offload != "none" or best.precompute_ref_log_probs


def test_fit_holds_the_effective_batch():
    request = PlanRequest(
        model="7b", method="dpo", tuning="lora", gpu="l4", batch_size=4, grad_accum=4
    )
    for plan in search(request):
        r = plan.request
        assert r.batch_size * r.grad_accum * r.world_size == 16


def test_zero_offload_keeps_fp32_gradient_partitions_on_the_cpu():
    """ZeRO-Offload: the fp32 master weights and Adam moments (12 B) and an fp32 gradient
    partition (4 B) per trained parameter, 1/g each, on the CPU; the GPU keeps bf16 weights."""
    from planner.memory import estimate_memory
    from planner.parameters import model_params

    request = PlanRequest(
        method="sft",
        tuning="full",
        num_gpus=8,
        sharding="zero2",
        offload="optimizer",
        precision="bf16-mixed",
    )
    params = model_params(LLAMA7, request)
    assert estimate_memory(LLAMA7, request).cpu_offload == pytest.approx(params * (12 + 4) / 8)


def test_eight_bit_adamw_states_are_not_called_bfloat16():
    from planner.precision import precision_plan

    plan = precision_plan(PlanRequest(method="dpo", tuning="full", optimizer="adamw8bit"))
    assert plan.optimizer_state_dtype.startswith("uint8")
    assert precision_plan(PlanRequest(optimizer="sgd")).optimizer_state_dtype == "none"

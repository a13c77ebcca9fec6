"""The planner-backed compute check: what cannot fit is demoted and says what would."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from advisor.cli import main
from advisor.decision.answers import Answers
from advisor.decision.compute_check import check_method
from advisor.decision.decide import decide
from planner.errors import InputError
from planner.gpu_counts import layout
from planner.specs import Method, Sharding, Tuning

PPO_CASE = {
    "use_case": "safety_critical_automation",
    "risk": "high",
    "ml_maturity": "high",
    "feedback": "pairwise_preferences",
    "reward_model": "available",
    "sft_done": True,
    "priority": "control",
}


def answers(**extra) -> Answers:
    return Answers(**{**PPO_CASE, **extra})


def test_ppo_on_7b_with_one_24gb_card_does_not_fit_as_full_tuning_and_says_what_would():
    recommendation = decide(answers(model="7b", gpus="1x rtx-4090"))
    ppo = next(c for c in recommendation.compute if c.method is Method.ppo)
    full = ppo.attempt(Tuning.full)
    assert full is not None and not full.fits
    assert full.per_gpu_peak_gib > full.capacity_gib
    assert 23 < full.capacity_gib < 25
    assert not ppo.fits
    assert "does not fit on 1× RTX-4090" in ppo.summary
    assert f"full tuning needs {full.per_gpu_peak_gib:.1f} GiB" in ppo.summary
    # What would, with the planner's numbers: full PPO (fp32 masters for policy and value
    # model, as TRL runs it) fits no 8 × 24 GB node, so adapters on more cards.
    assert any(text.startswith("LoRA on ") for text in ppo.would_take)
    assert all("GiB per GPU" in text for text in ppo.would_take)
    # And the ranking says so: PPO is demoted below the methods that fit.
    row = next(r for r in recommendation.ranking if r.method is Method.ppo)
    assert any(
        e.factor == "compute" and e.points == -8 and e.why.startswith("PPO does not fit")
        for e in row.effects
    )
    assert recommendation.method is not Method.ppo


def test_the_same_team_without_model_and_gpus_gets_ppo_first():
    assert decide(answers()).method is Method.ppo


def test_the_compute_check_is_in_the_json_contract():
    payload = json.loads(decide(answers(model="7b", gpus="1x rtx-4090")).model_dump_json())
    ppo = next(c for c in payload["compute"] if c["method"] == "ppo")
    assert ppo["fits"] is False
    assert ppo["tried"][0]["tuning"] == "full"
    assert ppo["tried"][0]["per_gpu_peak_gib"] > ppo["tried"][0]["capacity_gib"]
    assert ppo["would_take"]


def test_a_method_that_fits_only_with_lora_loses_half_a_point_and_says_why():
    check = check_method(Method.dpo, "7b", "rtx-4090", 1)
    assert check.setup is Tuning.lora
    assert [t.tuning for t in check.tried] == [Tuning.full, Tuning.lora]
    assert "does not fit on 1× RTX-4090 as full tuning" in check.summary
    assert "LoRA fits" in check.summary
    row = next(
        r for r in decide(answers(model="7b", gpus="1x rtx-4090")).ranking if r.method is Method.dpo
    )
    assert any(
        e.factor == "compute" and e.points == -0.5 and e.why.startswith("DPO does not fit")
        for e in row.effects
    )


def test_a_method_that_fits_as_full_tuning_stops_there_with_no_advice_needed():
    check = check_method(Method.sft, "1b", "a100-80gb", 1)
    assert check.setup is Tuning.full
    assert len(check.tried) == 1
    assert check.would_take == []
    assert "fits on 1× A100-80GB as full tuning" in check.summary


def test_simpo_is_credited_where_the_reference_model_is_the_constraint():
    recommendation = decide(
        answers(
            use_case="knowledge_assistant",
            risk="low",
            reward_model="none",
            priority="cost",
            model="qwen2.5-7b",
            gpus="4x a100-40gb",
        )
    )
    simpo = next(r for r in recommendation.ranking if r.method is Method.simpo)
    assert any(
        e.factor == "compute" and "the reference model is the constraint" in e.why
        for e in simpo.effects
    )
    assert recommendation.method is Method.simpo


def test_several_gpus_are_planned_with_zero3_and_whole_nodes_of_eight():
    assert layout(1) == (1, 1)
    assert layout(4) == (4, 1)
    assert layout(16) == (8, 2)
    assert layout(12) == (12, 1)
    recommendation = decide(answers(model="70b", gpus="8x h100-80gb"))
    assert all(t.sharding is Sharding.zero3 for c in recommendation.compute for t in c.tried)
    assert "--num-gpus 8" in recommendation.next_command
    assert "--sharding zero3" in recommendation.next_command


@pytest.mark.parametrize(
    ("model", "gpus"), [("7b", "1x rtx-4090"), ("8b", "1x a100-80gb"), ("70b", "8x h100-80gb")]
)
def test_the_next_command_plans_a_setup_that_fits(model, gpus):
    recommendation = decide(answers(model=model, gpus=gpus))
    argv = [*recommendation.next_command.split()[1:], "--json"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    plan = json.loads(out.getvalue())
    assert plan["fits"] is True
    assert plan["method"] == recommendation.method.value


def test_without_both_model_and_gpus_the_check_is_skipped_and_the_caveats_say_so():
    recommendation = decide(answers(model="7b"))
    assert recommendation.compute == []
    assert any("compute check skipped" in c for c in recommendation.caveats)


def test_an_unknown_gpu_is_the_users_error():
    from advisor.decision.answers import answers_from_mapping

    # Refused as the answers are read (the planner's GPU names), before anything is decided.
    with pytest.raises(InputError, match="unknown GPU 'not-a-gpu'"):
        decide(answers_from_mapping({**PPO_CASE, "model": "7b", "gpus": "1x not-a-gpu"}))


def test_an_unknown_model_is_the_users_error():
    with pytest.raises(InputError):
        decide(answers(model="not-a-model-anywhere", gpus="1x a100-80gb"))


def test_a_method_the_model_cannot_run_is_said_so_and_the_rest_are_still_ranked():
    """Granite has no sequence-classification class, so no PPO value model: the PPO check says
    why, and the recommendation goes on with the methods it can run."""
    check = check_method(Method.ppo, "granite-3.1-8b-instruct", "h100-80gb", 8)
    assert not check.fits and check.tried == []
    assert "cannot run here" in check.summary and "sequence-classification" in check.summary
    recommendation = decide(answers(model="granite-3.1-8b-instruct", gpus="8x h100-80gb"))
    assert recommendation.method is not Method.ppo

"""Reasons as data: the engine's ranking holds effects as records, its caveats and its case
against a chosen method are decided from them (points, methods), and only the views write
them as sentences."""

from __future__ import annotations

import ast
from pathlib import Path

from hypothesis import given

from advisor.decision.answers import Answers, Feedback, Level, Priority, RewardModel, UseCase
from advisor.decision.decide import decide
from advisor.decision.guidance import PPO_GOVERNANCE, caveats
from advisor.decision.method_choice import override
from advisor.decision.names import label
from advisor.decision.rules import CANDIDATES, ScoreEffect, strongest_reasons
from advisor.views.reasons import (
    override_warning,
    rationale,
    recommendation_json,
    sentence,
    why_not_runner_up,
)
from planner import recipes
from planner.specs import Method
from tests.answer_space import answers_strategy

ROOT = Path(__file__).resolve().parent.parent
CUSTOMER = Answers(
    use_case=UseCase.customer_automation,
    risk=Level.high,
    ml_maturity=Level.medium,
    feedback=Feedback.pairwise_preferences,
    reward_model=RewardModel.can_build,
    sft_done=True,
    priority=Priority.quality,
)


def test_a_staged_path_through_ppo_brings_ppos_caveats_whatever_its_words():
    answers = CUSTOMER
    in_play = [Method.dpo, Method.kto, Method.sft]  # PPO not among the top three
    without = caveats(answers, in_play, [])
    staged = caveats(answers, in_play, [Method.dpo, Method.ppo, Method.rloo])
    assert PPO_GOVERNANCE not in without
    assert recipes.first_knobs(Method.ppo) not in without
    assert PPO_GOVERNANCE in staged
    assert recipes.first_knobs(Method.ppo) in staged


def test_the_engine_stages_ppo_after_dpo_where_control_matters_and_says_so():
    recommendation = decide(CUSTOMER)
    assert recommendation.method is Method.dpo
    assert recommendation.hybrid_stages == [Method.dpo, Method.ppo, Method.rloo]
    assert recommendation.hybrid_path and recommendation.hybrid_path.startswith("start with DPO")
    assert PPO_GOVERNANCE in recommendation.caveats


@given(answers_strategy)
def test_caveats_and_the_hybrid_path_follow_the_staged_methods(answers):
    recommendation = decide(answers)
    top3 = [row.method for row in recommendation.ranking[:3]]
    staged = recommendation.hybrid_stages
    assert (recommendation.hybrid_path is None) == (not staged)
    assert (PPO_GOVERNANCE in recommendation.caveats) == (Method.ppo in top3 + staged)
    if staged:
        assert staged[0] is Method.dpo or staged[0] is recommendation.method


@given(answers_strategy)
def test_the_case_against_a_method_is_its_most_negative_effects(answers):
    recommendation = decide(answers)
    assert override(recommendation, recommendation.method) is None
    for row in recommendation.ranking[1:]:
        case = override(recommendation, row.method)
        negatives = sorted(e.points for e in row.effects if e.points < 0)[:2]
        assert [e.points for e in case.against] == negatives
        assert all(e in row.effects for e in case.against)
        assert case.winner_score - case.score == recommendation.ranking[0].score - row.score
        warning = override_warning(recommendation, row.method)
        assert all(sentence(e) in warning for e in case.against)


def test_strongest_reasons_keeps_the_largest_moves_in_listed_order():
    effects = [
        ScoreEffect(factor="a", points=1, why="x"),
        ScoreEffect(factor="b", points=-8, why="y"),
        ScoreEffect(factor="c", points=0.5, why="z"),
        ScoreEffect(factor="d", points=3, why="w", source="a paper"),
    ]
    assert [e.factor for e in strongest_reasons(effects, 2)] == ["b", "d"]
    assert sentence(effects[1]) == "b → -8: y"
    assert sentence(effects[3]) == "d → +3: w"


def test_every_method_is_ranked_with_effects_and_no_output_holds_a_rendered_reason():
    recommendation = decide(CUSTOMER)
    assert sorted(r.method for r in recommendation.ranking) == sorted(CANDIDATES)
    assert all(row.effects for row in recommendation.ranking)
    # The 'factor → points: why' sentences are the views' to write, not the engine's.
    assert " → " not in recommendation.model_dump_json()


def test_the_decision_package_neither_renders_reasons_nor_parses_them():
    for path in sorted((ROOT / "advisor" / "decision").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        names |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        assert not {"sentence", "reason_points", "reasons"} & names, path.name
        assert "→" not in path.read_text(encoding="utf-8"), path.name


@given(answers_strategy)
def test_the_runner_up_case_and_rationale_are_rendered_from_the_gaps(answers):
    """The engine gives the runner-up's gaps as numbers that add up from the effects; the
    view's sentence and the JSON's `rationale` / `why_not_runner_up` are written from them."""
    rec = decide(answers, check_compute=False)
    top, second = rec.ranking[0], rec.ranking[1]
    points = {}
    for row in (top, second):
        for effect in row.effects:
            key = (row.method, effect.factor)
            points[key] = points.get(key, 0.0) + effect.points
    for gap in rec.runner_up_gaps:
        assert gap.winner == points.get((top.method, gap.factor), 0.0)
        assert gap.runner_up == points.get((second.method, gap.factor), 0.0)
        assert gap.winner > gap.runner_up
    payload = recommendation_json(rec)
    assert payload["why_not_runner_up"] == why_not_runner_up(rec)
    for gap in rec.runner_up_gaps:
        assert (
            f"{gap.factor} ({gap.runner_up:+g} vs {gap.winner:+g})" in payload["why_not_runner_up"]
        )
    assert payload["rationale"] == rationale(rec)
    assert payload["rationale"][0].startswith(f"{label(top.method)} ranks first")
    assert list(payload)[:6] == [
        "method",
        "ranking",
        "rationale",
        "caveats",
        "confidence",
        "why_not_runner_up",
    ]

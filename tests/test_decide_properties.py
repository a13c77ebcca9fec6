"""The decision logic's directions, over every combination of interview answers."""

from __future__ import annotations

import functools

from hypothesis import given

from advisor.decision.answers import (
    LEVEL_ORDER,
    Answers,
    Feedback,
    Level,
    Priority,
    RewardModel,
)
from advisor.decision.decide import Recommendation, decide, rank
from advisor.decision.rules import (
    CANDIDATES,
    DPO_DEFAULT_USE_CASES,
    PREFERENCE_METHODS,
    effects,
    score,
)
from planner.specs import Method
from tests.answer_space import answers_strategy, every_answers


@functools.cache
def ppo_score(answers: Answers) -> float:
    return score(effects(answers)[Method.ppo])


def top(answers: Answers) -> Method:
    return rank(effects(answers))[0].method


@given(answers_strategy)
def test_low_ml_maturity_never_puts_ppo_first(answers):
    low = answers.model_copy(update={"ml_maturity": Level.low})
    assert decide(low).method is not Method.ppo


@given(answers_strategy)
def test_ppo_is_never_first_without_a_reward_model_or_the_means_to_build_one(answers):
    none = answers.model_copy(update={"reward_model": RewardModel.none})
    assert decide(none).method is not Method.ppo


@given(answers_strategy)
def test_demonstrations_only_never_puts_a_preference_method_first(answers):
    demos = answers.model_copy(update={"feedback": Feedback.demonstrations_only})
    assert decide(demos).method not in PREFERENCE_METHODS


@given(answers_strategy)
def test_raising_risk_never_lowers_ppo_score(answers):
    scores = [ppo_score(answers.model_copy(update={"risk": level})) for level in LEVEL_ORDER]
    assert scores == sorted(scores)


@given(answers_strategy)
def test_raising_ml_maturity_never_lowers_ppo_score(answers):
    scores = [ppo_score(answers.model_copy(update={"ml_maturity": lv})) for lv in LEVEL_ORDER]
    assert scores == sorted(scores)


@given(answers_strategy)
def test_making_control_the_priority_never_lowers_ppo_score(answers):
    control = answers.model_copy(update={"priority": Priority.control})
    assert ppo_score(control) >= ppo_score(answers)


@given(answers_strategy)
def test_every_score_is_the_sum_of_the_points_of_its_effects(answers):
    for row in decide(answers).ranking:
        assert row.effects
        assert round(sum(e.points for e in row.effects), 2) == row.score
        assert all(e.factor and e.why for e in row.effects)


@given(answers_strategy)
def test_ranking_lists_every_candidate_once_best_first(answers):
    recommendation = decide(answers)
    assert [r.method for r in recommendation.ranking].count(recommendation.method) == 1
    assert sorted(r.method for r in recommendation.ranking) == sorted(CANDIDATES)
    scores = [r.score for r in recommendation.ranking]
    assert scores == sorted(scores, reverse=True)
    assert recommendation.method is recommendation.ranking[0].method


@given(answers_strategy)
def test_the_recommendation_round_trips_through_json(answers):
    recommendation = decide(answers)
    assert Recommendation.model_validate_json(recommendation.model_dump_json()) == recommendation


def test_the_directions_hold_for_every_one_of_the_answer_combinations():
    """All 11,880 combinations, exhaustively: the same rules, plus PPO's preconditions."""
    for answers in every_answers():
        first = top(answers)
        if answers.ml_maturity is Level.low or answers.reward_model is RewardModel.none:
            assert first is not Method.ppo, answers
        if answers.feedback is Feedback.demonstrations_only:
            assert first is Method.sft, answers
        if first is Method.ppo:
            # PPO leads only for a mature team, with a reward model in reach, on a case
            # where explicit reward optimisation matters (the seed's three conditions).
            assert answers.ml_maturity is Level.high, answers
            assert answers.use_case not in DPO_DEFAULT_USE_CASES, answers
            assert answers.reward_model is not RewardModel.none, answers
        if answers.risk is not Level.high:
            raised = answers.model_copy(
                update={"risk": LEVEL_ORDER[LEVEL_ORDER.index(answers.risk) + 1]}
            )
            assert ppo_score(raised) >= ppo_score(answers), answers
        if answers.ml_maturity is not Level.high:
            index = LEVEL_ORDER.index(answers.ml_maturity)
            raised = answers.model_copy(update={"ml_maturity": LEVEL_ORDER[index + 1]})
            assert ppo_score(raised) >= ppo_score(answers), answers
        control = answers.model_copy(update={"priority": Priority.control})
        assert ppo_score(control) >= ppo_score(answers), answers


def test_dpo_is_first_for_the_seeds_default_use_cases_with_pairs_and_a_growing_team():
    """The seed's default: support, knowledge, summarization, search, workflow with pairs."""
    for answers in every_answers():
        if (
            answers.use_case in DPO_DEFAULT_USE_CASES
            and answers.feedback is Feedback.pairwise_preferences
            and answers.ml_maturity is not Level.high
            and answers.sft_done
        ):
            assert top(answers) is Method.dpo, answers

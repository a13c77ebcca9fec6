"""The decision engine: interview answers in, a ranked and explained recommendation out.

`decide` scores every candidate with the rules in `rules`, asks the planner whether
each fits the team's GPUs when the answers name a model and GPUs, and assembles what a review
board reads. Pure Python: no Textual, no Rich; the CLI, the wizard and the report call it.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from advisor.decision.answers import Answers, Feedback, Level, Priority, RewardModel, UseCase
from advisor.decision.compute_check import ComputeCheck
from advisor.decision.guidance import caveats, evaluation_plan
from advisor.decision.rules import (
    CANDIDATES,
    CONTROL_USE_CASES,
    PREFERENCE_METHODS,
    Effect,
    ScoreEffect,
    compute_effects,
    effects,
    label,
    score,
)
from advisor.decision.weights import weight
from planner.gpu_counts import layout
from planner.specs import Method


class Confidence(StrEnum):
    high = "high"
    medium = "medium"
    low = "low"


class MethodScore(BaseModel):
    """One method's place in the ranking: its score and the effects that add up to it."""

    method: Method
    score: float = Field(description="the sum of the effects' points")
    effects: list[ScoreEffect] = Field(description="each answer's effect, in the rules' order")


class FactorGap(BaseModel):
    """A factor on which the runner-up scored below the winner: the points each got from it."""

    factor: str
    runner_up: float
    winner: float


class Recommendation(BaseModel):
    """The engine's answer: the `recommend --json` contract (method, ranking, rationale, caveats) and more."""

    method: Method = Field(description="the top of the ranking")
    ranking: list[MethodScore]
    caveats: list[str]
    confidence: Confidence = Field(description="from the margin between the top two scores")
    runner_up_gaps: list[FactorGap] = Field(
        description="the factors where the runner-up fell furthest behind the winner (up to 3)"
    )
    hybrid_path: str | None = Field(default=None, description="a staged path, where one fits")
    hybrid_stages: list[Method] = Field(
        default_factory=list,
        description="the staged path's methods: the one to start with, then the one(s) to "
        "move to (PPO, with RLOO as the alternative); empty where there is no staged path",
    )
    notes: list[str] = Field(
        default_factory=list, description="what to do before or beside the chosen method"
    )
    evaluation_plan: list[str]
    next_command: str = Field(description="a ready `advisor plan` line for the chosen method")
    compute: list[ComputeCheck] = Field(
        default_factory=list, description="the planner's verdicts, when model and gpus are given"
    )
    answers: Answers


def confidence(margin: float) -> Confidence:
    """High when the winner leads by a clear gap, low when the top two are close."""
    if margin >= weight("confidence", "high_margin"):
        return Confidence.high
    if margin >= weight("confidence", "medium_margin"):
        return Confidence.medium
    return Confidence.low


def rank(table: dict[Method, list[Effect]]) -> list[MethodScore]:
    """Methods by score, best first; ties go to the simpler method (CANDIDATES' order)."""
    order = {m: i for i, m in enumerate(CANDIDATES)}
    ranked = sorted(table, key=lambda m: (-score(table[m]), order[m]))
    return [
        MethodScore(method=m, score=score(table[m]), effects=[e.record() for e in table[m]])
        for m in ranked
    ]


def decide(answers: Answers, *, check_compute: bool = True) -> Recommendation:
    """Rank the candidates for these answers, consulting the planner when model and gpus are set."""
    table = effects(answers)
    skipped: list[str] = []
    checks: dict[Method, ComputeCheck] = {}
    gpus = answers.parsed_gpus()
    if check_compute and answers.model and gpus:
        checks = run_compute_checks(answers.model, *gpus, skipped)
        for effect in compute_effects(checks):
            table[effect.method].append(effect)
    elif answers.model or gpus:
        skipped.append("compute check skipped: it needs both `model` and `gpus` in the answers")
    ranking = rank(table)
    top, runner_up = ranking[0], ranking[1]
    stages = hybrid_stages(answers, top.method)
    hybrid = hybrid_path(answers, stages)
    return Recommendation(
        method=top.method,
        ranking=ranking,
        caveats=caveats(answers, [r.method for r in ranking[:3]], stages) + skipped,
        confidence=confidence(top.score - runner_up.score),
        runner_up_gaps=runner_up_gaps(table, top.method, runner_up.method),
        hybrid_path=hybrid,
        hybrid_stages=stages,
        notes=notes(answers, top.method, checks),
        evaluation_plan=evaluation_plan(answers, top.method),
        next_command=next_command(answers, top.method, checks.get(top.method)),
        compute=list(checks.values()),
        answers=answers,
    )


def run_compute_checks(
    model: str, gpu: str, count: int, skipped: list[str]
) -> dict[Method, ComputeCheck]:
    """Ask the planner about each candidate's default setup; say so if the planner is absent."""
    try:
        from planner import fit, plan  # noqa: F401  (the check needs both)
    except ImportError as error:
        skipped.append(f"compute check unavailable: the planner could not be imported ({error})")
        return {}
    from advisor.decision.compute_check import check_method
    from planner.models import resolve_model

    spec = resolve_model(model)
    if spec.estimate_path == "traced":
        skipped.append(
            f"compute check skipped: {spec.model_type} has no analytic model, so each method "
            "would need a traced step of its own (and ppo, grpo and rloo cannot be traced); "
            "plan the chosen method with `advisor plan`"
        )
        return {}
    return {m: check_method(m, model, gpu, count) for m in CANDIDATES}


def _factor_points(effect_list: list[Effect]) -> dict[str, float]:
    points: dict[str, float] = {}
    for e in effect_list:
        points[e.factor] = points.get(e.factor, 0.0) + e.points
    return points


def runner_up_gaps(
    table: dict[Method, list[Effect]], top: Method, runner_up: Method, limit: int = 3
) -> list[FactorGap]:
    """The factors where the runner-up fell furthest behind the winner, largest gap first."""
    mine, theirs = _factor_points(table[top]), _factor_points(table[runner_up])
    gaps = {k: mine.get(k, 0.0) - theirs.get(k, 0.0) for k in {*mine, *theirs}}
    worst = sorted((k for k in gaps if gaps[k] > 0), key=lambda k: (-gaps[k], k))[:limit]
    return [
        FactorGap(factor=k, runner_up=theirs.get(k, 0.0), winner=mine.get(k, 0.0)) for k in worst
    ]


def notes(answers: Answers, top: Method, checks: dict[Method, ComputeCheck]) -> list[str]:
    """What to do before or beside the chosen method: SFT first, RLAIF, the compute verdict."""
    lines = []
    if not answers.sft_done and top in PREFERENCE_METHODS - {Method.orpo}:
        lines.append(
            f"No SFT checkpoint yet: run SFT on your best answers first, then {label(top)}."
        )
    no_reward_source = (
        answers.reward_model is RewardModel.none
        and answers.feedback is not Feedback.verifiable_rewards
        and answers.use_case in CONTROL_USE_CASES
    )
    if no_reward_source or answers.feedback in (
        Feedback.demonstrations_only,
        Feedback.binary_feedback,
    ):
        lines.append(
            "RLAIF is the cheap way to more signal: have a strong model judge pairs of your "
            "model's answers against a written rubric, spot-check a sample by hand, and train "
            "DPO (or a reward model) on the result."
        )
    if top in checks:
        lines.append(f"Compute: {checks[top].summary}.")
    return lines


def hybrid_stages(answers: Answers, top: Method) -> list[Method]:
    """The staged path's methods in order, or none: an offline method now, PPO later where
    control will matter (or, where PPO leads, a DPO baseline it must beat first)."""
    if answers.feedback is Feedback.demonstrations_only or answers.reward_model is RewardModel.none:
        return []
    if top is Method.ppo:
        return [Method.dpo, Method.ppo]
    control_matters = (
        answers.use_case in CONTROL_USE_CASES
        or answers.use_case is UseCase.customer_automation
        or answers.risk is Level.high
        or answers.priority is Priority.control
    )
    if top not in (Method.dpo, Method.kto, Method.orpo, Method.simpo) or not control_matters:
        return []
    return [top, Method.ppo, Method.rloo]


def hybrid_path(answers: Answers, stages: list[Method]) -> str | None:
    """The staged path in words (`hybrid_stages` decides it), or None where there is none."""
    if not stages:
        return None
    if stages[-1] is Method.ppo:  # PPO leads: a DPO baseline it must beat comes first
        return (
            "run DPO on the same preference data first as a baseline (days, not weeks); PPO must "
            "beat it on the evaluation plan to justify its cost."
        )
    first = stages[0]
    later = "once the reward model, KL monitoring and the evaluation plan are in place"
    if answers.ml_maturity is not Level.high:
        later += " and the team has run an RL loop end to end"
    return (
        f"start with {label(first)} for fast alignment; refine with PPO (or RLOO) {later}, "
        f"where the explicit reward adds control {label(first)} cannot."
    )


def next_command(answers: Answers, method: Method, check: ComputeCheck | None) -> str:
    """A ready `advisor plan` line for the chosen method (7b stands in for an unnamed model)."""
    parts = ["advisor", "plan", "--model", answers.model or "7b", "--method", method.value]
    gpus = answers.parsed_gpus()
    if gpus is None:
        return " ".join([*parts, "--fit"])
    gpu, count = gpus
    attempt = check.attempt(check.setup) if check and check.setup else None
    if attempt is not None:
        parts += ["--tuning", attempt.tuning.value]
    per_node, nodes = layout(count)
    parts += ["--gpu", gpu]
    if count > 1:
        parts += ["--num-gpus", str(per_node)]
    if nodes > 1:
        parts += ["--nodes", str(nodes)]
    if attempt is not None and attempt.sharding.value != "none":
        parts += ["--sharding", attempt.sharding.value]
    return " ".join(parts if attempt is not None else [*parts, "--fit"])

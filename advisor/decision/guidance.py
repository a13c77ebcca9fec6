"""Practical guidance beside the ranking: first knobs, caveats, and how to evaluate the result."""

from __future__ import annotations

from advisor.decision.answers import Answers, Level, UseCase
from planner import recipes
from planner.recipes import RECIPES, recipe
from planner.specs import Method

PPO_GOVERNANCE = (
    "PPO is unmaintained upstream: TRL removed PPOTrainer in 1.13.0 (it lived in "
    "trl.experimental.ppo up to 1.12.0). This project pins trl==1.12.* to keep it, so PPO "
    "runs get no upstream fixes and hold back TRL and transformers upgrades — a governance "
    "risk to record and revisit."
)
EXPERIMENTAL = {
    m: r.experimental
    for m, r in RECIPES.items()
    if r.experimental is not None and m is not Method.ppo
}
"""Methods whose trainer is outside TRL's stable API, and where it lives (the recipes'
`experimental`). PPO has its own paragraph, PPO_GOVERNANCE."""
EXPERIMENTAL_RISK = (
    ": the API can change without deprecation, so pin the TRL version "
    "(TRL_EXPERIMENTAL_SILENCE=1 quiets its warning)."
)
DATA_QUALITY = (
    "Data quality dominates, for DPO, PPO and every other method: noisy or "
    "inconsistent labels — or, for online methods, a reward with loopholes — cap what training "
    "can reach. Audit a sample by hand before training."
)


def caveats(answers: Answers, in_play: list[Method], staged: list[Method]) -> list[str]:
    """What matters in practice for the methods in play (best first) and the staged path's
    methods (`hybrid_stages`, empty where there is none)."""
    top = in_play[0]
    lines = [DATA_QUALITY, recipes.first_knobs(top)]
    if Method.ppo in staged and Method.ppo is not top:
        lines.append(recipes.first_knobs(Method.ppo))
    if Method.ppo in in_play or Method.ppo in staged:
        lines.append(PPO_GOVERNANCE)
    for method, where in EXPERIMENTAL.items():
        if method in in_play:
            lines.append(where + EXPERIMENTAL_RISK)
    if answers.risk is Level.high:
        lines.append(
            "High risk: whatever the method, red-team the aligned model and have people review "
            "sampled outputs before release."
        )
    return lines


TASK_EVALS = {
    UseCase.support_copilot: "resolution accuracy and escalation correctness on real tickets",
    UseCase.knowledge_assistant: "groundedness and hallucination rate against your sources",
    UseCase.summarization: "faithfulness and coverage against reference documents",
    UseCase.search: "answer relevance and ranking quality on logged queries",
    UseCase.workflow_assistant: "task completion rate on recorded workflows",
    UseCase.customer_automation: "policy compliance and correct hand-off on customer cases",
    UseCase.agentic_tool_use: "tool-call validity and end-to-end task success",
    UseCase.structured_reasoning: "exact-match and format validity on held-out cases",
    UseCase.math_or_code_reasoning: "pass@1 on held-out problems and unit tests",
    UseCase.safety_critical_automation: "violation rate on a red-team set and on edge cases",
    UseCase.other: "a held-out set of your own tasks, scored the way the business scores them",
}


def evaluation_plan(answers: Answers, method: Method) -> list[str]:
    """How to tell whether the aligned model is better: general, task-specific and in-training."""
    lines = [
        "Pairwise win rate against the model you start from (the SFT checkpoint, or the base "
        "model where there is none) on held-out prompts from your own traffic, "
        "judged MT-Bench / AlpacaEval / Arena-Hard style (LLM judge, both answer orders, "
        "length-controlled).",
        f"Your own task evals: {TASK_EVALS[answers.use_case]}.",
        f"During training, check that {recipe(method).training_signal}.",
        "A regression check on general skills, to catch the alignment tax.",
    ]
    if answers.risk is Level.high:
        lines.append("Safety: red-team prompts and a human sign-off on sampled outputs.")
    return lines

"""Practical guidance beside the ranking: first knobs, caveats, and how to evaluate the result."""

from __future__ import annotations

from advisor.answers import Answers, Level, UseCase
from planner.specs import Method

KNOBS = {
    Method.dpo: (
        "DPO's β is the first knob: it sets how far the policy may move from the reference "
        "(higher stays closer; lower fits the preferences harder and risks drift and lost "
        "fluency). Start at 0.1, TRL's default, and sweep 0.05–0.5."
    ),
    Method.ppo: (
        "PPO's KL coefficient is the first knob: `kl_coef` starts at 0.05 (TRL 1.12's default); "
        "too low and the policy drifts or hacks the reward, too high and it barely moves. Watch "
        "objective/kl against objective/rlhf_reward; then cliprange (0.2) and num_ppo_epochs (4)."
    ),
    Method.grpo: (
        "GRPO's first knobs: `num_generations` (8 by default; the generation batch must divide "
        "by it) and `beta` (0.0 by default, so no reference model; 0.01–0.04 if the policy drifts)."
    ),
    Method.rloo: (
        "RLOO's first knobs: `beta` (0.05 by default keeps a KL reference) and "
        "`num_generations` (2 by default; 4 gives a steadier leave-one-out baseline)."
    ),
    Method.kto: (
        "KTO's first knobs: β (0.1 by default) and `desirable_weight`/`undesirable_weight`, set "
        "so that weight × count is about balanced between thumbs-up and thumbs-down."
    ),
    Method.orpo: (
        "ORPO's first knob: β (λ in the paper, 0.1 by default) weighs the odds-ratio term "
        "against the SFT loss."
    ),
    Method.simpo: (
        "SimPO runs as `CPOConfig(loss_type='simpo', cpo_alpha=0)`; its first knobs are β "
        "(TRL's 0.1 default is low for SimPO: the paper uses about 2.0–2.5) and `simpo_gamma`, "
        "the target margin (0.5 by default)."
    ),
    Method.sft: (
        "SFT's first knobs: learning rate and epochs; small demonstration sets overfit fast."
    ),
}
"""The first hyperparameters to tune for each method, with starting values."""

PPO_GOVERNANCE = (
    "PPO is unmaintained upstream: TRL removed PPOTrainer in 1.13.0 (it lived in "
    "trl.experimental.ppo up to 1.12.0). This project pins trl==1.12.* to keep it, so PPO "
    "runs get no upstream fixes and hold back TRL and transformers upgrades — a governance "
    "risk to record and revisit."
)
EXPERIMENTAL = {
    Method.orpo: "ORPO lives in trl.experimental.orpo",
    Method.simpo: "SimPO runs through trl.experimental.cpo's CPOTrainer",
}
EXPERIMENTAL_RISK = (
    ": the API can change without deprecation, so pin the TRL version "
    "(TRL_EXPERIMENTAL_SILENCE=1 quiets its warning)."
)
DATA_QUALITY = (
    "Data quality dominates, for DPO, PPO and every other method: noisy or "
    "inconsistent labels — or, for online methods, a reward with loopholes — cap what training "
    "can reach. Audit a sample by hand before training."
)


def caveats(answers: Answers, in_play: list[Method], hybrid: str | None) -> list[str]:
    """What matters in practice for the methods in play (best first) and a staged path."""
    top = in_play[0]
    lines = [DATA_QUALITY, KNOBS[top]]
    if hybrid and Method.ppo is not top and "PPO" in hybrid:
        lines.append(KNOBS[Method.ppo])
    if Method.ppo in in_play or (hybrid and "PPO" in hybrid):
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

TRAINING_SIGNALS = {
    Method.dpo: "rewards/margins and rewards/accuracies rise while logps/chosen does not collapse",
    Method.kto: "the KL estimate stays small while desirable and undesirable rewards separate",
    Method.orpo: "the SFT loss falls and the log-odds ratio of chosen over rejected rises",
    Method.simpo: "reward margins approach simpo_gamma without the chosen log-probs collapsing",
    Method.ppo: "objective/rlhf_reward rises while objective/kl stays bounded",
    Method.grpo: "reward rises, reward_std stays above zero and completion lengths stay sane",
    Method.rloo: "reward rises while the KL to the reference stays bounded",
    Method.sft: "validation loss falls without the training loss diving below it",
}


def evaluation_plan(answers: Answers, method: Method) -> list[str]:
    """How to tell whether the aligned model is better: general, task-specific and in-training."""
    lines = [
        "Pairwise win rate against the model you start from (the SFT checkpoint, or the base "
        "model where there is none) on held-out prompts from your own traffic, "
        "judged MT-Bench / AlpacaEval / Arena-Hard style (LLM judge, both answer orders, "
        "length-controlled).",
        f"Your own task evals: {TASK_EVALS[answers.use_case]}.",
        f"During training, check that {TRAINING_SIGNALS[method]}.",
        "A regression check on general skills, to catch the alignment tax.",
    ]
    if answers.risk is Level.high:
        lines.append("Safety: red-team prompts and a human sign-off on sampled outputs.")
    return lines

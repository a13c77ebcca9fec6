"""The scoring rules: each interview answer's effect on each method, with the reason why.

Every method starts at zero and each answer adds or takes away points, with a sentence that
says why (published comparisons of DPO and PPO and standard practice). A method's score is the sum of its
effects, so every score can be checked by hand from its reasons. The strengths are named
(SLIGHT ... DECISIVE, RULES_OUT) so a reader weighs a rule by word, not by number. An effect
that leans on a paper carries it as its `source`; the ranking holds the effects as data
(`ScoreEffect`) and only the views turn them into sentences.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from advisor.decision.answers import Answers, Feedback, Level, Priority, RewardModel, UseCase
from advisor.decision.names import label
from advisor.decision.weights import weight
from planner.specs import Method, Tuning

if TYPE_CHECKING:
    from advisor.decision.compute_check import ComputeCheck

CANDIDATES = (
    Method.dpo,
    Method.kto,
    Method.sft,
    Method.orpo,
    Method.simpo,
    Method.grpo,
    Method.rloo,
    Method.ppo,
)
"""The methods ranked, in tie-break order: on equal scores the simpler, cheaper one wins."""

PREFERENCE_METHODS = frozenset(CANDIDATES) - {Method.sft}
"""Methods that need feedback beyond demonstrations (preferences, labels or rewards)."""

# How strongly one answer counts for or against a method (profiles/decision.toml [strength]).
SLIGHT = weight("strength", "slight")
SOME = weight("strength", "some")
CLEAR = weight("strength", "clear")
STRONG = weight("strength", "strong")
DECISIVE = weight("strength", "decisive")
RULES_OUT = weight("strength", "rules_out")
"""A missing prerequisite (no usable data, no reward, no team for it, no fit): it outweighs
the other answers, so the method can still be listed but does not lead."""

DPO_DEFAULT_USE_CASES = frozenset(
    {
        UseCase.support_copilot,
        UseCase.knowledge_assistant,
        UseCase.summarization,
        UseCase.search,
        UseCase.workflow_assistant,
    }
)
"""Where DPO is the usual default: PPO's extra control rarely pays for itself here."""

CONTROL_USE_CASES = frozenset(
    {
        UseCase.agentic_tool_use,
        UseCase.structured_reasoning,
        UseCase.safety_critical_automation,
        UseCase.math_or_code_reasoning,
    }
)
"""Where explicit reward optimisation can outperform preference learning (Xu et al. 2024)."""


def _words(value: StrEnum) -> str:
    return value.value.replace("_", " ")


# What the rules cite, for the `source` of the effects that lean on them.
RAFAILOV_2023 = "Rafailov et al. 2023, Direct Preference Optimization (arXiv:2305.18290)"
OUYANG_2022 = (
    "Ouyang et al. 2022, Training language models to follow instructions with human feedback "
    "(arXiv:2203.02155)"
)
ENTERPRISE_GUIDANCE = (
    'enterprise alignment guidance: "DPO vs PPO: Which LLM Alignment Method is Better for '
    'Enterprise AI?" (DPO the default for copilots and knowledge assistants, PPO for '
    "high-risk workflows that need explicit reward modelling)"
)
XU_2024 = (
    "Xu et al. 2024, Is DPO Superior to PPO for LLM Alignment? A Comprehensive Study "
    "(arXiv:2404.10719)"
)


class ScoreEffect(BaseModel):
    """One effect on a ranked method's score, as data: views turn it into a sentence."""

    model_config = ConfigDict(frozen=True)

    factor: str = Field(description="the answer (or `compute`) behind it, e.g. `risk = high`")
    points: float = Field(description="what it adds to the score (negative: takes away)")
    why: str = Field(description="the reason in words, as the reader sees it")
    source: str | None = Field(
        default=None, description="the work the reason cites; null where it cites none"
    )


@dataclass(frozen=True)
class Effect:
    """One answer's effect on one method's score, why, and the work it cites (if any)."""

    method: Method
    factor: str
    points: float
    why: str
    source: str | None = None

    def record(self) -> ScoreEffect:
        """The effect as the ranking carries it (the method is the ranking entry's)."""
        return ScoreEffect(factor=self.factor, points=self.points, why=self.why, source=self.source)


def strongest_reasons(effects: list[ScoreEffect], n: int = 3) -> list[ScoreEffect]:
    """The n effects that moved a score the most, in either direction, in their listed order."""
    keep = sorted(range(len(effects)), key=lambda i: -abs(effects[i].points))[:n]
    return [effects[i] for i in sorted(keep)]


Rule = Callable[[Answers], Iterator[Effect]]


def _all(methods: Iterable[Method], factor: str, points: float, why: str) -> Iterator[Effect]:
    for method in methods:
        yield Effect(method, factor, points, why.replace("{m}", label(method)))


# --- the rules, one per answer ---------------------------------------------------------------


def starting_point(a: Answers) -> Iterator[Effect]:
    """The prior: DPO is the enterprise default, PPO the premium path."""
    f = "starting point"
    yield Effect(
        Method.dpo,
        f,
        CLEAR,
        "the usual default for enterprise assistants: one offline stage on preference pairs, "
        "no reward model, predictable convergence (Rafailov et al. 2023)",
        RAFAILOV_2023,
    )
    yield Effect(
        Method.ppo,
        f,
        -SOME,
        "the premium path: reward model, value model, rollouts and KL control in one loop — "
        "more VRAM, longer training and more monitoring than DPO on the same model",
        ENTERPRISE_GUIDANCE,
    )


def feedback(a: Answers) -> Iterator[Effect]:
    """The feedback data on hand: what each method can learn from."""
    f = f"feedback = {a.feedback.value}"
    offline = (Method.dpo, Method.orpo, Method.simpo)
    online = (Method.ppo, Method.grpo, Method.rloo)
    if a.feedback is Feedback.pairwise_preferences:
        yield from _all(offline, f, STRONG, "{m} trains directly on chosen/rejected pairs")
        yield Effect(
            Method.kto,
            f,
            SOME,
            "KTO can use pairs split into desirable and undesirable answers, "
            "but throws the pairing away",
        )
        yield Effect(Method.ppo, f, SOME, "pairs train the reward model that PPO optimises")
        yield from _all(
            (Method.grpo, Method.rloo),
            f,
            SLIGHT,
            "pairs can train a reward model to score rollouts",
        )
        yield Effect(
            Method.sft, f, -SOME, "SFT would use only the chosen answers and waste the preferences"
        )
    elif a.feedback is Feedback.binary_feedback:
        yield Effect(Method.kto, f, DECISIVE, "KTO is built for unpaired thumbs-up/down labels")
        yield from _all(
            offline,
            f,
            -DECISIVE,
            "{m} needs a chosen and a rejected answer to the same prompt; thumbs are unpaired, "
            "so only prompts rated both ways could be used",
        )
        yield from _all(online, f, SLIGHT, "thumbs can train a reward classifier to score rollouts")
        yield Effect(Method.sft, f, SLIGHT, "thumbs-up answers can serve as demonstrations")
    elif a.feedback is Feedback.scalar_scores:
        yield from _all(
            online,
            f,
            CLEAR,
            "scores are a reward signal: {m} optimises them online (directly or through a "
            "reward model fit to them)",
        )
        yield from _all(
            (*offline, Method.kto),
            f,
            SOME,
            "{m} can use pairs or good/bad labels built from the scores, an offline use of them",
        )
        yield Effect(
            Method.sft, f, SLIGHT, "the best-scored answers can be distilled by SFT (best-of-n)"
        )
    elif a.feedback is Feedback.verifiable_rewards:
        yield Effect(
            Method.grpo,
            f,
            DECISIVE,
            "GRPO optimises a programmatic check (tests pass, answer matches) with "
            "group-relative advantages and no value model",
        )
        yield Effect(
            Method.rloo,
            f,
            STRONG,
            "RLOO uses the check directly too, with a leave-one-out baseline and no value model",
        )
        yield Effect(
            Method.ppo, f, SOME, "PPO can optimise the check, but adds a value model to train"
        )
        yield from _all(
            (*offline, Method.kto),
            f,
            -SOME,
            "{m} would need answers sampled and checked offline first: a weaker use of the signal",
        )
        yield Effect(Method.sft, f, SLIGHT, "answers that pass the check can be distilled by SFT")
    else:  # demonstrations only
        yield Effect(Method.sft, f, DECISIVE, "demonstrations are exactly what SFT learns from")
        yield from _all(
            (*offline, Method.kto),
            f,
            -RULES_OUT,
            "{m} needs preference pairs or good/bad labels; demonstrations give it nothing "
            "to compare",
        )
        yield from _all(
            online,
            f,
            -RULES_OUT,
            "{m} needs a reward signal and preference data to trust it; collect preferences first",
        )


def use_case(a: Answers) -> Iterator[Effect]:
    """What the model will do: where PPO's control earns its cost, and where DPO suffices."""
    f = f"use_case = {a.use_case.value}"
    case = _words(a.use_case)
    if a.use_case in DPO_DEFAULT_USE_CASES:
        yield Effect(
            Method.dpo,
            f,
            CLEAR,
            f"DPO is the usual default for {case}: one offline stage, so time-to-value is short",
            ENTERPRISE_GUIDANCE,
        )
        yield Effect(
            Method.ppo,
            f,
            -STRONG,
            f"for {case}, PPO's added training burden (reward and value models, rollouts) "
            "rarely buys enough business value",
            ENTERPRISE_GUIDANCE,
        )
        yield from _all(
            (Method.grpo, Method.rloo),
            f,
            -SLIGHT,
            f"online RL adds rollouts that {case} rarely needs",
        )
    elif a.use_case is UseCase.customer_automation:
        yield Effect(Method.dpo, f, SOME, "customer-facing automation: DPO is a sound first step")
        yield Effect(
            Method.ppo,
            f,
            SOME,
            "customer-facing automation carries policy constraints a reward model can encode",
        )
    elif a.use_case is UseCase.agentic_tool_use:
        yield Effect(
            Method.ppo,
            f,
            CLEAR,
            "multi-step tool use gains from explicit reward optimisation over whole trajectories",
        )
        yield from _all(
            (Method.grpo, Method.rloo),
            f,
            CLEAR,
            "{m} optimises rewards on sampled tool-use trajectories without a value model",
        )
    elif a.use_case is UseCase.structured_reasoning:
        yield Effect(
            Method.ppo,
            f,
            CLEAR,
            "structured reasoning is where explicit reward optimisation can beat preference pairs",
        )
        yield Effect(
            Method.grpo,
            f,
            CLEAR,
            "GRPO is the reasoning-model recipe, with better memory efficiency than PPO",
        )
        yield Effect(Method.rloo, f, SOME, "RLOO: online reward optimisation without a value model")
    elif a.use_case is UseCase.math_or_code_reasoning:
        yield Effect(
            Method.grpo,
            f,
            STRONG,
            "math and code are GRPO's home ground: checkable answers, reasoning-model recipe",
        )
        yield Effect(
            Method.rloo, f, CLEAR, "RLOO suits checkable answers as well, without a value model"
        )
        yield Effect(
            Method.ppo, f, SOME, "PPO works on reasoning tasks but carries a value model GRPO drops"
        )
    elif a.use_case is UseCase.safety_critical_automation:
        yield Effect(
            Method.ppo,
            f,
            STRONG,
            "safety-sensitive, high-stakes automation is where explicit reward optimisation "
            "and KL control earn their cost (Ouyang et al. 2022; Xu et al. 2024)",
            f"{OUYANG_2022}; {XU_2024}",
        )
        yield from _all(
            (Method.grpo, Method.rloo),
            f,
            SOME,
            "{m} optimises an explicit reward too, with fewer models than PPO",
        )


def risk(a: Answers) -> Iterator[Effect]:
    """Business risk: the higher it is, the more an explicit, auditable reward is worth."""
    f = f"risk = {a.risk.value}"
    if a.risk is Level.low:
        yield from _all(
            (Method.dpo, Method.orpo, Method.simpo),
            f,
            SLIGHT,
            "low risk: the fastest offline path is good enough",
        )
    elif a.risk is Level.medium:
        yield Effect(Method.ppo, f, SLIGHT, "medium risk: explicit reward control has some value")
    else:
        yield Effect(
            Method.ppo,
            f,
            CLEAR,
            "high risk: a reward model makes the target explicit and auditable, "
            "and the KL penalty bounds drift from the reference",
        )
        yield Effect(
            Method.rloo, f, SLIGHT, "high risk: RLOO keeps a KL reference by default (β = 0.05)"
        )
        yield from _all(
            (Method.orpo, Method.simpo),
            f,
            -SOME,
            "high risk: {m} is experimental in TRL and has a shorter track record",
        )


def ml_maturity(a: Answers) -> Iterator[Effect]:
    """ML maturity: PPO is a platform-maturity choice, DPO the resilient path."""
    f = f"ml_maturity = {a.ml_maturity.value}"
    if a.ml_maturity is Level.low:
        yield Effect(
            Method.ppo,
            f,
            -RULES_OUT,
            "PPO needs a team that already runs reward modelling, KL control and rollouts; "
            "with maturity still low it is not a first step",
        )
        yield from _all(
            (Method.grpo, Method.rloo),
            f,
            -STRONG,
            "online RL needs skills in rollout, reward and KL debugging the team is still building",
        )
        yield Effect(
            Method.dpo,
            f,
            CLEAR,
            "with ML maturity still growing, DPO is the more resilient path: PPO's results "
            "depend on tuning experience (Xu et al. 2024)",
            XU_2024,
        )
        yield from _all(
            (Method.kto, Method.sft), f, SOME, "{m} is a single supervised-style stage: easy to run"
        )
        yield from _all(
            (Method.orpo, Method.simpo),
            f,
            -SLIGHT,
            "{m} lives in trl.experimental: thinner docs, APIs that move",
        )
    elif a.ml_maturity is Level.medium:
        yield Effect(
            Method.ppo,
            f,
            -(DECISIVE + SOME),
            "PPO's reward model, value model and KL tuning are a stretch for a team still "
            "building RL practice: start with DPO",
        )
        yield from _all(
            (Method.grpo, Method.rloo),
            f,
            -SOME,
            "online RL is workable but needs rollout and reward debugging",
        )
        yield Effect(
            Method.dpo,
            f,
            SOME,
            "with ML maturity still growing, DPO gives faster operating leverage",
        )
    else:
        yield from _all(
            (Method.ppo, Method.grpo, Method.rloo),
            f,
            SOME,
            "the team can run reward models, rollouts and KL control: {m} is practical",
        )


def reward_model(a: Answers) -> Iterator[Effect]:
    """Whether a reward model exists or can be built: PPO's heaviest prerequisite."""
    f = f"reward_model = {a.reward_model.value}"
    checkable = a.feedback is Feedback.verifiable_rewards
    if a.reward_model is RewardModel.none:
        yield Effect(
            Method.ppo,
            f,
            -RULES_OUT,
            "no reward model and no means to build one: PPO has nothing to optimise",
        )
        if checkable:
            yield from _all(
                (Method.grpo, Method.rloo),
                f,
                SLIGHT,
                "{m} needs no reward model here: the programmatic check is the reward",
            )
        else:
            yield from _all(
                (Method.grpo, Method.rloo),
                f,
                -CLEAR,
                "no reward model and no programmatic check: {m} has no reward to optimise",
            )
        yield from _all(
            (Method.dpo, Method.kto, Method.orpo, Method.simpo),
            f,
            SOME,
            "{m} needs no reward model",
        )
    elif a.reward_model is RewardModel.can_build:
        yield Effect(
            Method.ppo,
            f,
            -SLIGHT,
            "the reward model must still be built and calibrated: one more stage before PPO",
        )
        if not checkable:
            yield from _all(
                (Method.grpo, Method.rloo),
                f,
                -SLIGHT,
                "the reward model {m} would score with must be built first",
            )
    else:
        yield Effect(
            Method.ppo,
            f,
            CLEAR,
            "a reward model already exists: PPO's heaviest prerequisite is met",
        )
        yield Effect(
            Method.rloo,
            f,
            CLEAR,
            "RLOO uses the existing reward model without PPO's value model, and its default "
            "KL reference guards against hacking a learned reward",
        )
        yield Effect(
            Method.grpo,
            f,
            SOME,
            "GRPO can score rollouts with the reward model (its default β = 0 keeps no KL guard)",
        )


def priority(a: Answers) -> Iterator[Effect]:
    """What the business values most: speed and cost favour offline methods, control PPO."""
    f = f"priority = {a.priority.value}"
    if a.priority is Priority.time_to_value:
        yield Effect(
            Method.dpo, f, CLEAR, "DPO is the shortest route from preference data to production"
        )
        yield from _all(
            (Method.kto, Method.orpo, Method.simpo, Method.sft),
            f,
            SOME,
            "{m} is one offline stage: quick to run",
        )
        yield Effect(
            Method.ppo,
            f,
            -CLEAR,
            "PPO usually needs more experimentation cycles (Xu et al. 2024 list what it takes)",
            XU_2024,
        )
        yield from _all((Method.grpo, Method.rloo), f, -SLIGHT, "online RL runs longer than DPO")
    elif a.priority is Priority.cost:
        yield Effect(
            Method.simpo,
            f,
            CLEAR,
            "SimPO keeps no reference model: less memory and one forward pass fewer per step",
        )
        yield Effect(
            Method.orpo, f, SOME, "ORPO keeps no reference model and merges SFT into the same stage"
        )
        yield from _all(
            (Method.dpo, Method.kto, Method.sft),
            f,
            SOME,
            "{m} is offline: far cheaper than any method that generates during training",
        )
        yield Effect(
            Method.ppo,
            f,
            -CLEAR,
            "PPO holds four models and generates rollouts: the most VRAM and GPU hours",
        )
        yield from _all(
            (Method.grpo, Method.rloo), f, -SLIGHT, "{m} generates during training: costlier"
        )
    elif a.priority is Priority.control:
        yield Effect(
            Method.ppo,
            f,
            CLEAR,
            "PPO optimises for control depth: an explicit reward, KL-bounded updates "
            "(Ouyang et al. 2022)",
            OUYANG_2022,
        )
        yield from _all(
            (Method.grpo, Method.rloo),
            f,
            SOME,
            "{m} optimises an explicit reward, so behaviour can be steered through it",
        )
    else:
        yield from _all(
            (Method.ppo, Method.grpo, Method.rloo),
            f,
            SOME,
            "online optimisation can improve beyond what the offline data shows",
        )


def sft_stage(a: Answers) -> Iterator[Effect]:
    """Whether an SFT checkpoint exists: preference methods start from one, ORPO does not."""
    f = f"sft_done = {str(a.sft_done).lower()}"
    if not a.sft_done:
        one_stage = a.priority in (Priority.time_to_value, Priority.cost)
        has_pairs = a.feedback in (Feedback.pairwise_preferences, Feedback.scalar_scores)
        offline = (Method.dpo, Method.kto, Method.simpo)
        if has_pairs and one_stage:
            yield Effect(
                Method.orpo,
                f,
                DECISIVE,
                "no SFT stage yet and one stage is wanted: ORPO folds preference learning into SFT",
            )
            yield from _all(
                offline,
                f,
                -CLEAR,
                "{m} needs an SFT checkpoint first: two stages where one is wanted",
            )
        else:
            if has_pairs:
                yield Effect(
                    Method.orpo,
                    f,
                    CLEAR,
                    "no SFT stage yet: ORPO does SFT and preference learning in one stage",
                )
            else:
                yield Effect(
                    Method.orpo,
                    f,
                    SLIGHT,
                    "no SFT stage yet: ORPO would do both in one stage, but needs pairs you lack",
                )
            yield from _all(
                offline, f, -SOME, "{m} needs an SFT checkpoint first: run SFT, then {m}"
            )
        yield from _all(
            (Method.ppo, Method.grpo, Method.rloo),
            f,
            -CLEAR,
            "online RL from a model without SFT rarely works: SFT first",
        )
        yield Effect(Method.sft, f, CLEAR, "no SFT yet: SFT is the first stage whatever follows")
    else:
        yield Effect(
            Method.orpo, f, -CLEAR, "SFT is already done: ORPO's single-stage advantage is gone"
        )
        if a.feedback is not Feedback.demonstrations_only:
            yield Effect(
                Method.sft, f, -SOME, "SFT is already done: another pass leaves the feedback unused"
            )


RULES: tuple[Rule, ...] = (
    starting_point,
    feedback,
    use_case,
    risk,
    ml_maturity,
    reward_model,
    priority,
    sft_stage,
)
"""Every rule the engine applies, in the order their reasons are listed."""


def effects(answers: Answers) -> dict[Method, list[Effect]]:
    """Each candidate's effects from the answers alone (no compute check)."""
    table: dict[Method, list[Effect]] = {m: [] for m in CANDIDATES}
    for rule in RULES:
        for effect in rule(answers):
            table[effect.method].append(effect)
    return table


def score(effect_list: Iterable[Effect]) -> float:
    """A method's score: the sum of its effects."""
    return round(sum(e.points for e in effect_list), 2)


# --- the compute check's effects -------------------------------------------------------------

COMPUTE = "compute"
NEEDS_LORA = weight("compute", "needs_lora")
NEEDS_QLORA = weight("compute", "needs_qlora")
DOES_NOT_FIT = RULES_OUT


def compute_effects(checks: dict[Method, ComputeCheck]) -> Iterator[Effect]:
    """Demote what cannot fit the team's GPUs, and credit SimPO where the reference is the limit."""
    for method, check in checks.items():
        if not check.fits:
            take = f"; would take: {check.would_take[0]}" if check.would_take else ""
            yield Effect(method, COMPUTE, -DOES_NOT_FIT, check.summary + take)
        elif check.setup is Tuning.lora:
            yield Effect(method, COMPUTE, -NEEDS_LORA, check.summary)
        elif check.setup is Tuning.qlora:
            yield Effect(method, COMPUTE, -NEEDS_QLORA, check.summary)
        else:
            yield Effect(method, COMPUTE, 0.0, check.summary)
    dpo, simpo = checks.get(Method.dpo), checks.get(Method.simpo)
    if dpo and simpo and dpo.setup is not Tuning.full and simpo.setup is Tuning.full:
        dpo_full = dpo.attempt(Tuning.full)
        simpo_full = simpo.attempt(Tuning.full)
        if dpo_full and simpo_full:
            yield Effect(
                Method.simpo,
                COMPUTE,
                STRONG,
                "the reference model is the constraint: full-tuning DPO needs "
                f"{dpo_full.per_gpu_peak_gib:.1f} GiB per GPU, SimPO (no reference model) "
                f"{simpo_full.per_gpu_peak_gib:.1f} of {simpo_full.capacity_gib:.1f} "
                "(precomputing DPO's reference log-probs is the other way round it)",
            )

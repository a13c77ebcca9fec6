"""Every interview answer the decision engine can receive: the fields and their values, a
hypothesis strategy over them, and the whole product (a few thousand combinations)."""

from __future__ import annotations

import functools
import itertools

from hypothesis import strategies as st

from advisor.decision.answers import Answers, Feedback, Level, Priority, RewardModel, UseCase

FIELDS = {
    "use_case": list(UseCase),
    "risk": list(Level),
    "ml_maturity": list(Level),
    "feedback": list(Feedback),
    "reward_model": list(RewardModel),
    "sft_done": [True, False],
    "priority": list(Priority),
}

answers_strategy = st.builds(Answers, **{k: st.sampled_from(v) for k, v in FIELDS.items()})


@functools.cache
def every_answers() -> list[Answers]:
    return [
        Answers(**dict(zip(FIELDS, combo, strict=True)))
        for combo in itertools.product(*FIELDS.values())
    ]

"""Built-in reward functions for GRPO and RLOO, in TRL's `f(completions, **kwargs)` form.

They are deliberately simple and dependency-free: a starting point and a smoke test, not a
substitute for a task's own verifier (`--reward my_module:my_reward`).
"""

from __future__ import annotations

from collections.abc import Callable

TARGET_CHARACTERS = 40


def _text(completion) -> str:
    """The completion's text, plain or conversational ([{'role', 'content'}, ...])."""
    if isinstance(completion, list):
        return " ".join(str(turn.get("content", "")) for turn in completion)
    return str(completion)


def length_reward(completions, **kwargs) -> list[float]:
    """1 at TARGET_CHARACTERS characters, falling linearly to 0 at twice that or at none."""
    return [
        max(0.0, 1.0 - abs(len(_text(c)) - TARGET_CHARACTERS) / TARGET_CHARACTERS)
        for c in completions
    ]


def distinct_words_reward(completions, **kwargs) -> list[float]:
    """The share of distinct words: penalises repetition loops."""
    scores = []
    for completion in completions:
        words = _text(completion).split()
        scores.append(len(set(words)) / len(words) if words else 0.0)
    return scores


BUILTIN: dict[str, Callable[..., list[float]]] = {
    "length": length_reward,
    "distinct_words": distinct_words_reward,
}
"""Built-in reward names (`--reward NAME`) and their functions."""

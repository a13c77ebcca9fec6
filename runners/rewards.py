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


def length_score(text: str) -> float:
    """1 at TARGET_CHARACTERS characters, 1/(1 + |n - target| / target) elsewhere: smooth, and
    never 0, so completions far too long still differ by how far."""
    return 1.0 / (1.0 + abs(len(text) - TARGET_CHARACTERS) / TARGET_CHARACTERS)


def variety(text: str) -> float:
    """The share of a text's adjacent character pairs that are distinct (1 for a text of under
    two characters): near 1 for varied text, low for a repetition loop. Pairs rather than single
    characters: a long text uses up the alphabet, but rarely every pair of it."""
    pairs = [text[i : i + 2] for i in range(len(text) - 1)]
    return len(set(pairs)) / len(pairs) if pairs else 1.0


def length_reward(completions, **kwargs) -> list[float]:
    """The default reward: `length_score`, scaled by between 1/2 and 1 with the text's
    `variety`. The scale keeps the scores of one group apart when every completion ran to the
    length limit (a small or untrained model rarely ends one early): GRPO's and RLOO's
    advantage is the score less the group's mean, so equal scores teach nothing."""
    return [length_score(text) * (0.5 + 0.5 * variety(text)) for text in map(_text, completions)]


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

"""The built-in GRPO/RLOO rewards: the default one tells completions apart even when a tiny
random model fills every completion to the length limit."""

from __future__ import annotations

import random
import string

from runners.rewards import BUILTIN, TARGET_CHARACTERS, length_reward


def test_the_default_reward_tells_apart_completions_that_all_ran_to_the_limit():
    """Random text of one length, as an untrained model writes it when it never emits EOS:
    equal scores would make GRPO's group advantage zero, and the run would learn nothing."""
    generator = random.Random(0)
    alphabet = string.ascii_lowercase + " ,.'"
    group = ["".join(generator.choices(alphabet, k=4 * TARGET_CHARACTERS)) for _ in range(8)]
    scores = BUILTIN["length"](group)
    assert len(set(scores)) > 1
    assert all(0.0 < s <= 1.0 for s in scores)


def test_the_default_reward_prefers_the_target_length_and_never_saturates():
    lengths = [
        TARGET_CHARACTERS,
        2 * TARGET_CHARACTERS,
        4 * TARGET_CHARACTERS,
        8 * TARGET_CHARACTERS,
    ]
    texts = ["".join(chr(0x4E00 + i) for i in range(n)) for n in lengths]  # all distinct
    scores = length_reward(texts)
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)
    assert scores[0] == 1.0 and scores[-1] > 0.0
    conversational = [[{"role": "assistant", "content": texts[0]}]]
    assert length_reward(conversational) == [1.0]

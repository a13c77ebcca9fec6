"""What each TRL 1.12 trainer does with a row that is too long: keep, truncate, drop or empty it.

Every method's recipe holds one `LengthRule`. The pre-flight tokenizes a row as the trainer
does (`runners.trl_rows`) into `Tokens` and asks the rule for the row's `Fate` at the planned
length, so that "rows dropped", "rows truncated" and "rows left with no completion tokens" are
what the run will really do. Pure data and arithmetic: no tokenizer, no TRL import.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class Fate(StrEnum):
    """What the trainer does with one row at the planned length."""

    kept = "kept"
    truncated = "truncated"
    """Kept, with tokens cut off the end of its longest sequence."""
    dropped = "dropped"
    """Removed by the trainer before training: it never sees the row."""
    no_completion = "no-completion"
    """Kept with zero completion tokens: a mean over no tokens, so the loss is NaN."""
    long_prompt = "long-prompt"
    """An online method's prompt longer than the plan's prompt length: TRL generates from the
    whole prompt (it truncates nothing), so memory and time grow past the plan."""


@dataclass(frozen=True)
class Tokens:
    """One row as the trainer tokenizes it: for each completion (chosen, rejected, or the one
    completion), the prompt's tokens before it and the completion's own tokens, EOS included
    where the trainer appends it. Text-only rows (SFT `text` / `messages`, a reward trainer's
    whole sequences) have prompts of 0. Online methods' rows are a prompt with no completion."""

    prompts: tuple[int, ...]
    completions: tuple[int, ...]

    @property
    def prompt(self) -> int:
        return max(self.prompts, default=0)

    @property
    def longest(self) -> int:
        """The longest whole sequence, prompt included: what the model reads at once."""
        if not self.completions:
            return self.prompt
        return max(p + c for p, c in zip(self.prompts, self.completions, strict=True))


Kind = Literal["drop-full-prompt", "drop-over-length", "cut-answers", "drop-masked", "no-limit"]


@dataclass(frozen=True)
class LengthRule:
    """One trainer's handling of lengths, as its TRL 1.12 source does it (`source`)."""

    kind: Kind
    source: str
    """Where in TRL 1.12 the rule is: file and function."""

    def fate(self, tokens: Tokens, limit: int | None) -> Fate:
        """The row's fate at `limit` tokens (the trainer's `max_length`; for online methods
        the plan's prompt length, which TRL does not enforce)."""
        if limit is None:
            return Fate.kept
        if self.kind == "no-limit":
            return Fate.long_prompt if tokens.prompt > limit else Fate.kept
        if self.kind == "drop-over-length":
            return Fate.dropped if tokens.longest > limit else Fate.kept
        if self.kind == "cut-answers":
            return self._cut_answers(tokens, limit)
        if self.kind == "drop-full-prompt" and tokens.prompt >= limit:
            return Fate.dropped  # keep_start truncation would leave no completion token
        if self.kind == "drop-masked" and not any(
            min(c, max(0, limit - p))
            for p, c in zip(tokens.prompts, tokens.completions, strict=True)
        ):
            return Fate.dropped  # every label masked after truncation: no loss from the row
        return Fate.truncated if tokens.longest > limit else Fate.kept

    @staticmethod
    def _cut_answers(tokens: Tokens, limit: int) -> Fate:
        """ORPO's and CPO's `tokenize_row`: when the prompt plus the longer answer exceeds
        max_length, each answer is sliced to `answer[: max_length - longer]`; the prompt is
        never cut. A slice bound of zero or less can leave an answer with no tokens at all, and
        a bound past the answer's end cuts nothing (the row then runs past max_length whole)."""
        longer = max(tokens.completions, default=0)
        cut = False
        for prompt, answer in zip(tokens.prompts, tokens.completions, strict=True):
            if prompt + longer <= limit:
                continue
            kept = len(range(answer)[: limit - longer])
            if kept == 0:
                return Fate.no_completion
            cut = cut or kept < answer
        return Fate.truncated if cut else Fate.kept


DPO_RULE = LengthRule(
    "drop-full-prompt",
    "trl/trainer/dpo_trainer.py DPOTrainer._prepare_dataset: filter len(prompt_ids) < "
    "max_length, then DataCollatorForPreference truncates keep_start",
)
KTO_RULE = LengthRule(
    "drop-full-prompt",
    "trl/trainer/kto_trainer.py KTOTrainer._prepare_dataset: filter len(prompt_ids) < "
    "max_length, then the collator truncates keep_start",
)
REWARD_RULE = LengthRule(
    "drop-over-length",
    "trl/trainer/reward_trainer.py RewardTrainer._prepare_dataset: filter len(chosen_ids) <= "
    "max_length and len(rejected_ids) <= max_length",
)
ORPO_RULE = LengthRule(
    "cut-answers",
    "trl/experimental/orpo/orpo_trainer.py ORPOTrainer.tokenize_row: answers sliced to "
    "max_length - longer answer; the prompt is kept whole",
)
CPO_RULE = LengthRule(
    "cut-answers",
    "trl/experimental/cpo/cpo_trainer.py CPOTrainer.tokenize_row: answers sliced to "
    "max_length - longer answer; the prompt is kept whole",
)
SFT_RULE = LengthRule(
    "drop-masked",
    "trl/trainer/sft_trainer.py SFTTrainer._prepare_dataset: truncate keep_start, then drop "
    "rows whose labels are all masked",
)
ONLINE_RULE = LengthRule(
    "no-limit",
    "trl/trainer/grpo_trainer.py and rloo_trainer.py _tokenize_prompts, "
    "trl/experimental/ppo: prompts are tokenized whole, never truncated",
)

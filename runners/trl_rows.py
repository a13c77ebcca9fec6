"""A dataset row tokenized the way its TRL 1.12 trainer tokenizes it, as `Tokens`.

The pre-flight asks the method's `LengthRule` (planner.data_rules) what the trainer will do
with each row; for that answer to be the run's, the token counts must be the trainer's:

- DPO, KTO, SFT (prompt + completion), the reward trainer: `_prepare_dataset` appends EOS to
  plain completions that lack it, tokenizes plain text with the tokenizer's special tokens and
  conversations with the chat template (the prompt with `add_generation_prompt=True`), and
  takes the completion as the tokens of prompt + completion past the prompt's
  (trl/trainer/*_trainer.py, `tokenize_fn`). DPO and KTO first extract an implicit prompt
  (`trl.data_utils.extract_prompt`); the reward trainer scores prompt + answer whole.
- ORPO and CPO (SimPO): `tokenize_row` renders conversations to text
  (`trl.data_utils.maybe_apply_chat_template`), tokenizes without special tokens, adds BOS
  to the prompt and EOS to each answer where missing (trl/experimental/orpo/orpo_trainer.py).
- GRPO, RLOO, PPO: the prompt alone, with the chat template's generation prompt
  (`_tokenize_prompts`; PPO as `runners.train.train_ppo` tokenizes it).

`tests/test_trl_rows.py` runs TRL's own preprocessing on the same rows and compares.
"""

from __future__ import annotations

from typing import Any

from planner.data_rules import Tokens
from planner.recipes import recipe
from planner.specs import Method


def _ids(tokenizer, value: Any, **template: Any) -> list[int]:
    """TRL's `data_utils._tokenize`: the chat template for a conversation, else the tokenizer
    with its special tokens."""
    if isinstance(value, list):
        out = tokenizer.apply_chat_template(value, tokenize=True, return_dict=True, **template)
        return list(out["input_ids"])
    return list(tokenizer(text=value)["input_ids"])


def _with_eos(value: Any, eos: str | None) -> Any:
    if isinstance(value, str) and eos and not value.endswith(eos):
        return value + eos
    return value


def is_conversational(row: dict[str, Any]) -> bool:
    """`trl.data_utils.is_conversational` (TRL 1.12): a text column holds a list whose first
    item is a message with a role. TRL looks at one of the columns only (whichever a set pops);
    for rows that are all plain or all messages that is the same answer. Kept here rather than
    imported: `trl.data_utils` imports torch, seconds that `launch --dry-run` does not spend."""
    for key in ("prompt", "chosen", "rejected", "completion", "messages"):
        if key in row:
            value = row[key]
            first = value[0] if isinstance(value, list) and value else None
            return isinstance(first, dict) and "role" in first
    return False


def extract_prompt(row: dict[str, Any]) -> dict[str, Any]:
    """`trl.data_utils.extract_prompt` (TRL 1.12), as written there: the prompt is chosen up
    to the first index where chosen and rejected differ, one character back over a space; when
    no index differs the loop ends on the last one, so the shorter answer keeps its last item."""
    chosen, rejected = row["chosen"], row["rejected"]
    index = 0
    for index in range(min(len(chosen), len(rejected))):
        if chosen[index] != rejected[index]:
            if chosen[index - 1] == " ":
                index -= 1
            break
    return {"prompt": chosen[:index], "chosen": chosen[index:], "rejected": rejected[index:]}


def row_tokens(row: dict[str, Any], method: Method, tokenizer) -> Tokens:
    """The row's prompt and completion token counts as method's trainer makes them."""
    rule = recipe(method).length_rule.kind
    if recipe(method).generates:
        prompt = row["prompt"]
        template = {"add_generation_prompt": True} if isinstance(prompt, list) else {}
        return Tokens(prompts=(len(_ids(tokenizer, prompt, **template)),), completions=())
    if rule == "cut-answers":
        return _answer_tokens(row, tokenizer)
    if method is Method.sft and "prompt" not in row:
        text = row["messages"] if "messages" in row else _with_eos(row["text"], tokenizer.eos_token)
        return Tokens(prompts=(0,), completions=(len(_ids(tokenizer, text)),))
    if "prompt" not in row and method is not Method.reward:
        row = {**row, **extract_prompt(row)}
    conversational = is_conversational(row)
    answers = [row[c] for c in ("chosen", "rejected", "completion") if c in row]
    if not conversational:
        answers = [_with_eos(a, tokenizer.eos_token) for a in answers]
    prompt = row.get("prompt")
    if method is Method.reward:  # the whole sequence is scored; nothing is split off
        whole = [a if prompt is None else prompt + a for a in answers]
        lengths = tuple(len(_ids(tokenizer, s)) for s in whole)
        return Tokens(prompts=(0,) * len(lengths), completions=lengths)
    template = {"add_generation_prompt": True} if conversational else {}
    prompt_length = len(_ids(tokenizer, prompt, **template))
    lengths = tuple(max(0, len(_ids(tokenizer, prompt + a)) - prompt_length) for a in answers)
    return Tokens(prompts=(prompt_length,) * len(lengths), completions=lengths)


def _answer_tokens(row: dict[str, Any], tokenizer) -> Tokens:
    """ORPO's / CPO's `tokenize_row` before its truncation (`build_tokenized_answer`, then
    `add_bos_token_if_needed` and `add_eos_token_if_needed` from trl.experimental.utils)."""
    from trl.data_utils import maybe_apply_chat_template, maybe_extract_prompt

    example = maybe_apply_chat_template(maybe_extract_prompt(dict(row)), tokenizer)
    prompt = example["prompt"]
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    prompts, answers = [], []
    for answer in (example["chosen"], example["rejected"]):
        full = tokenizer(prompt + answer, add_special_tokens=False)["input_ids"]
        start = len(prompt_ids)
        if full[:start] != prompt_ids:  # the prompt's last token merged into the answer's first
            start -= 1
        head, tail = full[:start], full[start:]
        prompts.append(len(head) + (bos is not None and (not head or head[0] != bos)))
        answers.append(len(tail) + (not tail or tail[-1] != eos))
    return Tokens(prompts=tuple(prompts), completions=tuple(answers))

"""Dataset shapes people publish that TRL 1.12 does not read as they are, and their conversion.

Recognised: ShareGPT-style conversations (`{"from": "human", "value": ...}` turns, in a
`conversations` or `messages` column), LLaMA-Factory's own preference file (ShareGPT
`conversations` with `chosen` / `rejected` each one `{"from": "gpt", ...}` turn) and its KTO file
(ShareGPT `conversations` with a `kto_tag`). `convert_rows` rewrites them into TRL's standard
conversational shape for a method: `messages` (SFT), `prompt` + `chosen` / `rejected`
(preference methods), `prompt` + `completion` + `label` (KTO) or `prompt` alone (online methods).

What TRL 1.12 itself does with them (trl/data_utils.py and the trainers' `_prepare_dataset`):
SFTTrainer converts a `conversations` column of from/value turns with `maybe_convert_to_chatml`,
which renames the keys (from -> role, value -> content) but keeps the role values, so turns
reach the chat template as `human` / `gpt`, roles templates do not know; a `messages` column of
from/value turns is not converted at all (`is_conversational_from_value` looks only at
`conversations`). DPOTrainer and KTOTrainer never convert: with no `prompt` column they call
`extract_prompt`, which indexes `chosen[0]` and fails with `KeyError: 0` on a single-turn dict.
"""

from __future__ import annotations

from typing import Any, Literal

from planner.specs import Method

Shape = Literal["sharegpt", "llamafactory-preference", "llamafactory-kto"]

ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
}
"""ShareGPT / LLaMA-Factory role names -> the role names chat templates know (LLaMA-Factory's
`function_call` is the assistant's tool call; its `observation` is the tool's answer)."""

MESSAGE_COLUMNS = ("conversations", "messages")
"""Columns that hold a whole conversation in ShareGPT files."""

SHAPE_NAMES: dict[str, str] = {
    "sharegpt": "ShareGPT-style from/value messages",
    "llamafactory-preference": "LLaMA-Factory's preference file (ShareGPT conversations with "
    "chosen/rejected as single from/value turns)",
    "llamafactory-kto": "LLaMA-Factory's KTO file (ShareGPT conversations with a kto_tag)",
}
"""Each recognised shape as a message names it."""

CONVERT_HINT = "convert with `advisor check-data --convert-to trl OUT.jsonl`"

PREFERENCE_METHODS = (Method.dpo, Method.orpo, Method.simpo, Method.reward)
PROMPT_METHODS = (Method.ppo, Method.grpo, Method.rloo)


def is_turn(value: Any) -> bool:
    """One ShareGPT turn: a dict with `from` and `value` and no `role`."""
    return isinstance(value, dict) and "from" in value and "value" in value and "role" not in value


def is_from_value(value: Any) -> bool:
    """A ShareGPT conversation: a non-empty list of from/value turns."""
    return isinstance(value, list) and bool(value) and all(is_turn(t) for t in value)


def shape_of(row: dict[str, Any]) -> Shape | None:
    """The published shape of one row, or None when it holds no from/value turns."""
    conversation = next((row[c] for c in MESSAGE_COLUMNS if is_from_value(row.get(c))), None)
    if conversation is not None:
        if is_turn(row.get("chosen")) and is_turn(row.get("rejected")):
            return "llamafactory-preference"
        if "kto_tag" in row:
            return "llamafactory-kto"
        return "sharegpt"
    columns = ("prompt", "chosen", "rejected", "completion")
    if any(is_from_value(row.get(c)) or is_turn(row.get(c)) for c in columns):
        return "sharegpt"
    return None


def shape_message(shape: Shape, method: Method) -> str:
    """The one problem that names a recognised shape, with what TRL 1.12 would do with it."""
    if method is Method.sft and shape != "llamafactory-preference":
        why = (
            "TRL's SFTTrainer renames from/value keys only in a `conversations` column "
            "(maybe_convert_to_chatml) and keeps the role values (human, gpt), which chat "
            "templates do not know"
        )
    else:
        why = f"TRL's {method.value} trainer reads no from/value turns"
        if shape == "llamafactory-preference":
            why += " (DPO and KTO, finding no prompt column, fail in extract_prompt: KeyError: 0)"
    return f"{SHAPE_NAMES[shape]}: {why}; {CONVERT_HINT}"


def _turns(value: Any) -> list[dict[str, Any]]:
    """from/value turn(s) -> role/content messages; role/content messages pass through."""
    turns = value if isinstance(value, list) else [value]
    messages = []
    for turn in turns:
        if is_turn(turn):
            role = str(turn["from"])
            messages.append({"role": ROLES.get(role.lower(), role), "content": turn["value"]})
        else:
            messages.append(turn)
    return messages


def _conversation(row: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The row's conversation as role/content messages, LLaMA-Factory's `system` column first."""
    column = next((c for c in MESSAGE_COLUMNS if isinstance(row.get(c), list)), None)
    if column is None:
        return None
    messages = _turns(row[column])
    system = row.get("system")
    has_system = (
        bool(messages) and isinstance(messages[0], dict) and messages[0].get("role") == "system"
    )
    if isinstance(system, str) and system.strip() and not has_system:
        messages.insert(0, {"role": "system", "content": system})
    return messages


def _until_last_user(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The prompt part of a conversation: everything before its final assistant turns."""
    end = len(messages)
    while end > 1 and messages[end - 1].get("role") == "assistant":
        end -= 1
    return messages[:end]


class ConversionError(ValueError):
    """A row that cannot be written in the method's shape (the message says why)."""


def convert_row(row: dict[str, Any], method: Method | str) -> list[dict[str, Any]]:
    """One row in TRL's standard conversational shape for method (a preference row becomes two
    KTO rows: chosen desirable, rejected undesirable); other columns are kept as they are."""
    method = Method(method)
    if shape_of(row) is None:
        return [row]
    consumed = {*MESSAGE_COLUMNS, "system", "kto_tag", "prompt", "chosen", "rejected", "completion"}
    rest = {k: v for k, v in row.items() if k not in consumed}
    conversation = _conversation(row)
    prompt = _turns(row["prompt"]) if isinstance(row.get("prompt"), (list, dict)) else None
    prompt = prompt if prompt is not None else conversation
    chosen = _turns(row["chosen"]) if row.get("chosen") is not None else None
    rejected = _turns(row["rejected"]) if row.get("rejected") is not None else None
    completion = _turns(row["completion"]) if row.get("completion") is not None else None
    if method is Method.sft:
        if conversation is not None and chosen is None:
            return [{"messages": conversation, **rest}]
        if prompt is not None and (chosen or completion):
            return [{"messages": prompt + (chosen or completion), **rest}]
        raise ConversionError("no conversation to write as messages")
    if method in PREFERENCE_METHODS:
        if prompt is None or chosen is None or rejected is None:
            raise ConversionError(f"{method.value} needs chosen and rejected; the row has none")
        return [{"prompt": prompt, "chosen": chosen, "rejected": rejected, **rest}]
    if method is Method.kto:
        if prompt is not None and chosen is not None and rejected is not None:
            return [
                {"prompt": prompt, "completion": chosen, "label": True, **rest},
                {"prompt": prompt, "completion": rejected, "label": False, **rest},
            ]
        label = kto_label(row.get("kto_tag", row.get("label")))
        if label is None:
            raise ConversionError("kto needs a true/false kto_tag or label")
        if completion is not None and prompt is not None:
            return [{"prompt": prompt, "completion": completion, "label": label, **rest}]
        head = _until_last_user(prompt or [])
        if not head or len(head) == len(prompt or []):
            raise ConversionError("kto needs a conversation that ends with the assistant's turn")
        return [{"prompt": head, "completion": prompt[len(head) :], "label": label, **rest}]
    if prompt is None:
        raise ConversionError(f"{method.value} needs a prompt")
    return [{"prompt": _until_last_user(prompt), **rest}]


def convert_rows(rows: list[dict[str, Any]], method: Method | str) -> list[dict[str, Any]]:
    """Every row converted by `convert_row`; ConversionError names the first row (from 1) that
    cannot be."""
    converted = []
    for number, row in enumerate(rows, 1):
        try:
            converted.extend(convert_row(row, method))
        except ConversionError as error:
            raise ConversionError(f"row {number}: {error}") from None
    return converted


KTO_LABELS = {"true": True, "false": False, "1": True, "0": False}
"""KTO label strings accepted (as CSV files hold them), case-insensitive, and their meaning."""


def kto_label(value: Any) -> bool | None:
    """A KTO label as a bool: true/false, 0/1 (TRL sums `dataset["label"]`, so ints work) or the
    strings "true"/"false"/"1"/"0" (TRL cannot sum those: `cast_kto_labels` makes them bools);
    None for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        return KTO_LABELS.get(value.strip().lower())
    return None


def cast_kto_labels(dataset):
    """A `datasets.Dataset` with its `label` column as bools, for KTOTrainer (it sums the
    column and builds a bool tensor from it: strings fail there)."""
    if "label" not in (dataset.column_names or []):
        return dataset
    if getattr(dataset.features["label"], "dtype", None) == "bool":
        return dataset  # already what the trainer takes: no pass over every row
    return dataset.map(lambda row: {"label": kto_label(row["label"])})


RESERVED_COLUMNS: dict[Method, tuple[tuple[tuple[str, ...], str], ...]] = {
    Method.sft: (
        (("input_ids",), "SFTTrainer takes the set as tokenized already and skips its chat "
         "template and tokenizer"),
        (("labels",), "SFTTrainer keeps it as the token labels instead of building them"),
        (("assistant_masks",), "SFTTrainer masks the loss with it"),
    ),
    Method.reward: (
        (("chosen_ids", "rejected_ids"), "RewardTrainer takes the set as tokenized already and "
         "skips tokenizing"),
        (("chosen_input_ids", "rejected_input_ids"), "RewardTrainer renames them to chosen_ids / "
         "rejected_ids and skips tokenizing"),
    ),
}  # fmt: skip
"""Columns a trainer takes as its own input when a dataset has them, with what it then does
(TRL 1.12: SFTTrainer._prepare_dataset's `is_processed = "input_ids" in column_names` and its
"labels" / "assistant_masks" handling; RewardTrainer._prepare_dataset's `is_processed`). DPO and
KTO recompute prompt_ids / chosen_ids / completion_ids over any such column, so none is listed."""


def reserved_columns(method: Method | str, columns: list[str]) -> list[tuple[str, str]]:
    """(column names, what the trainer does with them) for each reserved group present."""
    found = []
    for group, why in RESERVED_COLUMNS.get(Method(method), ()):
        if all(c in columns for c in group):
            found.append((" and ".join(group), why))
    return found


def write_converted(reference: str, out: str, method: Method | str) -> int:
    """Write the rows of dataset `reference`, converted by `convert_rows`, to the new JSON Lines
    file `out` and return how many were written; the input is only read, and an existing `out`
    is refused (InputError), never overwritten."""
    import json
    from pathlib import Path

    from planner.dataset_file import file_format, label, read_rows
    from planner.errors import InputError

    target = Path(out).expanduser()
    if file_format(target) != ".jsonl" or target.name.lower().endswith(".gz"):
        raise InputError(f"--convert-to trl {out}: give a new .jsonl file to write")
    if target.exists() or target.is_symlink():
        raise InputError(f"--convert-to trl {out}: the file exists; give a new name")
    rows = read_rows(reference)
    try:
        converted = convert_rows(rows, method)
    except ConversionError as error:
        name = f"{label(reference)}: cannot convert for {Method(method).value}"
        raise InputError(f"{name}: {error}") from None
    try:
        with target.open("x", encoding="utf-8") as handle:  # "x": never over an existing file
            for row in converted:
                handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    except FileExistsError:
        raise InputError(f"--convert-to trl {out}: the file exists; give a new name") from None
    except OSError as error:
        raise InputError(f"--convert-to trl {out}: cannot write it ({error.strerror})") from None
    return len(converted)

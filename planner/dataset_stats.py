"""Rows and approximate tokens of a local dataset, for `advisor plan --dataset PATH`.

Reads JSONL / JSON / CSV with the standard library, and Parquet and `save_to_disk` folders with
pyarrow (imported only then), row by row, through `planner.dataset_file`. Tokens are counted as
characters / 4 — the usual English BPE ratio (OpenAI tokenizer guide: "one token ≈ 4
characters") — since the planner loads no tokenizer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from planner.dataset_file import dataset_location, iter_rows, label
from planner.errors import InputError

CHARS_PER_TOKEN = 4
TEXT_COLUMNS = ("prompt", "chosen", "rejected", "completion", "text", "messages")


@dataclass
class DatasetStats:
    path: str
    rows: int
    mean_tokens: float
    max_tokens: int

    def summary(self) -> str:
        return (
            f"dataset {self.path}: {self.rows} rows, ~{self.mean_tokens:.0f} tokens per row "
            f"(max ~{self.max_tokens}; characters / {CHARS_PER_TOKEN})"
        )


def _row_chars(row: object) -> int:
    if isinstance(row, dict):
        keys = [k for k in TEXT_COLUMNS if k in row] or list(row)
        # default=str: Parquet cells may be bytes or timestamps, which JSON has no type for
        return sum(len(json.dumps(row[k], ensure_ascii=False, default=str)) for k in keys)
    return len(json.dumps(row, ensure_ascii=False, default=str))


def dataset_stats(path_text: str) -> DatasetStats:
    """Row count and token estimates of a local dataset file or saved folder (checked as
    `check-data` checks it: a broken file is a InputError naming its line)."""
    name = label(path_text)
    path = dataset_location(path_text)
    rows, total, longest = 0, 0, 0
    for row in iter_rows(path, name):
        tokens = max(1, _row_chars(row) // CHARS_PER_TOKEN)
        rows, total, longest = rows + 1, total + tokens, max(longest, tokens)
    if not rows:
        raise InputError(f"{name} has no rows")
    return DatasetStats(str(path), rows, total / rows, longest)

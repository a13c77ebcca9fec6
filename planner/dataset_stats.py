"""Rows and approximate tokens of a local dataset file, for `advisor plan --dataset PATH`.

Reads JSONL / JSON / CSV with the standard library and Parquet with pyarrow (imported only
then). Tokens are counted as characters / 4 — the usual English BPE ratio (OpenAI tokenizer
guide: "one token ≈ 4 characters") — since the planner loads no tokenizer.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from planner.errors import PlanError

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
        return sum(len(json.dumps(row[k], ensure_ascii=False)) for k in keys)
    return len(json.dumps(row, ensure_ascii=False))


def _rows(path: Path) -> list[object]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            with path.open(encoding="utf-8") as handle:
                return [json.loads(line) for line in handle if line.strip()]
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("data"), list):
                data = data["data"]
            if not isinstance(data, list):
                raise PlanError(f"{path}: expected a JSON list of rows (or {{'data': [...]}})")
            return data
        if suffix == ".csv":
            with path.open(encoding="utf-8", newline="") as handle:
                return list(csv.DictReader(handle))
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as error:
        raise PlanError(f"cannot read dataset {path}: {error}") from None
    except OSError as error:
        raise PlanError(f"cannot read dataset {path}: {error.strerror or error}") from None
    raise PlanError(f"dataset {path}: unsupported format {suffix!r} (jsonl, json, csv, parquet)")


def dataset_stats(path_text: str) -> DatasetStats:
    """Row count and token estimates of a local dataset file."""
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise PlanError(f"dataset {path_text!r} is not a readable file")
    rows = _rows(path)
    if not rows:
        raise PlanError(f"dataset {path} has no rows")
    tokens = [max(1, _row_chars(row) // CHARS_PER_TOKEN) for row in rows]
    return DatasetStats(str(path), len(rows), sum(tokens) / len(tokens), max(tokens))

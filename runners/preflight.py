"""Data pre-flight: does a dataset fit the method's format, and what will truncation cost?

Checks, per method: required columns, plain vs conversational (not mixed), empty fields,
identical chosen/rejected, duplicate rows, KTO labels, token lengths against the planned
maximum (truncation rate), a chat template that renders, and an EOS token. Every problem lists
its rows, numbered from 1 as the lines of a JSONL file.
"""

from __future__ import annotations

import json
import statistics
from typing import Any, Literal

from pydantic import BaseModel, Field

from planner.dataset_file import dataset_location, label, row_lines
from planner.errors import InputError
from planner.recipes import PREFERENCE_COLUMNS, PROMPT_COLUMNS, RECIPES, recipe, sft_columns
from planner.specs import Method

PREFERENCE = tuple(m for m, r in RECIPES.items() if r.columns == PREFERENCE_COLUMNS)
"""Methods trained on chosen/rejected pairs (their recipes' columns)."""
PROMPT_ONLY = tuple(m for m, r in RECIPES.items() if r.columns == PROMPT_COLUMNS)
"""Methods that generate their own completions from prompts (their recipes' columns)."""
SHOW_ROWS = 10
TOKEN_SAMPLE = 5000
"""Rows tokenized for the length, template and EOS checks; larger sets are sampled evenly."""


class Problem(BaseModel):
    """One defect, with the rows (1-based) where it occurs."""

    severity: Literal["error", "warning"]
    code: str
    message: str
    rows: list[int] = Field(default_factory=list)

    def describe(self) -> str:
        if not self.rows:
            return self.message
        shown = ", ".join(str(r) for r in self.rows[:SHOW_ROWS])
        more = f" and {len(self.rows) - SHOW_ROWS} more" if len(self.rows) > SHOW_ROWS else ""
        return f"{self.message} (rows {shown}{more})"


class LengthStats(BaseModel):
    """Token lengths of whole rows (prompt + longest completion), as the trainer will see them."""

    min: int
    median: float
    p95: int
    max: int
    max_length: int | None
    truncated_rows: int
    truncation_rate: float
    measured_rows: int = Field(description="rows tokenized (all, or an even sample)")


class PreflightReport(BaseModel):
    """Everything the pre-flight found about one dataset for one method."""

    dataset: str
    method: Method
    rows: int
    columns: list[str]
    format: Literal["plain", "conversational", "mixed", "unknown"]
    lengths: LengthStats | None = None
    labels: dict[str, int] = Field(
        default_factory=dict, description="KTO: desirable and undesirable row counts"
    )
    problems: list[Problem] = Field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]


def required_columns(method: Method, columns: list[str]) -> list[str]:
    """The columns TRL needs for method: its recipe's (SFT accepts text, messages or prompt +
    completion: `sft_columns`)."""
    if method is Method.sft:
        return sft_columns(columns)
    return list(recipe(method).columns)


def _labelled(method: Method) -> bool:
    """The method trains on per-row labels (KTO's thumbs-up / thumbs-down)."""
    return "label" in recipe(method).columns


def _is_conversation(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, dict) and "role" in t and "content" in t for t in value)
    )


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list):
        return not value or all(_is_empty(t.get("content")) for t in value if isinstance(t, dict))
    return False


def _text_columns(method: Method, columns: list[str]) -> list[str]:
    names = ("prompt", "chosen", "rejected", "completion", "text", "messages")
    return [c for c in names if c in columns]


def _rows(reference: str) -> list[dict[str, Any]]:
    from runners.data import load_train_split, read_failure

    dataset = load_train_split(reference, quiet=True)
    try:
        return [dict(row) for row in dataset]
    except Exception as error:  # decoding Arrow rows back to Python can fail in many ways
        raise read_failure(reference, error) from None


def check_rows(
    rows: list[dict[str, Any]],
    method: Method | str,
    *,
    tokenizer=None,
    max_length: int | None = None,
    dataset: str = "<rows>",
) -> PreflightReport:
    """Check rows (dicts) for method; tokenizer (optional) adds length, template and EOS checks."""
    method = Method(method)
    columns = sorted({key for row in rows for key in row})
    problems: list[Problem] = []
    if not rows:
        problems.append(Problem(severity="error", code="empty-dataset", message="no rows"))
        return PreflightReport(
            dataset=dataset, method=method, rows=0, columns=[], format="unknown", problems=problems
        )
    required = required_columns(method, columns)
    missing = [c for c in required if c not in columns]
    if missing:
        problems.append(
            Problem(
                severity="error",
                code="missing-columns",
                message=f"{method.value} needs columns {', '.join(required)}; missing "
                f"{', '.join(missing)} (found {', '.join(columns)})",
            )
        )
    if method in PREFERENCE and "prompt" not in columns and not missing:
        problems.append(
            Problem(
                severity="warning",
                code="implicit-prompt",
                message="no prompt column: TRL takes the common prefix of chosen and rejected",
            )
        )
    text_columns = _text_columns(method, columns)

    # Plain or conversational, per row; a mix is an error (TRL formats the whole set one way).
    kinds: dict[int, str] = {}
    for number, row in enumerate(rows, 1):
        values = [row.get(c) for c in text_columns if row.get(c) is not None]
        conversational = [_is_conversation(v) for v in values]
        if values:
            kinds[number] = "conversational" if any(conversational) else "plain"
    found = set(kinds.values())
    fmt = "unknown" if not found else found.pop() if len(found) == 1 else "mixed"
    if fmt == "mixed":
        minority = min(("plain", "conversational"), key=lambda k: list(kinds.values()).count(k))
        problems.append(
            Problem(
                severity="error",
                code="mixed-format",
                message=f"plain and conversational rows are mixed; these rows are {minority}",
                rows=[n for n, k in kinds.items() if k == minority],
            )
        )

    for column in (c for c in required if c in columns and c != "label"):
        empty = [n for n, row in enumerate(rows, 1) if _is_empty(row.get(column))]
        if empty:
            problems.append(
                Problem(
                    severity="error",
                    code=f"empty-{column}",
                    message=f"empty {column}",
                    rows=empty,
                )
            )
    if "chosen" in columns and "rejected" in columns:
        same = [
            n
            for n, row in enumerate(rows, 1)
            if row.get("chosen") == row.get("rejected") and not _is_empty(row.get("chosen"))
        ]
        if same:
            problems.append(
                Problem(
                    severity="error",
                    code="identical-pair",
                    message="chosen and rejected are identical: no preference signal",
                    rows=same,
                )
            )
    if _labelled(method) and "label" in columns:
        bad = [n for n, row in enumerate(rows, 1) if not isinstance(row.get("label"), bool)]
        if bad:
            problems.append(
                Problem(
                    severity="error",
                    code="bad-label",
                    message="KTO label must be true or false",
                    rows=bad,
                )
            )
        counts = {
            "desirable": sum(1 for row in rows if row.get("label") is True),
            "undesirable": sum(1 for row in rows if row.get("label") is False),
        }
        labels = {row.get("label") for row in rows if isinstance(row.get("label"), bool)}
        if len(labels) == 1:
            problems.append(
                Problem(
                    severity="warning",
                    code="one-sided-labels",
                    message=f"every KTO label is {labels.pop()}: KTO needs both kinds",
                )
            )

    seen: dict[str, int] = {}
    duplicates = []
    for number, row in enumerate(rows, 1):
        key = json.dumps(row, sort_keys=True, default=str)
        if key in seen:
            duplicates.append(number)
        else:
            seen[key] = number
    if duplicates:
        problems.append(
            Problem(
                severity="warning",
                code="duplicates",
                message="duplicate rows (repeats of an earlier row)",
                rows=duplicates,
            )
        )

    lengths = None
    label_counts = counts if _labelled(method) and "label" in columns else {}
    if tokenizer is not None and not missing and fmt != "mixed":
        lengths = _token_checks(rows, method, fmt, tokenizer, max_length, problems)
    return PreflightReport(
        dataset=dataset,
        method=method,
        rows=len(rows),
        columns=columns,
        format=fmt,
        lengths=lengths,
        labels=label_counts,
        problems=problems,
    )


def _render(tokenizer, value: Any, *, generation_prompt: bool = False) -> str:
    if _is_conversation(value):
        return tokenizer.apply_chat_template(
            value, tokenize=False, add_generation_prompt=generation_prompt
        )
    return "" if value is None else str(value)


def _row_texts(row: dict[str, Any], method: Method, tokenizer) -> list[str]:
    """The full sequences the trainer builds from row (one per completion)."""
    prompt = row.get("prompt")
    if method in PROMPT_ONLY:
        return [_render(tokenizer, prompt, generation_prompt=True)]
    if "messages" in row:
        return [_render(tokenizer, row["messages"])]
    if "text" in row and "prompt" not in row:
        return [_render(tokenizer, row["text"])]
    completions = [row.get(c) for c in ("chosen", "rejected", "completion") if c in row]
    if _is_conversation(prompt):
        return [_render(tokenizer, list(prompt) + list(c or [])) for c in completions]
    return [_render(tokenizer, prompt) + _render(tokenizer, c) for c in completions]


def _token_checks(rows, method, fmt, tokenizer, max_length, problems) -> LengthStats | None:
    if tokenizer.eos_token is None:
        problems.append(
            Problem(
                severity="error",
                code="no-eos",
                message="the tokenizer has no EOS token: generations never learn to stop",
            )
        )
    if fmt == "conversational" and not getattr(tokenizer, "chat_template", None):
        problems.append(
            Problem(
                severity="error",
                code="no-chat-template",
                message="conversational data needs tokenizer.chat_template; the tokenizer has none",
            )
        )
        return None
    failed, sizes, truncated = [], [], []
    missing_eos = []
    step = max(1, len(rows) // TOKEN_SAMPLE)
    sample = [(number, rows[number - 1]) for number in range(1, len(rows) + 1, step)]
    for number, row in sample:
        try:
            texts = _row_texts(row, method, tokenizer)
        except Exception:  # jinja raises many kinds; a row that fails to render is the defect
            failed.append(number)
            continue
        size = max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
        sizes.append(size)
        if max_length is not None and size > max_length:
            truncated.append(number)
        ends = any(t.rstrip().endswith(str(tokenizer.eos_token)) for t in texts)
        if fmt == "conversational" and method not in PROMPT_ONLY and not ends:
            missing_eos.append(number)
    if failed:
        problems.append(
            Problem(
                severity="error",
                code="template-fails",
                message="the chat template fails to render these rows",
                rows=failed,
            )
        )
    if missing_eos:
        problems.append(
            Problem(
                severity="warning",
                code="template-no-eos",
                message="the rendered conversation does not end with EOS: the model may not "
                "learn to stop",
                rows=missing_eos,
            )
        )
    if fmt == "plain" and tokenizer.eos_token and method not in PROMPT_ONLY:
        doubled = [
            n
            for n, row in enumerate(rows, 1)
            if any(
                isinstance(row.get(c), str) and row[c].rstrip().endswith(tokenizer.eos_token)
                for c in ("chosen", "rejected", "completion", "text")
            )
        ]
        if doubled:
            problems.append(
                Problem(
                    severity="warning",
                    code="eos-in-text",
                    message=f"text already ends with {tokenizer.eos_token}: TRL appends EOS, "
                    "so these rows get two",
                    rows=doubled,
                )
            )
    if not sizes:
        return None
    ordered = sorted(sizes)
    rate = len(truncated) / len(sizes)
    if truncated:
        problems.append(
            Problem(
                severity="warning",
                code="truncated",
                message=f"{len(truncated)} rows ({rate:.0%}) are longer than max length "
                f"{max_length} tokens and will be truncated",
                rows=truncated,
            )
        )
    return LengthStats(
        min=ordered[0],
        median=statistics.median(ordered),
        p95=ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        max=ordered[-1],
        max_length=max_length,
        truncated_rows=len(truncated),
        truncation_rate=round(rate, 4),
        measured_rows=len(sizes),
    )


def check_dataset(
    reference: str,
    method: Method | str,
    *,
    tokenizer_path: str | None = None,
    max_length: int | None = None,
) -> PreflightReport:
    """Load a dataset (file, saved folder, or HF cache) and check it for method; a path that
    is not a dataset, or a file that cannot be read, is a one-line InputError."""
    rows = _rows(reference)
    tokenizer = None
    if tokenizer_path is not None:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        except Exception as error:  # transformers raises many kinds for a bad folder or name
            reason = " ".join(str(error).split())[:200] or type(error).__name__
            where = "".join(c if c.isprintable() else "?" for c in tokenizer_path)
            raise InputError(f"cannot load a tokenizer from {where}: {reason}") from None
    # A file name from the shell may hold undecodable bytes; JSON and terminals need text.
    shown = reference.encode("utf-8", "replace").decode("utf-8")
    report = check_rows(rows, method, tokenizer=tokenizer, max_length=max_length, dataset=shown)
    return _numbered_as_lines(report, reference)


def _numbered_as_lines(report: PreflightReport, reference: str) -> PreflightReport:
    """The report with its row numbers made the file's line numbers where they differ (a JSON
    Lines file with blank lines), so that "row 4" is the row an editor shows on line 4."""
    lines = row_lines(dataset_location(reference), label(reference))
    if not lines or len(lines) != report.rows or lines[-1] == len(lines):
        return report  # not lines, or no blank line among them: the numbers already agree
    for problem in report.problems:
        problem.rows = [lines[row - 1] for row in problem.rows]
    return report


def print_report(report: PreflightReport, console) -> None:
    """The report as a few lines: summary, lengths, then each problem with its rows."""
    console.print(
        f"[bold]data[/bold] {_plain(report.dataset)}: {report.rows} rows, {report.format}, "
        f"columns {_plain(', '.join(report.columns))}"
    )
    if report.lengths is not None:
        stats = report.lengths
        console.print(
            f"  tokens: min {stats.min}, median {stats.median:g}, p95 {stats.p95}, "
            f"max {stats.max}; max length {stats.max_length}, "
            f"truncated {stats.truncated_rows} ({stats.truncation_rate:.0%})"
            + (f"; sampled {stats.measured_rows} rows" if stats.measured_rows < report.rows else "")
        )
    for problem in report.problems:
        colour = "red" if problem.severity == "error" else "yellow"
        console.print(f"  [{colour}]{problem.severity}[/{colour}] {_plain(problem.describe())}")


def _plain(text: str) -> str:
    """Text from a user's file made safe to print: no Rich markup, no control characters."""
    from rich.markup import escape

    return escape("".join(c if c.isprintable() else "?" for c in text))

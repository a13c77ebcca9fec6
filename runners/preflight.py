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

from planner.data_rules import Fate
from planner.dataset_file import dataset_location, label, read_rows, row_lines
from planner.errors import InputError
from planner.recipes import PREFERENCE_COLUMNS, PROMPT_COLUMNS, RECIPES, recipe, sft_columns
from planner.specs import Method
from runners.data_shapes import kto_label, reserved_columns, shape_message, shape_of

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
    """Token lengths of whole rows (prompt + longest completion) as the method's trainer
    tokenizes them, and what it does with the rows at `max_length` (for methods that generate:
    the plan's prompt length, against which prompts are measured)."""

    min: int
    median: float
    p95: int
    max: int
    max_length: int | None
    truncated_rows: int
    truncation_rate: float
    dropped_rows: int = Field(0, description="rows the trainer removes before training")
    no_completion_rows: int = Field(0, description="rows left with no completion token")
    long_prompt_rows: int = Field(0, description="prompts longer than the planned prompt")
    max_prompt: int = Field(0, description="the longest prompt, in tokens")
    measured_rows: int = Field(description="rows tokenized (all, or an even sample)")
    estimated: bool = Field(
        False, description="the counts come from an even sample of measured_rows rows"
    )


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
    if _unpaired_by_trl(method, columns):
        return ["chosen", "rejected"]
    return list(recipe(method).columns)


def _unpaired_by_trl(method: Method, columns: list[str]) -> bool:
    """KTO given preference pairs: KTOTrainer splits each pair into a desirable and an
    undesirable row itself (`trl.data_utils.unpair_preference_dataset`)."""
    return (
        method is Method.kto
        and {"chosen", "rejected"} <= set(columns)
        and "completion" not in columns
    )


def _paired(method: Method, columns: list[str]) -> bool:
    """The trainer reads chosen/rejected pairs (extracting the prompt when there is none)."""
    return method in PREFERENCE or _unpaired_by_trl(method, columns)


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


def _published_shapes(rows: list[dict[str, Any]], method: Method) -> list[Problem]:
    """One error per published shape TRL does not read as is (ShareGPT from/value turns,
    LLaMA-Factory's preference and KTO files; `runners.data_shapes`), naming its rows."""
    found: dict[str, list[int]] = {}
    for number, row in enumerate(rows, 1):
        shape = shape_of(row)
        if shape is not None:
            found.setdefault(shape, []).append(number)
    return [
        Problem(
            severity="error",
            code=shape,
            message=shape_message(shape, method),
            rows=numbers if len(numbers) < len(rows) else [],
        )
        for shape, numbers in found.items()
    ]


def _rows(reference: str) -> list[dict[str, Any]]:
    """The rows of a dataset read where they lie (`planner.dataset_file.read_rows`): nothing
    is copied into the Hugging Face cache, as `datasets.load_dataset` would copy a whole file."""
    return read_rows(reference)


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
    shaped = _published_shapes(rows, method)
    if shaped:  # its columns and turns are not TRL's: the checks below would only echo that
        return PreflightReport(
            dataset=dataset,
            method=method,
            rows=len(rows),
            columns=columns,
            format="unknown",
            problems=shaped,
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
    if _paired(method, columns) and "prompt" not in columns and not missing:
        problems.append(
            Problem(
                severity="warning",
                code="implicit-prompt",
                message="no prompt column: TRL takes the common prefix of chosen and rejected",
            )
        )
    for names, why in reserved_columns(method, columns):
        problems.append(
            Problem(
                severity="error",
                code="reserved-column",
                message=f"column {names}: {why}; rename or drop it",
            )
        )
    text_columns = _text_columns(method, columns)

    # Plain or conversational, per row; a mix is an error (TRL formats the whole set one way).
    kinds: dict[int, str] = {}
    mixed_rows = []
    for number, row in enumerate(rows, 1):
        values = [row.get(c) for c in text_columns if row.get(c) is not None]
        conversational = [_is_conversation(v) for v in values]
        if values:
            kinds[number] = "conversational" if any(conversational) else "plain"
        if any(conversational) and any(isinstance(v, str) for v in values):
            mixed_rows.append(number)
    found = set(kinds.values())
    fmt = "unknown" if not found else found.pop() if len(found) == 1 else "mixed"
    if mixed_rows:
        fmt = "mixed"
        problems.append(
            Problem(
                severity="error",
                code="mixed-row",
                message="plain text and a conversation in one row: DPO, KTO, SFT and the reward "
                "trainer fail joining them (str + list); ORPO and SimPO drop the plain prompt "
                "and take one from chosen/rejected (maybe_extract_prompt); make every column "
                "plain text or every column a list of messages",
                rows=mixed_rows,
            )
        )
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
        read = [kto_label(row.get("label")) for row in rows]
        bad = [n for n, value in enumerate(read, 1) if value is None]
        if bad:
            problems.append(
                Problem(
                    severity="error",
                    code="bad-label",
                    message="KTO label must be true or false (or 1/0, or those as text)",
                    rows=bad,
                )
            )
        counts = {
            "desirable": sum(1 for value in read if value is True),
            "undesirable": sum(1 for value in read if value is False),
        }
        labels = {value for value in read if value is not None}
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
    if _paired(method, columns) and "prompt" not in columns and not missing:
        problems.extend(implicit_prompt_problems(rows))
    label_counts = counts if _labelled(method) and "label" in columns else {}
    if _unpaired_by_trl(method, columns) and not missing:
        label_counts = {"desirable": len(rows), "undesirable": len(rows)}
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


def implicit_prompt_problems(rows: list[dict[str, Any]]) -> list[Problem]:
    """What TRL's prompt extraction (`trl.data_utils.extract_prompt`: the longest common
    prefix of chosen and rejected, character by character for text) makes of rows with no
    prompt column: answers left empty (an error), and prefixes that end inside a word, so the
    prompt takes the start of both answers (counted, with an example)."""
    from runners.trl_rows import extract_prompt

    empty, cut, example = [], [], ""
    for number, row in enumerate(rows, 1):
        chosen, rejected = row.get("chosen"), row.get("rejected")
        if not isinstance(chosen, (str, list)) or type(chosen) is not type(rejected):
            continue  # mixed or malformed: reported by the format checks
        parts = extract_prompt({"chosen": chosen, "rejected": rejected})
        if _is_empty(parts["chosen"]) or _is_empty(parts["rejected"]):
            empty.append(number)
            continue
        prompt, answers = parts["prompt"], (parts["chosen"], parts["rejected"])
        if (
            isinstance(prompt, str)
            and prompt[-1:].isalnum()
            and any(a[:1].isalnum() for a in answers)
        ):
            cut.append(number)
            example = example or (
                f"row {number}: prompt …{prompt[-24:]!r}, chosen {parts['chosen'][:16]!r}…"
            )
    problems = []
    if empty:
        problems.append(
            Problem(
                severity="error",
                code="implicit-empty-completion",
                message="after TRL takes the shared start of chosen and rejected as the prompt, "
                "an answer is empty (one answer is the start of the other): no preference signal",
                rows=empty,
            )
        )
    if cut:
        problems.append(
            Problem(
                severity="warning",
                code="implicit-prompt-cuts-word",
                message=f"{len(cut)} rows' shared start ends inside a word, so TRL's prompt takes "
                f"the first letters of both answers ({example}); give an explicit prompt column",
                rows=cut,
            )
        )
    return problems


FATE_PROBLEMS = {
    Fate.dropped: ("warning", "dropped"),
    Fate.truncated: ("warning", "truncated"),
    Fate.no_completion: ("error", "no-completion-tokens"),
    Fate.long_prompt: ("warning", "long-prompts"),
}
"""Each fate the trainer gives a row other than keeping it whole, as (severity, problem code)."""


def _fate_message(fate: Fate, method: Method, count: int, share: float, limit: int) -> str:
    trainer = recipe(method).trainer.rsplit(":", 1)[-1]
    one = count == 1
    rows = f"{count} {'row' if one else 'rows'} ({share:.0%})"
    if fate is Fate.dropped:
        rule = recipe(method).length_rule.kind
        its, it_is = ("its", "it is") if one else ("their", "they are")
        why = {
            "drop-full-prompt": f"{its} prompt alone fills max length {limit} tokens",
            "drop-over-length": f"{it_is} longer than max length {limit} tokens",
            "drop-masked": f"no completion token is left within max length {limit} tokens",
        }[rule]
        return (
            f"{rows} will be dropped by {trainer}: {why} (raise --seq-len or shorten "
            f"{'it' if one else 'them'})"
        )
    if fate is Fate.truncated:
        return (
            f"{rows} {'is' if one else 'are'} longer than max length {limit} tokens: {trainer} "
            f"cuts {'its end' if one else 'their ends'}"
        )
    if fate is Fate.no_completion:
        return (
            f"{rows} {'keeps' if one else 'keep'} no completion tokens at max length {limit}: "
            f"{trainer} cuts the answers (never the prompt) to fit, and a mean over no tokens "
            f"makes the loss NaN; raise --seq-len, or shorten or drop {'it' if one else 'them'}"
        )
    return (
        f"{rows} {'has a prompt' if one else 'have prompts'} longer than the planned {limit} "
        f"tokens: {trainer} generates from the whole prompt (TRL truncates none), so memory "
        "and time grow past the plan; `advisor launch` sizes the plan for the longest prompt, "
        "or leaves such prompts out with --drop-long-prompts"
    )


def _token_checks(rows, method, fmt, tokenizer, max_length, problems) -> LengthStats | None:
    from runners.trl_rows import row_tokens

    if tokenizer.eos_token is None:
        problems.append(
            Problem(
                severity="error",
                code="no-eos",
                message="the tokenizer has no EOS token: generations never learn to stop",
            )
        )
        return None
    if fmt == "conversational" and not getattr(tokenizer, "chat_template", None):
        problems.append(
            Problem(
                severity="error",
                code="no-chat-template",
                message="conversational data needs tokenizer.chat_template; the tokenizer has none",
            )
        )
        return None
    rule = recipe(method).length_rule
    failed, sizes, prompts = [], [], []
    fates: dict[Fate, list[int]] = {fate: [] for fate in Fate}
    missing_eos = []
    step = max(1, len(rows) // TOKEN_SAMPLE)
    sample = [(number, rows[number - 1]) for number in range(1, len(rows) + 1, step)]
    for number, row in _quiet_transformers(sample):
        try:
            tokens = row_tokens(row, method, tokenizer)
        except Exception:  # jinja and TRL's helpers raise many kinds; the row is the defect
            failed.append(number)
            continue
        sizes.append(tokens.longest)
        prompts.append(tokens.prompt)
        fates[rule.fate(tokens, max_length)].append(number)
        if (
            fmt == "conversational"
            and method not in PROMPT_ONLY
            and not _ends_with_eos(row, method, tokenizer)
        ):
            missing_eos.append(number)
    if failed:
        problems.append(
            Problem(
                severity="error",
                code="template-fails",
                message="these rows cannot be tokenized as the trainer does (the chat template "
                "fails to render them, or a column holds the wrong kind of value)",
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
    if not sizes:
        return None
    measured = len(sizes)
    sampled = measured < len(rows)
    for fate, (severity, code) in FATE_PROBLEMS.items():
        numbers = fates[fate]
        if not numbers or max_length is None:
            continue
        message = _fate_message(fate, method, len(numbers), len(numbers) / measured, max_length)
        if sampled:
            message += f" — estimated from an even sample of {measured:,} of {len(rows):,} rows"
        problems.append(Problem(severity=severity, code=code, message=message, rows=numbers))
    lost = len(fates[Fate.dropped])
    if max_length is not None and lost == measured:
        where = "every sampled row" if sampled else "every row"
        problems.append(
            Problem(
                severity="error",
                code="every-row-dropped",
                message=f"{where} would be dropped at max length {max_length}: the trainer "
                "would have nothing to train on (raise --seq-len)",
            )
        )
    ordered = sorted(sizes)
    truncated = len(fates[Fate.truncated])
    return LengthStats(
        min=ordered[0],
        median=statistics.median(ordered),
        p95=ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        max=ordered[-1],
        max_length=max_length,
        truncated_rows=truncated,
        truncation_rate=round(truncated / measured, 4),
        dropped_rows=lost,
        no_completion_rows=len(fates[Fate.no_completion]),
        long_prompt_rows=len(fates[Fate.long_prompt]),
        max_prompt=max(prompts),
        measured_rows=measured,
        estimated=sampled,
    )


def _quiet_transformers(items):
    """Yield items with transformers' logging at errors only: its "longer than the specified
    maximum sequence length" warning is what the report says, in the report's own words."""
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield from items
    finally:
        logging.set_verbosity(verbosity)


def _ends_with_eos(row: dict[str, Any], method: Method, tokenizer) -> bool:
    """The last completion, rendered by the chat template after its prompt, ends with EOS."""
    last = row.get("messages")
    if last is None:
        answer = next((row[c] for c in ("chosen", "completion") if c in row), None)
        prompt = row.get("prompt")
        last = (list(prompt) if isinstance(prompt, list) else []) + list(answer or [])
    if not _is_conversation(last):
        return True
    text = tokenizer.apply_chat_template(last, tokenize=False)
    return text.rstrip().endswith(str(tokenizer.eos_token))


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
            f"max {stats.max}; max length {stats.max_length}: "
            f"truncated {stats.truncated_rows} ({stats.truncation_rate:.0%}), "
            f"dropped {stats.dropped_rows}"
            + (f", no completion {stats.no_completion_rows}" if stats.no_completion_rows else "")
            + (f", long prompts {stats.long_prompt_rows}" if stats.long_prompt_rows else "")
            + (
                f" (estimates from an even sample of {stats.measured_rows:,} rows)"
                if stats.estimated
                else ""
            )
        )
    for problem in report.problems:
        colour = "red" if problem.severity == "error" else "yellow"
        console.print(f"  [{colour}]{problem.severity}[/{colour}] {_plain(problem.describe())}")


def _plain(text: str) -> str:
    """Text from a user's file made safe to print: no Rich markup, no control characters."""
    from rich.markup import escape

    return escape("".join(c if c.isprintable() else "?" for c in text))

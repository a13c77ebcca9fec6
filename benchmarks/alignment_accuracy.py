"""Benchmark: `advisor plan` against measured alignment-loop runs (benchmarks/alignment_runs.yaml).

Each expressible row's flags are parsed by the `advisor plan` subcommand's own argparse and
estimated in-process, exactly as the CLI does. Memory rows compare the measured per-GPU GiB with
`memory.per_gpu_peak_gib` (what NVML shows), or with `memory.tensor_peak_gib` when the figure
came from torch.cuda.max_memory_allocated. Fit rows compare "it ran" / "out of memory" with
`plan.fits`. Rows the CLI cannot express are listed, not scored, and so are statements that another row's
measurement of the same per-GPU setup contradicts (`contradicted_by`; that row is scored).

Usage: python benchmarks/alignment_accuracy.py [--json] [--check] [--data PATH]
  --json   print the summary as JSON
  --check  exit 1 unless the median absolute error is <= 15% and every expressible fit
           statement is called right (otherwise the exit status is 0 whenever it ran)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DATA = Path(__file__).with_name("alignment_runs.yaml")
PRECISIONS = ("bf16-mixed", "bf16-true", "fp16-mixed", "fp32")
MEASURED_BY = ("allocated", "reserved", "nvidia-smi", "unknown")
KINDS = ("memory", "fit")
REQUIRED = ("id", "method", "kind", "flags", "precision", "source", "quote", "inferred")
TOLERANCE_PCT = 15.0


class FlagError(ValueError):
    """The plan subcommand's argparse rejected a row's flags."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        raise FlagError(message)


def plan_parser() -> argparse.ArgumentParser:
    """The `advisor plan` subcommand's parser, raising instead of exiting."""
    from advisor.commands import plan as plan_command

    parser = _Parser(prog="advisor plan", add_help=False)
    plan_command.register(parser)
    return parser


def precision_choices(parser: argparse.ArgumentParser) -> tuple[str, ...] | None:
    action = parser._option_string_actions.get("--precision")  # argparse has no public lookup
    return tuple(action.choices) if action is not None and action.choices else None


def row_problems(row: dict[str, Any]) -> list[str]:
    """What a row lacks or gets wrong in form (not in content)."""
    problems = [f"missing {key}" for key in REQUIRED if not row.get(key)]
    if "expressible" not in row or not isinstance(row.get("expressible"), bool):
        problems.append("expressible must be true or false")
    if row.get("kind") not in KINDS:
        problems.append(f"kind must be one of {KINDS}")
    if row.get("precision") not in PRECISIONS:
        problems.append(f"precision must be one of {PRECISIONS}")
    if not str(row.get("source", "")).startswith("https://"):
        problems.append("source must be an https URL")
    if row.get("kind") == "memory":
        if not isinstance(row.get("measured_gib"), int | float) or row["measured_gib"] <= 0:
            problems.append("memory rows need a positive measured_gib")
        if row.get("measured_by") not in MEASURED_BY:
            problems.append(f"measured_by must be one of {MEASURED_BY}")
    if row.get("kind") == "fit" and not isinstance(row.get("fits"), bool):
        problems.append("fit rows need fits: true|false")
    if row.get("expressible") is False and not row.get("excluded_because"):
        problems.append("a row that is not expressible needs excluded_because")
    if row.get("contradicted_by") and not row.get("excluded_because"):
        problems.append("a contradicted row needs excluded_because (what contradicts it)")
    if "--precision" in str(row.get("flags", "")).split():
        problems.append("precision goes in the precision field, not in flags")
    return problems


def load_rows(path: Path = DATA) -> list[dict[str, Any]]:
    rows = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(rows, list):
        raise SystemExit(f"{path}: expected a YAML list of rows")
    return rows


def request_for(row: dict[str, Any], parser: argparse.ArgumentParser | None = None):
    """(PlanRequest, note) for a row: its flags plus --precision, parsed as the CLI parses them.

    The note says when the installed CLI does not know the row's precision and the flag was
    left out (the request then carries the CLI's default precision)."""
    from advisor.commands.plan import request_from_args

    parser = parser or plan_parser()
    argv = str(row["flags"]).split()
    note = None
    precision = row.get("precision")
    choices = precision_choices(parser)
    if precision and (choices is None or precision in choices):
        argv += ["--precision", precision]
    elif precision:
        note = (
            f"--precision {precision} not accepted by this CLI (choices {list(choices)}): omitted"
        )
    args = parser.parse_args(argv)
    return request_from_args(args), note


@dataclass
class Result:
    id: str
    method: str
    kind: str
    expressible: bool
    measured_gib: float | None = None
    measured_by: str | None = None
    compared: str | None = None
    estimated_gib: float | None = None
    error_pct: float | None = None
    statement_fits: bool | None = None
    verdict_fits: bool | None = None
    right: bool | None = None
    excluded_because: str | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


def evaluate(row: dict[str, Any], parser: argparse.ArgumentParser) -> Result:
    from planner.plan import estimate

    result = Result(
        id=str(row.get("id", "?")),
        method=str(row.get("method", "?")),
        kind=str(row.get("kind", "?")),
        expressible=bool(row.get("expressible")),
        measured_gib=row.get("measured_gib"),
        measured_by=row.get("measured_by"),
        statement_fits=row.get("fits"),
    )
    problems = row_problems(row)
    if problems:
        result.error = "; ".join(problems)
        return result
    if not result.expressible or row.get("contradicted_by"):
        # Not expressible, or refuted by another row's measurement of the same per-GPU setup
        # (both are kept in the file; the contradicting row is scored).
        result.excluded_because = str(row["excluded_because"])
        return result
    try:
        request, note = request_for(row, parser)
        if note:
            result.notes.append(note)
        plan = estimate(request)
    except Exception as error:  # one bad row must not stop the run
        result.error = f"{type(error).__name__}: {error}".splitlines()[0]
        return result
    memory = plan.memory
    if result.kind == "memory":
        allocated = result.measured_by == "allocated"
        result.compared = "tensor_peak" if allocated else "per_gpu_peak"
        result.estimated_gib = memory.tensor_peak_gib if allocated else memory.per_gpu_peak_gib
        measured = float(result.measured_gib or 0)
        result.error_pct = 100.0 * (result.estimated_gib - measured) / measured
    else:
        result.estimated_gib = memory.per_gpu_peak_gib
        result.compared = "per_gpu_peak"
        result.verdict_fits = bool(plan.fits)
        result.right = result.verdict_fits == result.statement_fits
    return result


def summarise(results: list[Result]) -> dict[str, Any]:
    scored_memory = [r for r in results if r.kind == "memory" and r.error_pct is not None]
    errors = [abs(r.error_pct) for r in scored_memory if r.error_pct is not None]
    fit_rows = [r for r in results if r.kind == "fit" and r.expressible and not r.excluded_because]
    fit_scored = [r for r in fit_rows if r.right is not None]
    median = statistics.median(errors) if errors else None
    return {
        "rows": len(results),
        "memory_rows_scored": len(scored_memory),
        "median_abs_error_pct": round(median, 1) if median is not None else None,
        "within_15pct": sum(e <= TOLERANCE_PCT for e in errors),
        "fit_statements_right": sum(bool(r.right) for r in fit_scored),
        "fit_statements_total": len(fit_rows),
        "excluded": [
            {"id": r.id, "reason": r.excluded_because} for r in results if r.excluded_because
        ],
        "errors": [{"id": r.id, "error": r.error} for r in results if r.error],
        "notes": [{"id": r.id, "note": n} for r in results for n in r.notes],
        "results": [asdict(r) for r in results],
    }


def passes(summary: dict[str, Any]) -> bool:
    median = summary["median_abs_error_pct"]
    return (
        median is not None
        and median <= TOLERANCE_PCT
        and summary["fit_statements_right"] == summary["fit_statements_total"]
    )


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def print_table(summary: dict[str, Any]) -> None:
    header = (
        f"{'id':42} {'method':6} {'measured':>9} {'estimate':>9} {'err %':>7} "
        f"{'compared':12} {'statement':10} {'verdict':8}"
    )
    print(header)
    print("-" * len(header))
    for r in summary["results"]:
        if r["excluded_because"] or r["error"]:
            continue
        if r["kind"] == "memory":
            statement = verdict = ""
            err = _fmt(r["error_pct"], "+.1f")
        else:
            statement = "fits" if r["statement_fits"] else "OOM"
            verdict = ("fits" if r["verdict_fits"] else "OOM") + (" ✓" if r["right"] else " ✗")
            err = ""
        print(
            f"{r['id'][:42]:42} {r['method']:6} {_fmt(r['measured_gib'], '.1f'):>9} "
            f"{_fmt(r['estimated_gib'], '.1f'):>9} {err:>7} {r['compared'] or '':12} "
            f"{statement:10} {verdict:8}"
        )
    for note in summary["notes"]:
        print(f"note: {note['id']}: {note['note']}")
    for problem in summary["errors"]:
        print(f"error: {problem['id']}: {problem['error']}")
    median = summary["median_abs_error_pct"]
    print()
    print(
        f"memory rows scored: {summary['memory_rows_scored']}; median |error| "
        f"{_fmt(median, '.1f')}%; within {TOLERANCE_PCT:g}%: {summary['within_15pct']}"
        f"/{summary['memory_rows_scored']}"
    )
    print(
        f"fit statements called right: {summary['fit_statements_right']}"
        f"/{summary['fit_statements_total']}"
    )
    print(f"excluded (not expressible or contradicted; not scored): {len(summary['excluded'])}")
    for row in summary["excluded"]:
        print(f"  {row['id']}: {row['reason']}")


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    cli.add_argument("--json", action="store_true", help="print the summary as JSON")
    cli.add_argument("--check", action="store_true", help="exit 1 unless the targets are met")
    cli.add_argument("--data", type=Path, default=DATA, help="the runs file (YAML list)")
    options = cli.parse_args(argv)
    parser = plan_parser()
    results = [evaluate(row, parser) for row in load_rows(options.data)]
    summary = summarise(results)
    if options.json:
        sys.stdout.write(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    else:
        print_table(summary)
    if options.check and not passes(summary):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`advisor validate`: a short real run that measures what `advisor plan` estimated.

It launches the planned setup for a few optimizer steps (the same run folder as `advisor
launch`: manifest, metrics.jsonl, NVML samples in gpu.jsonl) and prints estimated against
measured peak memory per GPU and seconds per step, from the run's validation.json.
"""

from __future__ import annotations

import argparse

from planner.errors import InputError

REFUSED = ("dry_run", "resume")
"""launch's flags that validate takes only to refuse them (see `run`): kept off its --help."""


def register(parser: argparse.ArgumentParser) -> None:
    from advisor.commands import launch

    launch.register(parser)
    parser.set_defaults(max_steps=10, output="runs/validate", quiet=True)
    # Still parsed, so that `run` can say why each is refused, but not offered in --help.
    for action in parser._actions:
        if action.dest in REFUSED:
            action.help = argparse.SUPPRESS


def run(args: argparse.Namespace) -> int:
    from advisor.commands import launch

    if args.dry_run:
        raise InputError("validate measures a real run: drop --dry-run (or use advisor launch)")
    if args.resume:
        raise InputError("validate starts a fresh short run: drop --resume")
    found = launch.launched(args)
    rc = launch.emit(found, args.json)
    if found.validation is None:
        return rc or 1
    print_validation(found.validation.model_dump(mode="json"))
    return rc


def _ratio(measured: float | None, estimated: float | None) -> str:
    if not measured or not estimated:
        return "—"
    return f"{measured / estimated:.2f}×"


def print_validation(record: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    # A CPU run's numbers say nothing about the plan's GPU: no ratio is printed for them.
    comparable = record.get("comparable", True)
    table = Table(title=f"Estimated vs measured ({record['device']}, {record['steps']} steps)")
    columns = ["quantity", "estimated", "measured"]
    for column in columns + (["measured / estimated"] if comparable else []):
        table.add_column(column)
    memory = [
        "peak memory per GPU (GiB)",
        f"{record['estimated_peak_gib']}",
        f"{record['measured_peak_gib'] if record['measured_peak_gib'] is not None else '— (no NVML)'}",
    ]
    step = [
        "seconds per step",
        f"{record['estimated_step_seconds']}",
        f"{record['measured_step_seconds']}",
    ]
    if comparable:
        memory.append(_ratio(record["measured_peak_gib"], record["estimated_peak_gib"]))
        step.append(_ratio(record["measured_step_seconds"], record["estimated_step_seconds"]))
    table.add_row(*memory)
    table.add_row(*step)
    console = Console()
    console.print(table)
    if record.get("measured_by"):
        console.print(
            f"how the peak memory was measured: {record['measured_by']}", style="dim", markup=False
        )
    for key in ("memory_note", "note"):
        if record.get(key):
            console.print(record[key], style="yellow", markup=False)

"""`advisor validate`: a short real run that measures what `advisor plan` estimated.

It launches the planned setup for a few optimizer steps (the same run folder as `advisor
launch`: manifest, metrics.jsonl, NVML samples in gpu.jsonl, each rank's PyTorch peaks in
memory/) and prints estimated against measured memory layer by layer — PyTorch's allocated
tensors, its reserved memory, NVML's per-GPU peak — and seconds per step, from the run's
validation.json. On CPU it counts the tensors of one training step and compares them with the
plan of the run as it trains there.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator

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
    with _measuring_tensors():
        found = launch.launched(args)
    rc = launch.emit(found, args.json)
    if found.validation is None:
        return rc or 1
    print_validation(found.validation.model_dump(mode="json"))
    return rc


@contextlib.contextmanager
def _measuring_tensors() -> Iterator[None]:
    """Ask the training (its environment) to count one step's tensors when it runs on CPU."""
    from runners.rank_memory import MEASURE_TENSORS

    before = os.environ.get(MEASURE_TENSORS)
    os.environ[MEASURE_TENSORS] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ[MEASURE_TENSORS]
        else:
            os.environ[MEASURE_TENSORS] = before


def _ratio(measured: float | None, estimated: float | None) -> str:
    if not measured or not estimated:
        return "—"
    return f"{measured / estimated:.2f}×"


def _size(gib: float | None) -> str:
    """GiB, or MiB below one GiB (a demo model's tensors are a few MiB)."""
    if gib is None:
        return "—"
    return f"{gib:.2f} GiB" if gib >= 1 else f"{gib * 1024:.1f} MiB"


def print_validation(record: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    # A CPU run's numbers say nothing about the plan's GPU: only the tensors it counted against
    # the plan of the run as it trained there get a ratio.
    comparable = record.get("comparable", True)
    layers = record.get("memory_layers") or []
    table = Table(title=f"Estimated vs measured ({record['device']}, {record['steps']} steps)")
    ratios = comparable or any(layer.get("ratio") for layer in layers)
    for column in ["quantity", "estimated", "measured"] + (["measured / estimated"] * ratios):
        table.add_column(column)
    rows = [
        [layer["label"], _size(layer["estimated_gib"]), _size(layer["measured_gib"])]
        + ([f"{layer['ratio']:.2f}×" if layer.get("ratio") else "—"] * ratios)
        for layer in layers
    ]
    if not any(layer["layer"] == "nvml" for layer in layers):  # not measured: say why
        measured = record["measured_peak_gib"]
        rows.append(
            [
                "peak memory per GPU (GiB)",
                f"{record['estimated_peak_gib']}",
                f"{measured if measured is not None else '— (no NVML)'}",
            ]
            + ([_ratio(measured, record["estimated_peak_gib"])] * comparable)
            + (["—"] * (ratios and not comparable))
        )
    rows.append(
        [
            "seconds per step",
            f"{record['estimated_step_seconds']}",
            f"{record['measured_step_seconds']}",
        ]
        + ([_ratio(record["measured_step_seconds"], record["estimated_step_seconds"])] * comparable)
        + (["—"] * (ratios and not comparable))
    )
    for row in rows:
        table.add_row(*row)
    console = Console()
    console.print(table)
    said = {"tensors": "tensor peak", "tensors_at_batch_length": "  at the batch's real length"}
    for layer in layers:
        if layer["layer"] in said and layer.get("ratio"):
            console.print(
                f"{said[layer['layer']]}: estimated {_size(layer['estimated_gib'])}, measured "
                f"{_size(layer['measured_gib'])} ({layer['ratio']:.2f}×)",
                markup=False,
            )
    if record.get("measured_by"):
        console.print(
            f"how the peak memory was measured: {record['measured_by']}", style="dim", markup=False
        )
    for key in ("memory_note", "note"):
        if record.get(key):
            console.print(record[key], style="yellow", markup=False)

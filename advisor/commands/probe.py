"""`advisor probe`: the NVIDIA GPUs (and MIG instances) NVML sees, or a clear answer that there
are none. A GPU that fails to answer is listed with NVML's error; the others as usual."""

from __future__ import annotations

import argparse
import sys

from planner.constants import GIB


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the probe as JSON")


def _row(device) -> tuple[str, ...]:
    """One table row: where, what, which profile, memory, and what NVML said."""
    from rich.markup import escape

    where = str(device.index) if device.parent is None else f"{device.parent} MIG {device.index}"
    if device.parent is not None:
        profile = "— (a MIG slice of its GPU)"
    else:
        profile = device.profile or "— (no profile: add one in profiles/gpus/)"
    memory = device.memory
    used = f"{memory.used / GIB:.2f}" if memory else "—"
    total = f"{memory.total / GIB:.2f}" if memory else "—"
    if device.error:
        note = f"[red]{escape(device.error)}[/red]"
    elif device.mig_enabled:
        note = "MIG on: its instances follow" if memory else "MIG on"
    else:
        note = ""
    if device.error and memory is None:
        profile = "—"
    return where, escape(device.name or "(could not be read)"), profile, used, total, note


def run(args: argparse.Namespace) -> int:
    from planner.nvml import probe

    result = probe()
    if args.json:
        sys.stdout.write(result.model_dump_json() + "\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not result.available:
        console.print(result.reason, markup=False)
        console.print("Plan for a card by name instead: advisor plan --gpu a100-80gb ...")
        if not result.devices:
            return 0
    table = Table(title=f"NVIDIA GPUs (driver {result.driver_version or 'unknown'})")
    for column in ("#", "name", "profile", "used GiB", "total GiB", "note"):
        table.add_column(column)
    for device in result.devices:
        table.add_row(*_row(device))
    console.print(table)
    return 0

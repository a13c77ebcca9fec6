"""`advisor probe`: the NVIDIA GPUs NVML sees, or a clear answer that there are none."""

from __future__ import annotations

import argparse
import sys


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the probe as JSON")


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
        console.print(result.reason)
        console.print("Plan for a card by name instead: advisor plan --gpu a100-80gb ...")
        return 0
    table = Table(title=f"NVIDIA GPUs (driver {result.driver_version})")
    for column in ("#", "name", "profile", "used GiB", "total GiB"):
        table.add_column(column)
    gib = 2**30
    for device in result.devices:
        table.add_row(
            str(device.index),
            device.name,
            device.profile or "— (no profile: add one in profiles/gpus/)",
            f"{device.memory.used / gib:.2f}",
            f"{device.memory.total / gib:.2f}",
        )
    console.print(table)
    return 0

"""Rich rendering of the calibration store: one row per GPU, software stack and layout."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text


def calibration_table(store: str, rows: list[dict[str, Any]]) -> Table:
    """GPU, stack, runs, correction and spread (GiB) of each group in `store`."""
    table = Table(title=f"Calibration store {store}", title_justify="left")
    for column in ("GPU", "stack", "runs", "correction GiB", "spread GiB"):
        table.add_column(column, justify="right" if "GiB" in column or column == "runs" else "left")
    for row in rows:
        gpu = row["gpu"] + (" (multi-GPU)" if row["multi_gpu"] else "")
        table.add_row(
            Text(gpu),
            Text(row["stack"]),
            str(row["runs"]),
            f"{row['correction_gib']:+.2f}",
            f"± {row['spread_gib']:.2f}",
        )
    return table


def print_calibration(
    store: str, rows: list[dict[str, Any]], console: Console | None = None
) -> None:
    console = console or Console()
    if not rows:
        console.print(
            Text(
                f"No measured runs in {store} yet: plans use the runtime overhead of "
                "profiles/constants.toml. Every GPU run of `advisor validate` or `advisor launch` "
                "adds one."
            )
        )
        return
    console.print(calibration_table(store, rows))
    console.print(
        Text(
            "Plans for these GPUs add the correction to their runtime overhead only (CUDA "
            "context, workspaces, allocator slack); the tensor estimate is not changed.",
            style="dim",
        )
    )

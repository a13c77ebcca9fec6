"""Rich rendering of `advisor preflight`: a table per node, the all-reduce, one verdict."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from planner.constants import GIB


def _gib(value: int | None) -> str:
    return "—" if value is None else f"{value / GIB:.1f}"


def node_table(node: int, records, per_gpu_peak_gib: float | None) -> Table:
    """One row per rank of a node: host, device, GPU free / total memory, host memory."""
    host = records[0].hostname if records else "?"
    table = Table(title=f"node {node} ({host})", title_justify="left")
    for column in ("rank", "local", "device", "GPU free / total GiB", "host available GiB"):
        table.add_column(column, justify="left" if column == "device" else "right")
    for record in records:
        gpu = record.gpu
        if gpu is None:
            device, memory = "CPU", "—"
        else:
            device = f"GPU {gpu.index} {gpu.name}"
            memory = f"{_gib(gpu.free_bytes)} / {_gib(gpu.total_bytes)}"
            if per_gpu_peak_gib is not None and gpu.free_bytes is not None:
                short = gpu.free_bytes / GIB < per_gpu_peak_gib
                memory = f"[red]{memory}[/red]" if short else memory
        table.add_row(
            str(record.rank),
            str(record.local_rank),
            Text(device),
            memory,
            _gib(record.host_available_bytes),
        )
    return table


def all_reduce_table(report) -> Table:
    """Each timed size: time, algorithm and bus bandwidth (nccl-tests' definitions)."""
    table = Table(
        title=f"all-reduce over {report.world_size} ranks ({report.backend})", title_justify="left"
    )
    for column in ("size", "time ms", "algbw GB/s", "busbw GB/s", "sums"):
        table.add_column(column, justify="right")
    for size in report.all_reduce:
        table.add_row(
            f"{size.bytes / 2**20:g} MiB",
            f"{size.seconds * 1e3:.2f}",
            f"{size.algbw_gbps:.2f}",
            f"{size.busbw_gbps:.2f}",
            "right" if size.correct else "[red]wrong[/red]",
        )
    return table


def versions_line(records) -> Text:
    """The versions every rank shares (differences are listed as problems)."""
    if not records:
        return Text("")
    shared = dict(records[0].versions)
    for record in records[1:]:
        shared = {k: v for k, v in shared.items() if record.versions.get(k) == v}
    return Text("versions on every rank: " + ", ".join(f"{k} {v}" for k, v in shared.items()))


def print_cluster_report(report, console: Console | None = None) -> None:
    """The tables, the notes and the verdict line with each problem on a line of its own."""
    console = console or Console()
    console.print(
        Text(
            f"cluster check of {report.run_dir}: {report.nodes} node(s) × "
            f"{report.processes_per_node} process(es), rendezvous {report.rendezvous}"
        ),
        soft_wrap=True,
    )
    nodes: dict[int, list] = {}
    for record in sorted(report.records, key=lambda r: r.rank):
        nodes.setdefault(record.node_rank, []).append(record)
    for node, records in sorted(nodes.items()):
        console.print(node_table(node, records, report.per_gpu_peak_gib))
    if report.records:
        console.print(versions_line(report.records), soft_wrap=True)
    if report.all_reduce:
        console.print(all_reduce_table(report))
    for note in report.notes:
        console.print(Text(f"  note: {note}", style="dim"), soft_wrap=True)
    if report.ok:
        console.print(Text("verdict: ok", style="bold green"))
        return
    console.print(Text(f"verdict: {len(report.problems)} problem(s)", style="bold red"))
    for problem in report.problems:
        console.print(Text(f"  - {problem}"), soft_wrap=True)  # one line each, for grep

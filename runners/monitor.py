"""Running the training child process and showing it live: a Rich progress bar with ETA and the
method's key metrics, read from the run folder's progress.json and metrics.jsonl."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from planner.specs import Method

KEY_METRICS: dict[Method, tuple[str, ...]] = {
    Method.sft: ("loss", "mean_token_accuracy"),
    Method.dpo: ("loss", "rewards/margins", "rewards/accuracies"),
    Method.kto: ("loss", "kl", "rewards/chosen"),
    Method.orpo: ("loss", "nll_loss", "log_odds_ratio"),
    Method.simpo: ("loss", "rewards/margins", "rewards/accuracies"),
    Method.reward: ("loss", "accuracy", "margin"),
    Method.grpo: ("reward", "reward_std", "completions/mean_length"),
    Method.rloo: ("reward", "kl", "completions/mean_length"),
    Method.ppo: ("objective/rlhf_reward", "objective/kl", "loss/policy_avg"),
}
"""What the live view shows per method, and what a run's metrics.jsonl must hold."""

CHILD_ENV = {
    "TRL_EXPERIMENTAL_SILENCE": "1",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: offline, quiet TRL, and the project importable."""
    env = {**os.environ, **CHILD_ENV, **(extra or {})}
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


class MetricsTail:
    """New records of a growing metrics.jsonl, read incrementally."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.latest: dict[str, Any] = {}

    def poll(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        with self.path.open(encoding="utf-8") as handle:
            handle.seek(self.offset)
            text = handle.read()
        complete = text[: text.rfind("\n") + 1]
        self.offset += len(complete.encode("utf-8"))
        records = []
        for line in complete.splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        for record in records:
            self.latest.update(record)
        return records


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def metrics_line(method: Method, latest: dict[str, Any]) -> str:
    """`loss 0.693  rewards/margins 0.01 ...` for the method's key metrics seen so far."""
    shown = [f"{k} {_format(latest[k])}" for k in KEY_METRICS[method] if k in latest]
    return "  ".join(shown) or "waiting for the first log…"


def _signal_group(pgid: int, signum: int) -> None:
    """Signal the child's whole process group (launcher and ranks); gone already is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_child(
    command: list[str],
    run_dir: Path,
    method: Method,
    *,
    env: dict[str, str] | None = None,
    console=None,
    show: bool = True,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    on_tick: Callable[[], None] | None = None,
    status: Callable[[], str] | None = None,
) -> int:
    """Run command (output to run_dir/train.log) with a live view; Ctrl-C asks the child to
    save and stop, a second Ctrl-C kills it. Returns the child's exit status."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = console or Console(stderr=True)
    log = (run_dir / "train.log").open("ab")
    process = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        # PYTHONPATH holds the project, so cwd stays the user's (their module:function rewards).
        env=env or child_env(),
        start_new_session=True,  # Ctrl-C reaches us only; we forward it to the whole group
    )
    tail = MetricsTail(run_dir / "metrics.jsonl")
    progress = Progress(
        TextColumn(f"[bold]{method.value}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[metrics]}"),
        console=console,
        disable=not show,
    )
    task = progress.add_task("train", total=None, metrics="starting…")
    stopping = False
    with progress:
        while True:
            try:
                ticks = 0
                while process.poll() is None:
                    _refresh(progress, task, run_dir, tail, method, on_record, status)
                    if on_tick is not None and ticks % 5 == 0:
                        on_tick()  # about once a second
                    ticks += 1
                    time.sleep(0.2)
                break
            except KeyboardInterrupt:
                if stopping:
                    _signal_group(process.pid, signal.SIGKILL)
                    break
                stopping = True
                console.print("stopping: saving a checkpoint (Ctrl-C again to kill)…")
                _signal_group(process.pid, signal.SIGINT)
        _refresh(progress, task, run_dir, tail, method, on_record, status)
    deadline = time.time() + 60
    while _group_alive(process.pid) and time.time() < deadline:
        time.sleep(0.1)  # the launcher may exit before the rank that is still saving
    log.close()
    return 130 if stopping and process.returncode != 0 else process.returncode


def _refresh(
    progress, task, run_dir: Path, tail: MetricsTail, method: Method, on_record, status=None
) -> None:
    state = _read_json(run_dir / "progress.json")
    for record in tail.poll():
        if on_record is not None:
            on_record(record)
    line = metrics_line(method, tail.latest)
    extra = status() if status is not None else ""
    fields: dict[str, Any] = {"metrics": f"{line}  {extra}" if extra else line}
    if state and state.get("max_steps"):
        fields["total"] = state["max_steps"]
        fields["completed"] = state["step"]
    progress.update(task, **fields)


def summary_table(method: Method, records: list[dict[str, Any]]):
    """A Rich table of the method's key metrics at the first and the last logged step."""
    from rich.table import Table

    logged = [r for r in records if any(k in r for k in KEY_METRICS[method])]
    table = Table(title=f"{method.value}: key metrics", title_justify="left")
    table.add_column("metric")
    if not logged:
        return table
    first, last = logged[0], logged[-1]
    table.add_column(f"step {first.get('step', '?')}", justify="right")
    table.add_column(f"step {last.get('step', '?')}", justify="right")
    for key in KEY_METRICS[method]:
        if key in first or key in last:
            table.add_row(key, _format(first.get(key, "")), _format(last.get(key, "")))
    return table

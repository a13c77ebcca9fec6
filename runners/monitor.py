"""Running the training child process and showing it live: a Rich progress bar with ETA and the
method's key metrics, read from the run folder's progress.json and metrics.jsonl."""

from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from planner.recipes import RECIPES
from planner.specs import Method
from runners.lifecycle import CHILD_ENV, EXIT_STOPPED, LAUNCHER_PID, read_progress

KEY_METRICS: dict[Method, tuple[str, ...]] = {m: r.key_metrics for m, r in RECIPES.items()}
"""What the live view shows per method, and what a run's metrics.jsonl must hold: each
recipe's `key_metrics`."""


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: offline, quiet TRL, the project importable, and this process
    named as the launcher whose death stops the trainer."""
    env = {**os.environ, **CHILD_ENV, LAUNCHER_PID: str(os.getpid()), **(extra or {})}
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


CORE_LIBRARIES = (
    "accelerate",
    "torch",
    "transformers",
    "trl",
    "peft",
    "datasets",
    "tokenizers",
    "safetensors",
    "huggingface_hub",
    "runners",
)
"""What the training process imports; `python -m` puts the working folder first on its path."""


def shadowed_libraries(folder: Path) -> list[str]:
    """Files or packages in `folder` that the training process would import in place of a
    core library (a stray `accelerate/` or `trl.py`), as `accelerate/`-style names."""
    import importlib.machinery
    import importlib.util
    import sys

    folder = Path(folder).resolve()
    elsewhere = [p for p in sys.path if p not in ("", ".") and Path(p).resolve() != folder]
    shadowed = []
    for name in CORE_LIBRARIES:
        local = importlib.machinery.PathFinder.find_spec(name, [str(folder)])
        if local is None or local.origin is None:  # nothing, or a bare namespace folder
            continue
        saved, sys.path[:] = sys.path[:], elsewhere
        try:
            real = importlib.util.find_spec(name)  # where it resolves without this folder
        except (ImportError, ValueError):
            real = None
        finally:
            sys.path[:] = saved
        if real is None or real.origin != local.origin:
            is_package = local.submodule_search_locations is not None
            shadowed.append(f"{name}/" if is_package else Path(local.origin).name)
    return shadowed


def median_step_seconds(step_times: dict[int, float]) -> float | None:
    """Median wall time per step between logged steps (None before two steps): the first
    step's start-up and a slow save or evaluation do not skew it as an average would."""
    steps = sorted(step_times)
    gaps = [
        (step_times[b] - step_times[a]) / (b - a) for a, b in itertools.pairwise(steps) if b > a
    ]
    return statistics.median(gaps) if gaps else None


class MetricsTail:
    """New records of a growing metrics.jsonl, read incrementally, with the time each step
    was logged at (for the ETA)."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.inode: int | None = None
        self.latest: dict[str, Any] = {}
        self.step_times: dict[int, float] = {}

    def eta_seconds(self, step: int, max_steps: int | None) -> float | None:
        """Time left at the median step time, when the total and two steps are known."""
        per_step = median_step_seconds(self.step_times)
        if per_step is None or not max_steps:
            return None
        return max(0.0, (max_steps - step) * per_step)

    def poll(self) -> list[dict[str, Any]]:
        try:
            handle = self.path.open(encoding="utf-8", errors="replace")
        except OSError:
            return []
        with handle:
            inode = os.fstat(handle.fileno()).st_ino
            if inode != self.inode:  # a resume rewrote the file without the redone steps
                self.inode, self.offset = inode, 0
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
            if isinstance(record.get("step"), int) and isinstance(record.get("time"), int | float):
                self.step_times.setdefault(record["step"], float(record["time"]))
        return records


NOT_FINITE = "nan/inf"
"""How a metric shows when metrics.jsonl holds null for it: the trainer logged NaN or infinity."""


def format_metric(value: Any) -> str:
    """A logged value as the live views show it: 4 significant digits, null as NOT_FINITE."""
    if value is None:
        return NOT_FINITE
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def metrics_line(method: Method, latest: dict[str, Any]) -> str:
    """`loss 0.693  rewards/margins 0.01 ...` for the method's key metrics seen so far."""
    shown = [f"{k} {format_metric(latest[k])}" for k in KEY_METRICS[method] if k in latest]
    return "  ".join(shown) or "waiting for the first log…"


def is_trainer(cmdline: list[str]) -> bool:
    """Whether a command line is a training rank: Python running the module `runners.train`
    (the launchers name it too, but as an argument after their own `-m` module)."""
    module = cmdline.index("-m") + 1 if "-m" in cmdline else len(cmdline)
    return cmdline[module : module + 1] == ["runners.train"]


def trainer_processes(launcher_pid: int) -> list[int]:
    """PIDs of the training ranks under a launcher (accelerate's, torchrun's, or the trainer
    itself)."""
    import psutil

    try:
        launcher = psutil.Process(launcher_pid)
        candidates = [launcher, *launcher.children(recursive=True)]
    except psutil.Error:
        return []
    ranks = []
    for process in candidates:
        try:
            if is_trainer(process.cmdline()):
                ranks.append(process.pid)
        except psutil.Error:
            continue
    return ranks


def ask_to_stop(launcher_pid: int) -> None:
    """Ask the training ranks to save and stop. The ranks are signalled, not the launcher:
    accelerate's launcher answers a signal by killing its child after 5 s, too soon for a
    large checkpoint. Before the ranks exist, the launcher itself is signalled."""
    for pid in trainer_processes(launcher_pid) or [launcher_pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)


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
    """Run command (output to run_dir/train.log) with a live view. Ctrl-C or SIGTERM asks the
    training ranks to save and stop, a second Ctrl-C kills them. Returns the child's exit
    status, or 130 (EXIT_STOPPED) when it stopped on request."""
    from rich.console import Console

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
    progress = live_progress(method, console, show)
    task = progress.add_task("train", total=None, metrics="starting…", eta="-:--:--")
    stopping = False
    previous_sigterm = _sigterm_as_ctrl_c()
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
                ask_to_stop(process.pid)
        _refresh(progress, task, run_dir, tail, method, on_record, status)
    if previous_sigterm is not None:
        signal.signal(signal.SIGTERM, previous_sigterm)
    deadline = time.time() + 60
    while _group_alive(process.pid) and time.time() < deadline:
        time.sleep(0.1)  # the launcher may exit before the rank that is still saving
    log.close()
    stopped = read_progress(run_dir).get("state") == "stopped"
    if process.returncode != 0 and (stopping or stopped):
        return EXIT_STOPPED
    return process.returncode


def live_progress(method: Method, console, show: bool = True):
    """The one-line live view: method, bar, steps, elapsed, ETA (`MetricsTail.eta_seconds`)
    and the key metrics, which are cut first when the terminal is narrow."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Column

    return Progress(
        TextColumn(f"[bold]{method.value}", table_column=Column(no_wrap=True)),
        BarColumn(bar_width=16),
        TextColumn("{task.completed}/{task.total} steps", table_column=Column(no_wrap=True)),
        TimeElapsedColumn(table_column=Column(no_wrap=True, min_width=7)),
        TextColumn("ETA {task.fields[eta]}", table_column=Column(no_wrap=True, min_width=11)),
        TextColumn(
            "{task.fields[metrics]}",
            table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1),
        ),
        console=console,
        disable=not show,
        expand=True,  # the metrics column takes what is left, and only it is cut
    )


def _sigterm_as_ctrl_c():
    """While a run is followed, SIGTERM (a scheduler, the wizard leaving) stops it as Ctrl-C
    does; returns the previous handler (None off the main thread, where none can be set)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def _refresh(
    progress, task, run_dir: Path, tail: MetricsTail, method: Method, on_record, status=None
) -> None:
    state = read_progress(run_dir)
    for record in tail.poll():
        if on_record is not None:
            on_record(record)
    line = metrics_line(method, tail.latest)
    if state.get("state") == "preparing" and not tail.latest:
        line = "preparing the data (tokenizing; large datasets take minutes)…"
    extra = status() if status is not None else ""
    fields: dict[str, Any] = {"metrics": f"{line}  {extra}" if extra else line}
    if state and state.get("max_steps"):
        fields["total"] = state["max_steps"]
        fields["completed"] = state["step"]
        eta = tail.eta_seconds(state["step"], state["max_steps"])
        if eta is not None:
            fields["eta"] = str(datetime.timedelta(seconds=round(eta)))
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
            table.add_row(key, format_metric(first.get(key, "")), format_metric(last.get(key, "")))
    return table

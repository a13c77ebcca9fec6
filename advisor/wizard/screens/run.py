"""Launch, live: `runners.launch.launch` on a thread, its run folder followed as it trains.

Progress (step / total, ETA), the method's key metrics, a loss chart and GPU memory (NVML
samples the launcher writes) against the plan's estimate; ^x stops the run the way Ctrl-C
does in `advisor launch` (a checkpoint, then exit).
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Footer, ProgressBar, Sparkline, Static

from advisor.decision.names import label
from advisor.views.plan_view import duration
from advisor.wizard.run_watch import RunWatch
from advisor.wizard.screens.base import WizardScreen
from advisor.wizard.steps import StepBar
from planner.errors import InputError
from planner.specs import PlanRequest

if TYPE_CHECKING:
    from advisor.wizard.session import WizardSession
    from runners.launch import LaunchOptions, Run

POLL_SECONDS = 0.5


def start_launch(request: PlanRequest, options: LaunchOptions, **follow: Any) -> Run:
    """`runners.launch.launch` (the tests put a stand-in here): check, write the run folder,
    train and follow; `follow` holds its console, on_folder and stop arguments."""
    from runners.launch import launch

    return launch(request, options, **follow)


def _shown(path: Path) -> str:
    """A path as short as it can be said: relative to the working folder when under it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class RunScreen(WizardScreen):
    """One launched run, followed live until it ends."""

    STEP = "Launch"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="back"),
        Binding("ctrl+x", "stop", "Stop run", id="stop"),
        Binding("ctrl+n", "next", "Report", id="next"),
    ]

    def __init__(
        self, session: WizardSession, options: LaunchOptions, request: PlanRequest | None = None
    ) -> None:
        """Launch `request` (the session's as it stands now, unless another is given: the
        demo's) with `options`."""
        from runners.launch import StopRequest

        super().__init__(session)
        self.request: PlanRequest = request or session.request
        self.options = options
        self.method = self.request.method
        self.stop_request = StopRequest()
        self.thread: threading.Thread | None = None
        self.run: Run | None = None
        """The launch as it ended; None while it runs or when it was refused."""
        self.refusal: str | None = None
        """Why the launch did not start (a InputError's message) or broke, if it did."""
        self.run_dir: Path | None = None
        self.run_watch: RunWatch | None = None
        handle, name = tempfile.mkstemp(prefix="advisor-launch-", suffix=".log")
        os.close(handle)
        self.log_path = Path(name)
        """What the launch says (pre-flight, settings, how it ended), as `advisor launch` would."""
        self.stopping = False

    def compose(self) -> ComposeResult:
        yield StepBar(self.STEP)
        with VerticalScroll(id="run"):
            yield Static(id="run-status")
            yield ProgressBar(id="run-progress", show_eta=False)
            yield Static(id="run-metrics")
            yield Static("loss", classes="chart-title", id="loss-title")
            yield Sparkline([], id="loss-chart")
            yield Static(id="gpu-title", classes="chart-title")
            yield Sparkline([], id="gpu-chart")
            yield Static(id="run-log")
        yield Footer()

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    @property
    def exit_status(self) -> int | None:
        """What `advisor launch` would have exited with (2: refused), None while running."""
        if self.running or self.thread is None:
            return None
        if self.run is not None:
            return self.run.exit_status
        return 2 if self.refusal is not None else 1

    def start(self) -> None:
        """Launch on a thread of its own: the launch blocks until the training ends. Not a
        daemon: quitting the wizard waits for a stopping run to save its checkpoint."""
        self.thread = threading.Thread(target=self._launch, name="advisor-launch")
        self.thread.start()

    def _launch(self) -> None:
        from rich.console import Console

        with self.log_path.open("w", encoding="utf-8") as log:
            console = Console(file=log, width=100, highlight=False, soft_wrap=True)
            try:
                self.run = start_launch(
                    self.request,
                    self.options,
                    console=console,
                    on_folder=self._found,
                    stop=self.stop_request,
                )
            except InputError as error:  # refused before anything started, as the CLI says
                self.refusal = str(error)
                console.print(f"error: {error}", markup=False)
            except Exception as error:  # a crash ends the screen's run, never the wizard
                self.refusal = f"{type(error).__name__}: {error}"
                console.print(f"launch failed: {self.refusal}", markup=False)

    def _found(self, run_dir: Path) -> None:
        self.run_dir = run_dir  # read by the screen's timer

    def on_mount(self) -> None:
        self.start()
        self.poll_timer = self.set_interval(POLL_SECONDS, self.tick)
        self.tick()

    def on_unmount(self) -> None:
        if self.running:  # leaving the wizard stops the run as Ctrl-C would
            self.action_stop()

    def tick(self) -> None:
        """Read the run folder and redraw; at the end, record the outcome for the report."""
        if self.run_watch is None and self.run_dir is not None:
            self.run_watch = RunWatch(self.run_dir, self.method)
        if self.run_watch is not None:
            self.run_watch.poll()
        ended = not self.running
        self.draw(ended)
        if ended:
            self.poll_timer.stop()
            self.session.launch_status = self.exit_status
            self.session.run_dir = self.run_watch.run_dir if self.run_watch else None
            self.refresh_bindings()

    def draw(self, ended: bool) -> None:
        from runners.monitor import format_metric  # as the CLI's live view shows a metric

        w = self.run_watch
        plan = self.session.plan
        where = f" · {_shown(w.run_dir)}" if w else ""
        if not ended:
            state = "stopping: saving a checkpoint …" if self.stopping else "running"
            status = Text(f"Training {label(self.method)}{where} · {state}", style="bold")
        else:
            code = self.exit_status
            style = "bold green" if code == 0 else "bold red"
            status = Text(f"{label(self.method)} run ended (exit {code}){where}", style=style)
        self.query_one("#run-status", Static).update(status)
        bar = self.query_one("#run-progress", ProgressBar)
        metrics = Text()
        if w is not None:
            bar.update(total=w.max_steps, progress=w.step)
            eta = w.eta_seconds()
            metrics.append(f"step {w.step} / {w.max_steps or '?'}")
            metrics.append(f" · ETA {duration(eta)}" if eta is not None and not ended else "")
            for name, value in w.metrics():
                shown = format_metric(value)
                metrics.append(f"\n{name} ", style="dim")
                metrics.append(shown)
            self.query_one("#loss-chart", Sparkline).data = w.loss[-200:]
            self.query_one("#gpu-chart", Sparkline).data = w.gpu_gib[-200:]
        else:
            metrics.append("waiting for the run folder …", style="dim")
        self.query_one("#run-metrics", Static).update(metrics)
        estimate = f"estimate {plan.memory.per_gpu_peak_gib:.1f} GiB" if plan else "no estimate"
        if w is not None and w.gpu_gib:
            gpu = f"GPU memory: {w.gpu_gib[-1]:.1f} GiB now, peak {max(w.gpu_gib):.1f} GiB; {estimate}"
        else:
            gpu = f"GPU memory: no NVML samples yet (none on CPU); {estimate}"
        self.query_one("#gpu-title", Static).update(gpu)
        if ended:
            self.query_one("#run-log", Static).update(self.outcome(w))

    def outcome(self, w: RunWatch | None) -> Text:
        """The validation record when the run finished, else the end of the launch's log."""
        if w is not None and w.validation:
            v = w.validation
            return Text(
                f"measured: peak {v.get('measured_peak_gib') or '—'} GiB (estimated "
                f"{v.get('estimated_peak_gib')}), step {v.get('measured_step_seconds') or '—'} s "
                f"(estimated {v.get('estimated_step_seconds')}). {v.get('note', '')}",
                style="green",
            )
        try:
            tail = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-8:]
        except OSError:
            tail = []
        return Text("\n".join(tail), style="red")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop":
            return True if self.running and not self.stopping else None
        if action in ("back", "next"):
            return not self.running  # hidden from the footer until the run has ended
        return True

    def action_stop(self) -> None:
        """Ctrl-C for the launch: the training ranks save a checkpoint and exit."""
        if not self.running:
            return
        self.stopping = True
        self.stop_request.ask()
        self.refresh_bindings()

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_next(self) -> None:
        from advisor.wizard.screens.report import ReportScreen

        self.app.push_screen(ReportScreen(self.session))

"""Step 4: the generated settings and launch command, and the dataset's pre-flight check.

The runners that launch and monitor a run are not built yet, so the launch action is shown
disabled and the screen gives the commands to run once they are.
"""

from __future__ import annotations

from typing import ClassVar

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, Static

from advisor.plan_view import command_line
from advisor.session_record import launch_command
from advisor.wizard.steps import StepBar
from planner.errors import PlanError
from planner.specs import PlanRequest

SETTINGS = (
    ("method", "method"),
    ("model", "model"),
    ("tuning", "tuning"),
    ("lora_rank", "LoRA rank"),
    ("lora_targets", "LoRA targets"),
    ("seq_len", "max length"),
    ("batch_size", "per-device batch"),
    ("grad_accum", "grad accumulation"),
    ("precision", "precision"),
    ("optimizer", "optimizer"),
    ("grad_checkpointing", "grad checkpointing"),
    ("gpu", "GPU"),
    ("num_gpus", "GPUs per node"),
    ("nodes", "nodes"),
    ("sharding", "sharding"),
    ("offload", "offload"),
    ("epochs", "epochs"),
    ("dataset", "dataset"),
)
"""The request's fields the launch uses, with the words a trainer config uses for them."""


def settings_table(request: PlanRequest) -> Table:
    """The training settings the launch would use, one per row."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim", no_wrap=True)
    table.add_column()
    data = request.model_dump(mode="json")
    for field, name in SETTINGS:
        value = data[field]
        if field.startswith("lora_") and data["tuning"] == "full":
            continue
        if isinstance(value, bool):
            value = "on" if value else "off"
        table.add_row(name, "—" if value is None else str(value))
    return table


class LaunchScreen(Screen):
    """What would be launched; launching itself waits for the runners."""

    STEP = "Launch"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="back"),
        Binding("ctrl+l", "launch", "Launch", id="launch"),
        Binding("ctrl+n", "next", "Report", id="next"),
    ]

    def compose(self) -> ComposeResult:
        yield StepBar(self.STEP)
        with VerticalScroll(id="launch"):
            with Horizontal(id="dataset-row"):
                yield Label("dataset ")
                yield Input(
                    id="dataset",
                    placeholder="path to a JSONL/JSON/CSV/Parquet file, Enter checks it",
                    compact=True,
                )
            yield Static(id="preflight")
            yield Static(id="launch-body")
        yield Footer()

    def on_mount(self) -> None:
        request = self.app.request  # type: ignore[attr-defined]
        if request.dataset:
            self.query_one("#dataset", Input).value = request.dataset
        self.query_one("#preflight", Static).update(
            self.app.dataset_check or Text("No dataset checked yet.", style="dim")  # type: ignore[attr-defined]
        )
        self.show_body()
        self.query_one("#dataset", Input).focus()

    def show_body(self) -> None:
        request = self.app.request  # type: ignore[attr-defined]
        commands = Text.assemble(
            (launch_command(request), "bold cyan"), "\n", (command_line(request), "cyan")
        )
        note = Text(
            "Launching needs the runners, which are not built yet: ^l is disabled. "
            "Run the launch command above once `advisor launch` exists.",
            style="yellow",
        )
        self.query_one("#launch-body", Static).update(
            Group(
                note,
                Panel(commands, title="Launch command", title_align="left"),
                Panel(settings_table(request), title="Trainer settings", title_align="left"),
            )
        )

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Pre-flight: count the dataset's rows (`advisor plan --dataset`) and re-estimate."""
        event.stop()
        from planner.dataset_stats import dataset_stats

        path = event.value.strip()
        target = self.query_one("#preflight", Static)
        if not path:
            return
        try:
            stats = dataset_stats(path)
            request = self.app.request.model_copy(update={"dataset": path, "samples": None})  # type: ignore[attr-defined]
            self.app.estimate(request)  # type: ignore[attr-defined]
        except PlanError as error:
            self.app.dataset_check = Text(f"✗ {error}", style="red")  # type: ignore[attr-defined]
        else:
            hours = self.app.plan.time.total_hours  # type: ignore[attr-defined]
            run = f"; the run takes about {hours:.1f} h" if hours is not None else ""
            self.app.dataset_check = Text(f"✓ {stats.summary()}{run}", style="green")  # type: ignore[attr-defined]
        target.update(self.app.dataset_check)  # type: ignore[attr-defined]
        self.show_body()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "launch":
            return None  # shown, disabled: the runners do not exist yet
        return True

    def action_launch(self) -> None:  # pragma: no cover - disabled until the runners land
        self.notify("Launching needs the runners.", severity="warning")

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_next(self) -> None:
        self.app.open_report()  # type: ignore[attr-defined]

"""Step 4: the generated trainer settings and launch command, the dataset's pre-flight, and
the launch itself (followed live on the run screen).

Settings come from `runners.settings.build_run_spec`, the pre-flight from
`runners.preflight.check_dataset`, and the launch is `runners.launch.launch`: the functions
`advisor launch` calls. The command line shown is for the user to copy; nothing runs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Footer, Input, Label, Static

from advisor.views.plan_view import command_line, duration
from advisor.views.session_record import launch_command
from advisor.wizard.screens.base import WizardScreen
from advisor.wizard.steps import StepBar
from planner.errors import InputError
from planner.specs import PlanRequest

if TYPE_CHECKING:
    from runners.launch import LaunchOptions

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


KEY_WIDTH = 30
"""Width of the settings' name column: TRL's longest config names fit."""

OUTPUT = Path("runs")
"""Where launches from the wizard write their run folders (`advisor launch --output`)."""


def launch_options(recommendation, rewards: list[str] | None = None) -> LaunchOptions:
    """What the wizard launches with: run folders under runs/, the recommendation recorded in
    the manifest, the rewards chosen on the launch screen, and no console view (the run screen
    draws the progress itself)."""
    from advisor.views.reasons import recommendation_json
    from runners.launch import LaunchOptions

    return LaunchOptions(
        output=OUTPUT.resolve(),  # absolute: the training child runs from elsewhere
        # What `advisor recommend --json` prints, so a manifest reads the same either way.
        recommendation=recommendation_json(recommendation) if recommendation else None,
        rewards=list(rewards or []),
        quiet=True,
    )


def demo_note(method) -> str:
    """What ^d does, and how to train a model of one's own instead."""
    return (
        f"^t runs the demo instead: {method.value.upper()} on a tiny local model with demo data, "
        "on CPU, in about a minute. For your own model, set the plan's model to its local "
        "folder (its config and weights, e.g. `hf download ORG/NAME --local-dir models/NAME`; a "
        "Hub id alone plans but cannot be launched) and give a dataset here."
    )


def launch_blocker(request: PlanRequest) -> str | None:
    """Why `runners.launch.launch` would refuse this request before starting, or None."""
    from runners.launch import launchable

    try:
        launchable(request)
    except InputError as error:
        return str(error)
    return None


def scored(request: PlanRequest) -> bool:
    """Whether the method's completions are scored by rewards (GRPO, RLOO, PPO)."""
    from planner.recipes import recipe

    return recipe(request.method).generates


def trainer_settings(request: PlanRequest, rewards: list[str] | None = None) -> RenderableType:
    """The TRL, PEFT and accelerate settings `advisor launch` would write, as a panel."""
    try:
        from planner.gpus import resolve_gpu
        from runners.settings import RewardSource, build_run_spec

        spec = build_run_spec(
            request,
            model_path=request.model,
            dataset=request.dataset or "DATASET",
            output_dir=f"runs/{request.method.value}-…/checkpoints",
            device="cuda",
            supports_bf16=resolve_gpu(request.gpu).supports_bf16,
            rewards=[RewardSource.parse(r) for r in rewards or []] or None,
        )
    except (ImportError, InputError) as error:
        return Panel(
            Group(
                Text(f"runner settings unavailable: {error}", style="yellow"),
                settings_table(request),
            ),
            title="Trainer settings",
            title_align="left",
        )
    table = Table.grid(padding=(0, 1))
    table.add_column(style="dim", no_wrap=True, width=KEY_WIDTH)  # steady as fields come and go
    table.add_column()
    for name, value in spec.trl_config.items():
        if name != "output_dir":
            table.add_row(name, str(value))
    if spec.peft:
        table.add_row("peft", ", ".join(f"{k}={v}" for k, v in spec.peft.items()))
    acc = spec.accelerate
    table.add_row(
        "accelerate",
        f"{acc.get('distributed_type')}, {acc.get('num_processes')} process(es), "
        f"{acc.get('mixed_precision')}",
    )
    parts: list[RenderableType] = [table]
    parts += [
        Text(f"{v.name} = {v.value:g}: {v.reason}", style="dim") for v in spec.starting_values
    ]
    parts += [Text(f"note: {w}", style="yellow") for w in spec.warnings]
    title = f"{spec.trainer.split(':')[-1]} with {spec.config_class.split(':')[-1]}"
    return Panel(Group(*parts), title=title, title_align="left")


def preflight(request: PlanRequest) -> Text:
    """The runners' data pre-flight for the method (no tokenizer: format and content checks)."""
    try:
        from runners.preflight import check_dataset
    except ImportError:
        from planner.dataset_stats import dataset_stats

        return Text(f"✓ {dataset_stats(request.dataset).summary()}", style="green")
    report = check_dataset(request.dataset, request.method, max_length=request.seq_len)
    ok = not report.errors
    text = Text(
        f"{'✓' if ok else '✗'} {report.rows:,} rows, {report.format} format, "
        f"{len(report.errors)} error(s), {len(report.warnings)} warning(s) for "
        f"{request.method.value}",
        style="green" if ok else "red",
    )
    for problem in report.problems[:3]:
        text.append(f"\n  {problem.severity}: {problem.describe()}", style="yellow")
    return text


class LaunchScreen(WizardScreen):
    """What `advisor launch` would run, its data check, and the launch."""

    STEP = "Launch"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="back"),
        Binding("ctrl+l", "launch", "Launch", id="launch"),
        Binding("ctrl+t", "demo", "Try the demo", id="demo"),
        Binding("ctrl+n", "next", "Report", id="next"),
    ]

    def compose(self) -> ComposeResult:
        yield StepBar(self.STEP)
        with VerticalScroll(id="launch"):
            with Horizontal(id="dataset-row"):
                yield Label("dataset ")
                yield Input(
                    id="dataset",
                    placeholder="JSONL/JSON/CSV/Parquet file (.gz too) or save_to_disk "
                    "folder; Enter checks it",
                    compact=True,
                )
            with Horizontal(id="reward-row"):
                yield Label("reward  ")
                yield Input(
                    id="reward",
                    placeholder="length, distinct_words, module:function or a reward-model "
                    "folder; Enter sets it",
                    compact=True,
                )
            yield Static(id="preflight")
            yield Static(id="launch-body")
        yield Footer()

    def on_mount(self) -> None:
        request = self.session.request
        if request.dataset:
            self.query_one("#dataset", Input).value = request.dataset
        self.query_one("#reward-row").display = scored(request)
        self.query_one("#reward", Input).value = ", ".join(self.session.rewards)
        self.query_one("#preflight", Static).update(
            self.session.dataset_check or Text("No dataset checked yet.", style="dim")
        )
        self.show_body()
        self.query_one("#dataset", Input).focus()

    def show_body(self) -> None:
        request = self.session.request
        commands = Text.assemble(
            (launch_command(request, self.session.rewards if scored(request) else ()), "bold cyan"),
            "\n",
            (command_line(request), "cyan"),
        )
        blocker = launch_blocker(request)
        note = (
            Text(f"^l launch is off: {blocker}", style="yellow")
            if blocker
            else Text("^l launches the command below and follows it live.", style="green")
        )
        note.append(f"\n{demo_note(request.method)}", style="" if blocker else "dim")
        self.query_one("#launch-body", Static).update(
            Group(
                note,
                Panel(commands, title="Launch command", title_align="left"),
                trainer_settings(request, self.session.rewards if scored(request) else None),
            )
        )

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """The reward: checked and shown in the settings. The dataset: re-estimate with its
        rows, then pre-flight it for the method (in a thread: loading takes seconds)."""
        event.stop()
        if event.input.id == "reward":
            self.set_rewards(event.value)
            return
        path = event.value.strip()
        if not path:
            return
        request = self.session.request.model_copy(update={"dataset": path, "samples": None})
        try:
            self.session.estimate(request)
        except InputError as error:
            self.show_preflight(Text(f"✗ {error}", style="red"))
            return
        self.query_one("#preflight", Static).update(Text(f"Checking {path} …", style="dim"))
        self.show_body()
        self.run_preflight(request)

    def set_rewards(self, text: str) -> None:
        """Rewards as `advisor launch --reward` takes them, comma-separated; each is checked
        the way the launch checks it, and a bad one is said in place of the settings."""
        from runners.settings import RewardSource

        rewards = [part.strip() for part in text.split(",") if part.strip()]
        try:
            for reward in rewards:
                RewardSource.parse(reward)
        except InputError as error:
            self.query_one("#launch-body", Static).update(Text(f"✗ {error}", style="red"))
            return
        self.session.rewards = rewards
        self.show_body()

    @work(thread=True, exclusive=True, group="preflight")
    def run_preflight(self, request: PlanRequest) -> None:
        try:
            result = preflight(request)
        except Exception as error:  # a dataset loader's own error, said on screen
            result = Text(f"✗ {error}", style="red")
        else:
            hours = self.session.plan.time.total_hours if self.session.plan else None
            if hours is not None:
                result.append(f"\nThe run takes about {duration(hours * 3600)} on this plan.")
        self.app.call_from_thread(self.show_preflight, result)

    def show_preflight(self, result: Text) -> None:
        self.session.dataset_check = result
        self.query_one("#preflight", Static).update(result)
        self.show_body()
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "launch" and launch_blocker(self.session.request):
            return None  # shown, disabled, with the reason on screen
        return True

    def action_demo(self) -> None:
        """Build the tiny model and the method's demo data (seconds, in a thread), then launch
        the demo run as `advisor launch --demo --method M` would, followed on the run screen."""
        self.notify(f"Preparing the {self.session.request.method.value} demo …", title="Demo run")
        self.prepare_demo(self.session.request.method)

    @work(thread=True, exclusive=True, group="demo")
    def prepare_demo(self, method) -> None:
        from runners.demo import demo

        try:
            prepared = demo(method, OUTPUT.resolve() / "demo-data")
        except Exception as error:  # the tiny model or its data could not be written
            self.app.call_from_thread(self.notify, f"demo: {error}", severity="error")
            return
        self.app.call_from_thread(self.launch_demo, prepared)

    def launch_demo(self, prepared) -> None:
        from advisor.wizard.screens.run import RunScreen

        request = PlanRequest.model_validate(
            {**self.session.request.model_dump(), **prepared.request}
        )
        options = launch_options(self.session.recommendation, []).model_copy(
            update=prepared.options
        )
        self.session.demo = True
        self.app.push_screen(RunScreen(self.session, options, request=request))

    def action_launch(self) -> None:
        """Launch the request (`runners.launch.launch`) and follow it live on the run screen."""
        from advisor.wizard.screens.run import RunScreen

        rewards = self.session.rewards if scored(self.session.request) else []
        options = launch_options(self.session.recommendation, rewards)
        self.session.demo = False
        self.app.push_screen(RunScreen(self.session, options))

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_next(self) -> None:
        from advisor.wizard.screens.report import ReportScreen

        self.app.push_screen(ReportScreen(self.session))

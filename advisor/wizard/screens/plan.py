"""Step 3: the training settings on the left, the planner's estimate updating on the right."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import ValidationError
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.suggester import SuggestFromList
from textual.widgets import Footer, Input, Label, Select, Static

from advisor.decision.names import label
from advisor.views.estimate_view import estimate_renderable
from advisor.wizard.screens.base import WizardScreen
from advisor.wizard.steps import StepBar
from planner.errors import InputError
from planner.gpu_counts import count_choices, layout
from planner.specs import Method, Offload, PlanRequest, Sharding, Tuning, request_problem
from planner.trl_defaults import NUM_GENERATIONS

GPU_COUNTS = tuple(count_choices())
NUMBERS = (
    "seq_len",
    "batch_size",
    "grad_accum",
    "samples",
    "prompt_len",
    "completion_len",
    "num_generations",
    "ppo_epochs",
)
DECIMALS = ("epochs", "beta")
OPTIONAL = ("samples", "prompt_len", "completion_len", "num_generations", "beta")
"""Knobs that may be left empty: the dataset's rows, or the method's own default."""
METHOD_KNOBS = {
    "prompt_len": lambda r: r.generates,
    "completion_len": lambda r: r.generates,
    "num_generations": lambda r: r.method.value in NUM_GENERATIONS,
    "beta": lambda r: r.reference == "when-kl",
    "ppo_epochs": lambda r: r.method is Method.ppo,
}
"""Knobs shown only for the methods they change (by the method's recipe)."""


def _gpu_names() -> list[str]:
    from planner.gpus import list_gpus

    return [gpu.name.lower() for gpu in list_gpus()]


def _model_names() -> list[str]:
    from planner.models import list_models, list_shorthands

    return [*list_shorthands(), *(spec.name.lower() for spec in list_models())]


def request_update(request: PlanRequest, field: str, value: Any) -> PlanRequest:
    """The request with one knob changed; pydantic validates it as the CLI's flags are."""
    update: dict[str, Any]
    if field == "gpus":
        per_node, nodes = layout(int(value))
        update = {"num_gpus": per_node, "nodes": nodes}
    elif field in NUMBERS or field in DECIMALS:
        text = str(value).strip()
        if not text and field in OPTIONAL:
            update = {field: None}
        elif field in DECIMALS:
            try:
                update = {field: float(text)}
            except ValueError:
                raise InputError(f"{field.replace('_', ' ')}: enter a number") from None
        elif not (text.isascii() and text.isdigit()):
            raise InputError(f"{field.replace('_', ' ')}: enter a whole number")
        elif len(text) > 18:  # past every ceiling, and int() refuses thousands of digits
            raise InputError(f"{field.replace('_', ' ')}: far too large")
        else:
            update = {field: int(text)}
    elif field == "grad_checkpointing":
        update = {field: value == "on"}
    else:
        update = {field: value}
    data = {**request.model_dump(), **update}
    if field == "method":  # the method's own defaults, not the last method's
        data.update(num_generations=None, beta=None)
    if field in ("prompt_len", "completion_len", "seq_len") and None not in (
        data["prompt_len"],
        data["completion_len"],
    ):
        if field == "seq_len":  # a new total: the completion takes what the prompt leaves
            data["completion_len"] = max(1, data["seq_len"] - data["prompt_len"])
        data["seq_len"] = data["prompt_len"] + data["completion_len"]
    try:
        return PlanRequest.model_validate(data)
    except ValidationError as error:
        name, message = request_problem(error)
        raise InputError(f"{(name or field).replace('_', ' ')}: {message}") from None


class PlanScreen(WizardScreen):
    """Knobs for `advisor plan`'s settings; every change re-runs `estimate`."""

    STEP = "Plan"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="back"),
        Binding("ctrl+f", "fit", "Fit it", id="fit"),
        Binding("ctrl+n", "next", "Launch", id="next"),
    ]

    def compose(self) -> ComposeResult:
        v = knob_values(self.session.request)
        counts = sorted({*GPU_COUNTS, int(v["gpus"])})
        yield StepBar(self.STEP)
        with Horizontal(id="plan"):
            with VerticalScroll(id="knobs-pane"), Grid(id="knobs"):
                yield Label("model")
                yield Input(
                    v["model"],
                    id="model",
                    compact=True,
                    suggester=SuggestFromList(_model_names(), case_sensitive=False),
                )
                yield Label("method")
                yield _select("method", [(label(m), m.value) for m in Method], v)
                yield Label("tuning")
                yield _select("tuning", [(t.value, t.value) for t in Tuning], v)
                yield Label("seq len")
                yield Input(v["seq_len"], id="seq_len", type="integer", compact=True)
                yield Label("micro-batch")
                yield Input(v["batch_size"], id="batch_size", type="integer", compact=True)
                yield Label("grad accum")
                yield Input(v["grad_accum"], id="grad_accum", type="integer", compact=True)
                yield Label("checkpoint")
                yield _select("grad_checkpointing", [("on", "on"), ("off", "off")], v)
                yield Label("GPU")
                yield _select("gpu", [(name, name) for name in _gpu_names()], v)
                yield Label("GPUs")
                yield _select("gpus", [(str(c), str(c)) for c in counts], v)
                yield Label("sharding")
                yield _select("sharding", [(s.value, s.value) for s in Sharding], v)
                yield Label("offload")
                yield _select("offload", [(o.value, o.value) for o in Offload], v)
                yield Label("rows")
                yield Input(
                    v["samples"],
                    id="samples",
                    type="integer",
                    placeholder="dataset rows",
                    compact=True,
                )
                yield Label("epochs")
                yield Input(v["epochs"], id="epochs", type="number", compact=True)
                for field, name, kind, hint in (
                    ("prompt_len", "prompt len", "integer", "share of seq len"),
                    ("completion_len", "completion", "integer", "share of seq len"),
                    ("num_generations", "generations", "integer", "TRL's default"),
                    ("beta", "β (KL)", "number", "TRL's default"),
                    ("ppo_epochs", "PPO epochs", "integer", ""),
                ):
                    yield Label(name, classes=f"knob-{field}")
                    yield Input(
                        v[field],
                        id=field,
                        type=kind,
                        placeholder=hint,
                        compact=True,
                        classes=f"knob-{field}",
                    )
            with VerticalScroll(id="estimate-pane"):
                yield Static(id="estimate")
        yield Footer()

    def on_mount(self) -> None:
        self.show_method_knobs()
        self.refresh_estimate()
        self.query_one("#model", Input).focus()
        self.call_after_refresh(self.show_model_from_its_start)  # after focus moved the cursor

    def show_model_from_its_start(self) -> None:
        """A model path longer than its knob shows from its start (not cut to
        `-advisor/tiny-llama`), with the whole path as the knob's tooltip."""
        model = self.query_one("#model", Input)
        model.cursor_position = 0
        model.tooltip = model.value or None

    def show_method_knobs(self) -> None:
        """Show the knobs the request's method uses (GRPO's generations, PPO's epochs, ...)."""
        from planner.recipes import recipe

        method = recipe(self.session.request.method)
        for field, applies in METHOD_KNOBS.items():
            for widget in self.query(f".knob-{field}"):
                widget.display = applies(method)

    def sync_knobs(self) -> None:
        """Set every knob from the session's request, without re-running the estimate per knob."""
        values = knob_values(self.session.request)
        gpus = self.query_one("#gpus", Select)
        count = int(values["gpus"])
        if count not in GPU_COUNTS:
            gpus.set_options([(str(c), str(c)) for c in sorted({*GPU_COUNTS, count})])
        with self.prevent(Input.Changed, Select.Changed):
            for field, value in values.items():
                widget = self.query_one(f"#{field}")
                widget.value = value
        self.show_model_from_its_start()

    def refresh_estimate(self) -> None:
        """Run the planner on the current request and draw the result (or its error)."""
        target = self.query_one("#estimate", Static)
        try:
            self.session.estimate(self.session.request)
        except InputError as error:
            target.update(Text(f"Cannot estimate: {error}", style="bold red"))
            return
        target.update(estimate_renderable(self.session.plan, fit_key="^f (Fit it)"))

    def knob_changed(self, field: str, value: Any) -> None:
        try:
            request = request_update(self.session.request, field, value)
        except InputError as error:
            self.query_one("#estimate", Static).update(Text(str(error), style="bold red"))
            self.session.plan = None
            return
        if request == self.session.request and self.session.plan is not None:
            return  # a knob reporting the value it was given
        derived = request.seq_len != self.session.request.seq_len and field != "seq_len"
        self.session.request = request
        if field == "method":
            self.session.method = request.method
            self.app.clear_notifications()  # a warning about the last method no longer holds
            self.show_method_knobs()
        if derived or field == "method":  # the sequence length, or the method's defaults
            self.sync_knobs()
        self.refresh_estimate()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        if event.input.id:
            self.knob_changed(event.input.id, event.value)

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        if event.select.id and event.value is not Select.BLANK:
            self.knob_changed(event.select.id, event.value)

    def action_fit(self) -> None:
        """Apply the fastest setup that fits on the GPUs the knobs give (their count is the
        team's ceiling), as `advisor plan --fit --num-gpus N --nodes M` finds it."""
        from planner.fit import search, search_space

        request = self.session.request
        gpus = f"{request.world_size}× {request.gpu}"
        try:
            plans = search(request, space=search_space(request.num_gpus, request.nodes))
        except InputError as error:
            self.notify(str(error), severity="error")
            return
        if not plans:
            self.notify(
                f"Nothing fits {request.model} on {gpus}: try more GPUs, a larger GPU or a "
                "shorter sequence.",
                severity="error",
            )
            return
        plan = plans[0]
        self.session.request = plan.request
        self.sync_knobs()
        self.refresh_estimate()
        self.notify(
            f"Applied the fastest setup that fits on {gpus}: "
            f"{plan.memory.per_gpu_peak_gib:.1f} of {plan.memory.capacity_gib:.1f} GiB per GPU.",
            title="Fit it",
        )

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_next(self) -> None:
        from advisor.wizard.screens.launch import LaunchScreen

        self.app.push_screen(LaunchScreen(self.session))


def knob_values(r: PlanRequest) -> dict[str, str]:
    """Each knob's value for a request, as the knob holds it."""
    return {
        "model": r.model,
        "method": r.method.value,
        "tuning": r.tuning.value,
        "seq_len": str(r.seq_len),
        "batch_size": str(r.batch_size),
        "grad_accum": str(r.grad_accum),
        "grad_checkpointing": "on" if r.grad_checkpointing else "off",
        "gpu": r.gpu,
        "gpus": str(r.world_size),
        "sharding": r.sharding.value,
        "offload": r.offload.value,
        "samples": "" if r.samples is None else str(r.samples),
        "epochs": f"{r.epochs:g}",
        "prompt_len": "" if r.prompt_len is None else str(r.prompt_len),
        "completion_len": "" if r.completion_len is None else str(r.completion_len),
        "num_generations": "" if r.num_generations is None else str(r.num_generations),
        "beta": "" if r.beta is None else f"{r.beta:g}",
        "ppo_epochs": str(r.ppo_epochs),
    }


def _select(field: str, options: list[tuple[str, str]], values: dict[str, str]) -> Select:
    return Select(options, id=field, value=values[field], allow_blank=False, compact=True)

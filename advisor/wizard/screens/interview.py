"""Step 1: the interview, one question at a time, with the answers so far beside it."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Input, OptionList, Static
from textual.widgets.option_list import Option

from advisor.decision.interview import QUESTIONS, Question
from advisor.wizard.screens.base import WizardScreen
from advisor.wizard.session import WizardSession
from advisor.wizard.steps import StepBar


class InterviewScreen(WizardScreen):
    """Each answers-file field as a question; Enter answers it, Esc goes back one."""

    STEP = "Interview"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="back"),
        Binding("ctrl+n", "recommend", "Recommend", id="recommend"),
    ]

    def __init__(self, session: WizardSession) -> None:
        super().__init__(session)
        self.index = 0

    def compose(self) -> ComposeResult:
        yield StepBar(self.STEP)
        with Horizontal(id="interview"):
            with Vertical(id="question-pane"):
                yield Static(id="progress")
                yield Static(id="question-title")
                yield Static(id="question-hint")
                yield OptionList(id="options")
                yield Input(id="free-text", compact=True)
                yield Static(id="question-error")
            yield Static(id="answers-so-far")
        yield Footer()

    @property
    def question(self) -> Question:
        return QUESTIONS[self.index]

    def on_mount(self) -> None:
        self.show(0)

    def on_screen_resume(self) -> None:
        self.show(self.index)

    def show(self, index: int) -> None:
        """Show question `index`, pre-selecting its current answer."""
        self.index = index
        q = self.question
        raw = self.session.raw
        self.query_one("#progress", Static).update(
            Text(f"Question {index + 1} of {len(QUESTIONS)}", style="dim")
        )
        self.query_one("#question-title", Static).update(Text(q.title, style="bold"))
        self.query_one("#question-hint", Static).update(Text(q.hint, style="italic"))
        self.query_one("#question-error", Static).update("")
        options = self.query_one("#options", OptionList)
        free = self.query_one("#free-text", Input)
        options.display = not q.optional
        free.display = q.optional
        if q.optional:
            free.placeholder = q.placeholder
            free.suggester = _model_suggester() if q.field == "model" else None
            free.value = raw.get(q.field) or self._default(q.field)
            free.focus()
        else:
            options.clear_options()
            options.add_options(
                Option(Text.assemble((value, "bold"), "\n  ", (why, "dim")), id=value)
                for value, why in q.options
            )
            values = [value for value, _ in q.options]
            current = raw.get(q.field)
            options.highlighted = values.index(current) if current in values else 0
            options.focus()
        self.show_answers()

    def _default(self, field: str) -> str:
        if field == "gpus":
            detected = self.session.detected_gpu()
            if detected:
                return f"{detected[1]}x {detected[0]}"
        return ""

    def show_answers(self) -> None:
        """The answers so far, the current question marked."""
        raw = self.session.raw
        table = Table.grid(padding=(0, 1))
        table.add_column(no_wrap=True)
        table.add_column(overflow="fold")
        for i, q in enumerate(QUESTIONS):
            style = "bold reverse" if i == self.index else ("" if q.field in raw else "dim")
            # Word breaks where a narrow terminal must wrap: `pairwise preferences`, not
            # `pairwise_prefe` / `rences`.
            value = raw.get(q.field, "—").replace("_", " ")
            table.add_row(Text(q.field, style=style), Text(value, style="cyan"))
        self.query_one("#answers-so-far", Static).update(table)

    def answer(self, value: str) -> None:
        """Record an answer (checked where it can be) and move on."""
        q = self.question
        raw = self.session.raw
        if q.optional and value:
            problem = _check_free_text(q.field, value)
            if problem:
                self.query_one("#question-error", Static).update(Text(problem, style="red"))
                return
        if value:
            raw[q.field] = value
        else:
            raw.pop(q.field, None)
        if self.index + 1 < len(QUESTIONS):
            self.show(self.index + 1)
        else:
            self.action_recommend()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.answer(str(event.option.id))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.answer(event.value.strip())

    def action_back(self) -> None:
        if self.index > 0:
            self.show(self.index - 1)

    def action_recommend(self) -> None:
        raw = self.session.raw
        missing = [q.field for q in QUESTIONS if not q.optional and q.field not in raw]
        if missing:
            self.query_one("#question-error", Static).update(
                Text(f"Still to answer: {', '.join(missing)}", style="red")
            )
            return
        problem = self.session.recommend()
        if problem:
            self.query_one("#question-error", Static).update(Text(problem, style="red"))
            return
        from advisor.wizard.screens.recommendation import RecommendationScreen

        self.app.push_screen(RecommendationScreen(self.session))


def _model_suggester():
    """Completion for the model question: size shorthands and profile names."""
    from textual.suggester import SuggestFromList

    from planner.models import list_models, list_shorthands

    names = [*list_shorthands(), *(spec.name.lower() for spec in list_models())]
    return SuggestFromList(names, case_sensitive=False)


def _check_free_text(field: str, value: str) -> str | None:
    """The planner's message for a model or GPU answer it cannot use, else None."""
    from planner.errors import InputError

    try:
        if field == "model":
            from planner.models import resolve_model

            resolve_model(value)
        elif field == "gpus":
            from advisor.decision.answers import parse_gpus
            from planner.gpus import resolve_gpu

            resolve_gpu(parse_gpus(value)[0])
    except InputError as error:
        return str(error)
    return None

"""Step 2: the ranked methods with reasons and caveats; Enter on a row trains that one."""

from __future__ import annotations

from typing import ClassVar

from rich.console import Group, RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Footer, Static

from advisor.decision.decide import Recommendation
from advisor.decision.names import label
from advisor.views.reasons import override_warning, reasons
from advisor.views.recommend_view import advice_parts, bullets, headline, runner_up_panel
from advisor.wizard.confirm import save_asking_first
from advisor.wizard.path_prompt import PathPrompt
from advisor.wizard.screens.base import WizardScreen
from advisor.wizard.steps import StepBar
from planner.errors import InputError
from planner.specs import Method


def method_details(rec: Recommendation, method: Method) -> RenderableType:
    """What the engine says about one method: the whole case for the winner, the gap for others."""
    row = next(r for r in rec.ranking if r.method is method)
    if method is rec.method:
        return Group(
            headline(rec),
            bullets(f"Why {label(method)}", reasons(row), "green"),
            runner_up_panel(rec),
            *advice_parts(rec, narrow=True),
        )
    warning = override_warning(rec, method) or ""
    return Group(
        Text(warning, style="yellow"),
        bullets(f"{label(method)}: {row.score:g} points", reasons(row), "magenta"),
        bullets("Caveats", rec.caveats, "yellow"),
    )


class RecommendationScreen(WizardScreen):
    """The ranking on the left, the highlighted method's reasons on the right."""

    STEP = "Recommendation"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="back"),
        Binding("ctrl+n", "next", "Plan", id="next"),
        Binding("ctrl+s", "save_answers", "Save answers", id="save-answers"),
    ]

    def compose(self) -> ComposeResult:
        yield StepBar(self.STEP)
        with Horizontal(id="recommendation"):
            with Vertical(id="ranking-pane"):
                yield Static("Ranking · Enter plans the highlighted method", classes="pane-title")
                yield DataTable(id="ranking", cursor_type="row", zebra_stripes=True)
                yield Static(id="choice")
            with VerticalScroll(id="details"):
                yield Static(id="detail")
        yield Footer()

    @property
    def rec(self) -> Recommendation:
        return self.session.recommendation

    def on_mount(self) -> None:
        table = self.query_one("#ranking", DataTable)
        table.add_columns("#", "method", "score", "")
        self.fill_table()
        table.focus()

    def on_screen_resume(self) -> None:
        """The plan screen may have changed the method: show the one being trained."""
        table = self.query_one("#ranking", DataTable)
        cursor = table.cursor_row
        self.fill_table()
        table.move_cursor(row=cursor, animate=False)

    def fill_table(self) -> None:
        table = self.query_one("#ranking", DataTable)
        chosen = self.session.method
        table.clear()
        for place, row in enumerate(self.rec.ranking, start=1):
            mark = "● train" if row.method is chosen else ""
            table.add_row(
                str(place), label(row.method), f"{row.score:g}", mark, key=row.method.value
            )
        self.show_choice()

    def show_choice(self) -> None:
        chosen = self.session.method
        warning = override_warning(self.rec, chosen)
        text = Text.assemble(("Training: ", "bold"), (label(chosen), "bold cyan"))
        if warning:
            text.append("  (not the recommendation)", style="yellow")
        self.query_one("#choice", Static).update(text)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        method = Method(event.row_key.value)
        self.query_one("#detail", Static).update(method_details(self.rec, method))
        self.query_one("#details", VerticalScroll).scroll_home(animate=False)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter: train the highlighted method and go on to its plan, with the case against
        it, where the engine ranked it lower, as a warning (and none left from an earlier
        choice)."""
        method = Method(event.row_key.value)
        warning = self.session.choose_method(method)
        cursor = self.query_one("#ranking", DataTable).cursor_row
        self.fill_table()
        self.query_one("#ranking", DataTable).move_cursor(row=cursor, animate=False)
        self.app.clear_notifications()
        if warning:
            self.notify(warning, title=f"Training {label(method)}", severity="warning")
        self.action_next()

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_next(self) -> None:
        from advisor.wizard.screens.plan import PlanScreen

        self.session.start_plan()
        self.app.push_screen(PlanScreen(self.session))

    def action_save_answers(self) -> None:
        default = self.session.answers_path or "answers.yaml"
        self.app.push_screen(PathPrompt("Save the answers (YAML) to:", default), self._save)

    def _save(self, path: str | None) -> None:
        if not path:
            return
        save_asking_first(
            self, path, "answers file", lambda path, yes: self.write(path, overwrite=yes)
        )

    def write(self, path: str, *, overwrite: bool) -> None:
        """Write the answers to `path`, saying where (or why not) in a notification."""
        from advisor.decision.interview import save_answers

        try:
            written = save_answers(self.rec.answers, path, overwrite=overwrite)
        except InputError as error:
            self.notify(str(error), severity="error")
            return
        self.session.answers_path = str(written)
        self.notify(f"Answers written to {written}", title="Saved")

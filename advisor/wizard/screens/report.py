"""Step 5: the Markdown record of the session, and where to save it."""

from __future__ import annotations

from typing import ClassVar

from rich.markdown import Markdown
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Footer, Input, Label, Static

from advisor.views.session_record import write_session_record
from advisor.wizard.confirm import save_asking_first
from advisor.wizard.screens.base import WizardScreen
from advisor.wizard.steps import StepBar
from planner.errors import InputError

DEFAULT_PATH = "advisor-record.md"


class ReportScreen(WizardScreen):
    """The record (answers, recommendation, plan) as it will be written; ^s writes it."""

    STEP = "Report"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="back"),
        Binding("ctrl+s", "save", "Save record", id="save"),
    ]

    def compose(self) -> ComposeResult:
        yield StepBar(self.STEP)
        with Horizontal(id="report-row"):
            yield Label("save to ")
            yield Input(DEFAULT_PATH, id="report-path", compact=True)
        with VerticalScroll(id="report"):
            yield Static(id="record")
        yield Footer()

    def on_mount(self) -> None:
        self.text = self.session.record()
        self.query_one("#record", Static).update(Markdown(self.text))
        self.query_one("#report-path", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_save()

    def action_save(self) -> None:
        path = self.query_one("#report-path", Input).value.strip() or DEFAULT_PATH
        save_asking_first(self, path, "record", lambda path, yes: self.write(path, overwrite=yes))

    def write(self, path: str, *, overwrite: bool) -> None:
        """Write the record to `path`, saying where (or why not) in a notification."""
        try:
            written = write_session_record(self.text, path, overwrite=overwrite)
        except InputError as error:
            self.notify(str(error), severity="error")
            return
        self.session.report_path = str(written)
        self.notify(f"Record written to {written}", title="Saved")

    def action_back(self) -> None:
        self.app.pop_screen()

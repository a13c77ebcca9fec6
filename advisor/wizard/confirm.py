"""Small keyboard-only dialogs: before a save replaces an existing file, and before quitting
stops a run that is training."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from advisor.decision.output_file import existing_file
from planner.files import shown


def save_asking_first(screen, path: str, what: str, write: Callable[[str, bool], None]) -> None:
    """`write(path, overwrite)`; over an existing file, only once ConfirmOverwrite says yes."""
    if existing_file(path, what):
        screen.app.push_screen(
            ConfirmOverwrite(path), lambda yes: write(path, True) if yes else None
        )
        return
    write(path, False)


class ConfirmOverwrite(ModalScreen[bool]):
    """`path` exists: y, Enter or a second ^s overwrite it (True); n or Esc keep it (False)."""

    DEFAULT_CSS = """
    ConfirmOverwrite {
        align: center middle;
    }
    #confirm-overwrite {
        width: 60;
        height: auto;
        padding: 1 2;
        border: round $warning;
        background: $surface;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y,enter,ctrl+s", "overwrite", "Overwrite", id="overwrite"),
        Binding("n,escape", "keep", "Keep the file", id="keep"),
    ]

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-overwrite"):
            yield Static(f"{shown(self.path, 54)} already exists.", classes="pane-title")
            yield Static("Overwrite it?")
            yield Static("y, Enter or ^s overwrites · n or Esc keeps it", classes="dim")

    def action_overwrite(self) -> None:
        self.dismiss(True)

    def action_keep(self) -> None:
        self.dismiss(False)


class ConfirmQuit(ModalScreen[bool]):
    """A run is training: y, Enter or a second ^q stop it (a checkpoint) and quit (True); n or
    Esc keep it training (False)."""

    DEFAULT_CSS = """
    ConfirmQuit {
        align: center middle;
    }
    #confirm-quit {
        width: 60;
        height: auto;
        padding: 1 2;
        border: round $warning;
        background: $surface;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y,enter,ctrl+q", "quit", "Stop and quit", id="stop-quit", priority=True),
        Binding("n,escape", "keep", "Keep training", id="keep"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-quit"):
            yield Static("A run is training.", classes="pane-title")
            yield Static(
                "Quit now? The run saves a checkpoint first (as Ctrl-C does in "
                "`advisor launch`), so `advisor launch --resume` can go on from it."
            )
            yield Static(
                "y, Enter or ^q stops it and quits · n or Esc keeps training", classes="dim"
            )

    def action_quit(self) -> None:
        self.dismiss(True)

    def action_keep(self) -> None:
        self.dismiss(False)

"""A small dialog that asks before a save replaces an existing file; keyboard only."""

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

"""The one-line step bar at the top of every screen: where the user is in the flow."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

STEPS = ("Interview", "Recommendation", "Plan", "Launch", "Report")


class StepBar(Static):
    """The five steps, the current one highlighted."""

    def __init__(self, current: str) -> None:
        super().__init__(id="steps")
        text = Text(" ")
        for i, step in enumerate(STEPS, start=1):
            if i > 1:
                text.append(" › ", style="dim")
            style = "bold reverse" if step == current else "dim"
            text.append(f" {i} {step} ", style=style)
        self.update(text)

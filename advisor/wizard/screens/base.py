"""What every wizard screen shares: its step's name and the session it reads and writes."""

from __future__ import annotations

from typing import ClassVar

from textual.screen import Screen

from advisor.wizard.session import WizardSession


class WizardScreen(Screen):
    """A step of the wizard; `self.session` holds the answers, recommendation and plan so far,
    and moving on pushes the next step's screen with the same session."""

    STEP: ClassVar[str] = ""

    def __init__(self, session: WizardSession) -> None:
        super().__init__()
        self.session = session

"""What every wizard screen shares: its step's name and the app's session state, typed."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from textual.screen import Screen

if TYPE_CHECKING:
    from advisor.wizard.app import WizardApp


class WizardScreen(Screen):
    """A step of the wizard; `self.wizard` is the app with the session's answers and plan."""

    STEP: ClassVar[str] = ""

    @property
    def wizard(self) -> WizardApp:
        return cast("WizardApp", self.app)

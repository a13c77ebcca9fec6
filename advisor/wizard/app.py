"""The wizard's app: holds the session and shows its first screen.

A thin shell: the session (`advisor.wizard.session`) carries the state from step to step, and
each screen moves on by pushing the next one with that same session.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, ClassVar

from textual.app import App
from textual.binding import Binding, BindingType

from advisor.decision.interview import raw_from_mapping
from advisor.wizard.palette import WizardCommands
from advisor.wizard.screens.interview import InterviewScreen
from advisor.wizard.session import WizardSession, detect_this_gpu


class WizardApp(App[None]):
    """Interview → recommendation → plan → launch → report, one screen each."""

    CSS_PATH = "wizard.tcss"
    TITLE = "Alignment Advisor"
    COMMANDS = App.COMMANDS | {WizardCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", id="quit", priority=True),
    ]

    def __init__(
        self,
        answers: dict[str, Any] | None = None,
        answers_path: str | None = None,
        detect_gpu: Callable[[], tuple[str, int] | None] = detect_this_gpu,
        today: dt.date | None = None,
    ) -> None:
        super().__init__()
        self.session = WizardSession(
            raw=raw_from_mapping(answers or {}),
            answers_path=answers_path,
            detect_gpu=detect_gpu,
            today=today,
        )
        """The answers, recommendation, plan and launch outcome gathered so far."""

    async def action_quit(self) -> None:
        """Quit; while a run trains, ask first, then stop it (a checkpoint) and quit once it
        has ended."""
        from advisor.wizard.confirm import ConfirmQuit
        from advisor.wizard.screens.run import RunScreen

        if isinstance(self.screen, ConfirmQuit):  # a second ^q: yes
            self.screen.dismiss(True)
            return
        runs = [s for s in self.screen_stack if isinstance(s, RunScreen) and s.running]
        if not runs:
            self.exit()
            return

        def answered(yes: bool | None) -> None:
            if yes:
                for run in runs:
                    run.action_stop()
                self.set_interval(
                    0.2, lambda: None if any(r.running for r in runs) else self.exit()
                )

        self.push_screen(ConfirmQuit(), answered)

    def get_default_screen(self) -> InterviewScreen:
        return InterviewScreen(self.session)

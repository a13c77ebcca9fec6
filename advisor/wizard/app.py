"""The wizard's app: the state one session carries from screen to screen, and the navigation.

A thin shell: every answer it gives comes from the functions the CLI calls — `decide` for the
recommendation, `estimate` and `search` for the plan, `session_record` for the report.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, ClassVar

from textual.app import App
from textual.binding import Binding, BindingType

from advisor.decision.interview import answers_from_raw, raw_from_mapping
from advisor.wizard.palette import WizardCommands
from advisor.wizard.screens.interview import InterviewScreen


def _detect_gpu() -> tuple[str, int] | None:
    from advisor.wizard.gpu_detect import detect_gpu

    return detect_gpu()


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
        detect_gpu: Callable[[], tuple[str, int] | None] = _detect_gpu,
        today: dt.date | None = None,
    ) -> None:
        super().__init__()
        self.raw: dict[str, str] = raw_from_mapping(answers or {})
        """The interview's answers so far, as the answers file writes them."""
        self.answers_path = answers_path
        self.detect_gpu = detect_gpu
        self.today = today
        self._detected: tuple[str, int] | bool | None = False
        self.recommendation = None
        self.method = None
        """The method the plan is for: the recommended one unless the user picked another."""
        self.request = None
        self.plan = None
        self.dataset_check = None
        self.run_dir = None
        """The run folder of the last launch from the wizard, if any."""
        self.launch_status: int | None = None

    def get_default_screen(self) -> InterviewScreen:
        return InterviewScreen()

    # --- state: each step calls the same function as the CLI ---------------------------

    def detected_gpu(self) -> tuple[str, int] | None:
        """This machine's GPU from NVML (asked once), or None."""
        if self._detected is False:
            self._detected = self.detect_gpu()
        return self._detected  # type: ignore[return-value]

    def recommend(self) -> str | None:
        """Decide on the interview's answers (`advisor recommend`) and show the result; returns
        the engine's message instead where `advisor recommend` would stop with one."""
        from advisor.decision.decide import decide
        from advisor.wizard.screens.recommendation import RecommendationScreen
        from planner.errors import PlanError

        try:
            recommendation = decide(answers_from_raw(self.raw))
        except PlanError as error:
            return str(error)
        if self.recommendation is None or recommendation != self.recommendation:
            self.recommendation = recommendation
            self.method = recommendation.method
            self.request = None
        self.push_screen(RecommendationScreen())
        return None

    def choose_method(self, method) -> str | None:
        """Train `method` instead; returns the engine's warning when it is not the winner."""
        from advisor.decision.method_choice import override_warning

        if method is not self.method:
            self.method = method
            self.request = None
        return override_warning(self.recommendation, method)

    def initial_request(self):
        """The plan to start from: the chosen method's default setup on the team's GPUs."""
        from advisor.decision.compute_check import default_request
        from planner.errors import PlanError
        from planner.gpus import resolve_gpu
        from planner.specs import Tuning

        rec = self.recommendation
        gpus = rec.answers.parsed_gpus() or self.detected_gpu() or ("a100-80gb", 1)
        gpu, count = gpus
        try:
            gpu = resolve_gpu(gpu).name.lower()
        except PlanError:
            gpu = "a100-80gb"
        check = next((c for c in rec.compute if c.method is self.method), None)
        tuning = check.setup if check is not None and check.setup is not None else Tuning.lora
        try:
            return default_request(self.method, tuning, rec.answers.model or "7b", gpu, count)
        except PlanError:  # a GPU count past the planner's ceilings: start from one card
            return default_request(self.method, tuning, rec.answers.model or "7b", gpu, 1)

    def open_plan(self) -> None:
        from advisor.wizard.screens.plan import PlanScreen

        if self.request is None:
            self.request = self.initial_request()
        self.push_screen(PlanScreen())

    def estimate(self, request) -> None:
        """Set the request and its estimate (`advisor plan`); PlanError propagates."""
        from planner.plan import estimate

        self.request = request
        self.plan = None
        self.plan = estimate(request)

    def open_launch(self) -> None:
        from advisor.wizard.screens.launch import LaunchScreen

        self.push_screen(LaunchScreen())

    def open_report(self) -> None:
        from advisor.wizard.screens.report import ReportScreen

        self.push_screen(ReportScreen())

    def record(self) -> str:
        """The Markdown record of this session (answers, recommendation, plan)."""
        from advisor.views.session_record import session_record

        return session_record(
            self.recommendation,
            self.method,
            self.plan,
            source=self.answers_path,
            today=self.today,
            run_dir=self.run_dir,
            launch_status=self.launch_status,
        )

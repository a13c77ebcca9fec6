"""One wizard session's state, carried from screen to screen: the answers so far, the
recommendation, the method chosen, the plan, and what the launch left behind.

No Textual here: the screens read and write this object and the app only holds it, so the
session can be built and driven in a test without starting the app. Every step calls the
function the CLI calls — `decide` for the recommendation, `estimate` for the plan,
`session_record` for the report.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.text import Text

    from advisor.decision.decide import Recommendation
    from planner.specs import Method, Plan, PlanRequest


def detect_this_gpu() -> tuple[str, int] | None:
    """This machine's GPU and count from NVML, or None (the wizard's default detector)."""
    from advisor.wizard.gpu_detect import detect_gpu

    return detect_gpu()


@dataclass(eq=False)
class WizardSession:
    """What one run of the wizard has gathered so far; each step fills in the next field."""

    raw: dict[str, str] = field(default_factory=dict)
    """The interview's answers so far, as the answers file writes them."""
    answers_path: str | None = None
    """Where the answers were read from or last saved to."""
    detect_gpu: Callable[[], tuple[str, int] | None] = detect_this_gpu
    today: dt.date | None = None
    """The date the records carry (None: today)."""
    recommendation: Recommendation | None = None
    method: Method | None = None
    """The method the plan is for: the recommended one unless the user picked another."""
    request: PlanRequest | None = None
    plan: Plan | None = None
    rewards: list[str] = field(default_factory=list)
    """What GRPO / RLOO / PPO completions are scored by, as `advisor launch --reward` takes
    them (a built-in name, `module:function` or a reward-model folder); empty: the built-in
    `length` reward, which the launch screen says is a smoke test."""
    dataset_check: Text | None = None
    """The launch step's pre-flight of the dataset, as it was shown."""
    run_dir: Path | None = None
    """The run folder of the last launch from the wizard, if any."""
    demo: bool = False
    """Whether that launch was the demo (the tiny local model), not the plan's model."""
    launch_status: int | None = None
    report_path: str | None = None
    """Where the report step last wrote the session's record."""
    _detected: tuple[str, int] | bool | None = field(default=False, init=False, repr=False)

    def detected_gpu(self) -> tuple[str, int] | None:
        """This machine's GPU from NVML (asked once), or None."""
        if self._detected is False:
            self._detected = self.detect_gpu()
        return self._detected  # type: ignore[return-value]

    def recommend(self) -> str | None:
        """Decide on the interview's answers (`advisor recommend`); returns the engine's message
        instead where `advisor recommend` would stop with one. A changed recommendation resets
        the method to its winner and drops the plan's request."""
        from advisor.decision.decide import decide
        from advisor.decision.interview import answers_from_raw
        from planner.errors import InputError

        try:
            recommendation = decide(answers_from_raw(self.raw))
        except InputError as error:
            return str(error)
        if self.recommendation is None or recommendation != self.recommendation:
            self.recommendation = recommendation
            self.method = recommendation.method
            self.request = None
        return None

    def choose_method(self, method: Method) -> str | None:
        """Train `method` instead; returns the engine's warning when it is not the winner."""
        from advisor.views.reasons import override_warning

        if method is not self.method:
            self.method = method
            self.request = None
        return override_warning(self.recommendation, method)

    def initial_request(self) -> PlanRequest:
        """The plan to start from: the chosen method's default setup on the team's GPUs."""
        from advisor.decision.compute_check import default_request
        from planner.errors import InputError
        from planner.gpus import resolve_gpu
        from planner.specs import Tuning

        rec = self.recommendation
        gpus = rec.answers.parsed_gpus() or self.detected_gpu() or ("a100-80gb", 1)
        gpu, count = gpus
        try:
            gpu = resolve_gpu(gpu).name.lower()
        except InputError:
            gpu = "a100-80gb"
        check = next((c for c in rec.compute if c.method is self.method), None)
        tuning = check.setup if check is not None and check.setup is not None else Tuning.lora
        try:
            return default_request(self.method, tuning, rec.answers.model or "7b", gpu, count)
        except InputError:  # a GPU count past the planner's ceilings: start from one card
            return default_request(self.method, tuning, rec.answers.model or "7b", gpu, 1)

    def start_plan(self) -> PlanRequest:
        """The request the plan step opens on: the one set so far, else `initial_request()`."""
        if self.request is None:
            self.request = self.initial_request()
        return self.request

    def estimate(self, request: PlanRequest) -> None:
        """Set the request and its estimate (`advisor plan`); InputError propagates."""
        from planner.plan import estimate

        self.request = request
        self.plan = None
        self.plan = estimate(request)

    def record(self) -> str:
        """The Markdown record of this session (answers, recommendation, plan, outcome)."""
        from advisor.views.session_record import session_record

        return session_record(
            self.recommendation,
            self.method,
            self.plan,
            source=self.answers_path,
            today=self.today,
            run_dir=self.run_dir,
            launch_status=self.launch_status,
            rewards=self.rewards,
            demo=self.demo,
        )

"""The installed `advisor` in a real terminal (tmux): keys in, screen text out, from the first
question to the plan screen, as a person would use it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from advisor.decision.answers import Answers
from advisor.decision.compute_check import default_request
from advisor.decision.decide import decide
from advisor.decision.names import label
from planner.paths import profiles_dir
from planner.plan import estimate

ADVISOR = Path(sys.executable).with_name("advisor")

pytestmark = [
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
    pytest.mark.skipif(not ADVISOR.exists(), reason=f"{ADVISOR} is not installed"),
]


class Terminal:
    """A tmux session running one command at 80×24."""

    def __init__(self, command: str, cwd: Path) -> None:
        self.name = f"advisor-test-{uuid.uuid4().hex[:8]}"
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", self.name, "-x", "80", "-y", "24",
             "-c", str(cwd), command],
            check=True,
        )  # fmt: skip

    def screen(self) -> str:
        out = subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True
        )
        return out.stdout

    def keys(self, *keys: str) -> None:
        for key in keys:
            subprocess.run(["tmux", "send-keys", "-t", self.name, key], check=True)

    def type(self, text: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, "-l", text], check=True)

    def wait_for(self, *texts: str, timeout: float = 30.0) -> str:
        """The screen once it shows every one of `texts` and two captures in a row agree."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            now = self.screen()
            if all(text in now for text in texts) and now == last:
                return now
            last = now
            time.sleep(0.15)
        raise AssertionError(f"{texts!r} never appeared; the screen shows:\n{last}")

    def alive(self) -> bool:
        return subprocess.run(["tmux", "has-session", "-t", self.name]).returncode == 0

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


@pytest.fixture
def terminal(tmp_path):
    terms: list[Terminal] = []

    def start(command: str) -> Terminal:
        term = Terminal(command, tmp_path)
        terms.append(term)
        return term

    yield start
    for term in terms:
        term.close()


def test_a_person_answers_the_interview_and_reaches_the_plan(terminal):
    term = terminal(f"{ADVISOR}")
    screen = term.wait_for("Question 1 of 9", "^n Recommend")
    assert "What will the aligned model do?" in screen and "support_copilot" in screen

    # use_case: the third option; then risk high, the rest as first offered.
    term.keys("Down", "Down", "Enter")
    term.wait_for("Question 2 of 9")
    term.keys("Down", "Down", "Enter")
    for n in range(3, 8):
        term.wait_for(f"Question {n} of 9")
        term.keys("Enter")
    term.wait_for("Which model will you align?")
    term.type("7b")
    term.keys("Enter")
    term.wait_for("Which GPUs will train it?")
    term.keys("C-u")  # NVML may have pre-filled this machine's GPU
    term.type("1x a100-80gb")
    term.keys("Enter")

    screen = term.wait_for("Ranking", "Recommended:", "^s Save answers")
    answers = Answers(
        use_case="summarization", risk="high", ml_maturity="low",
        feedback="pairwise_preferences", reward_model="none", sft_done=True,
        priority="time_to_value", model="7b", gpus="1x a100-80gb",
    )  # fmt: skip
    rec = decide(answers)
    assert f"Recommended: {label(rec.method)}" in screen

    term.keys("C-n")
    screen = term.wait_for("Memory per GPU against", "of 80.0 GiB:", "^f Fit it")
    check = next(c for c in rec.compute if c.method is rec.method)
    plan = estimate(default_request(rec.method, check.setup, "7b", "a100-80gb", 1))
    mem = plan.memory
    assert f"{mem.per_gpu_peak_gib:.1f} of {mem.capacity_gib:.1f} GiB" in screen

    term.keys("C-q")
    deadline = time.monotonic() + 10
    while term.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not term.alive()


@pytest.mark.parametrize(
    "scenario",
    ["safety-critical-70b-eight-h100", "math-code-verifiable", "ppo-7b-one-24gb-card"],
)
def test_every_number_on_the_plan_screen_is_whole_at_80_by_24(terminal, scenario):
    """The plan screen at 80×24, before and after ^f: each memory component's GiB and the peak
    stand whole on their row (no `2…`), whatever the method's components are called."""
    from advisor.views.estimate_view import SHORT

    answers = profiles_dir() / "scenarios" / f"{scenario}.yaml"
    term = terminal(f"{ADVISOR} --answers {answers}")
    term.wait_for("Question 1 of 9")
    term.keys("C-n")
    term.wait_for("Recommended:")
    term.keys("C-n")
    for _ in ("before", "after ^f"):
        screen = term.wait_for("Memory per GPU against", "peak per GPU")
        rows = {line.split("▏")[-1].strip() for line in screen.splitlines()}
        assert "…" not in "".join(r for r in rows if r.startswith(tuple(SHORT.values())))
        numbers = [r for r in rows if r.startswith("peak per GPU")]
        assert numbers and numbers[0].split()[3].replace(".", "").isdigit(), screen
        term.keys("C-f")
        time.sleep(1.0)

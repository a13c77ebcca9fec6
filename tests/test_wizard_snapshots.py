"""How each wizard screen looks at 80×24 (pytest-textual-snapshot; the SVGs are in
__snapshots__/; regenerate with `pytest tests/test_wizard_snapshots.py --snapshot-update`).

The looks are pinned, not the numbers: the plan is a frozen estimate (fixtures/wizard_plan.json)
and the runners' settings are cut to fields that stay, so a planner or runner change does not
redraw these screens. The Pilot tests in test_wizard.py check the live numbers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from textual.widgets import Input

from advisor.decision.answers import read_answers_file
from advisor.wizard.app import WizardApp
from advisor.wizard.session import WizardSession
from planner.paths import profiles_dir
from planner.specs import Plan
from tests.wizard_fakes import fake_launcher

SIZE = (80, 24)
SCENARIO = profiles_dir() / "scenarios" / "support-copilot.yaml"
FROZEN_PLAN = Plan.model_validate_json(
    (Path(__file__).parent / "fixtures" / "wizard_plan.json").read_text()
)


@pytest.fixture(autouse=True)
def frozen_plan(monkeypatch):
    """Every estimate is the frozen one (for the request the screen holds)."""

    def estimate(session, request):
        session.request = request
        session.plan = FROZEN_PLAN.model_copy(update={"request": request})

    monkeypatch.setattr(WizardSession, "estimate", estimate)


# Keys from the first question to each screen, with every answer pre-filled from SCENARIO.
KEYS = {
    "recommendation": ["ctrl+n"],
    "plan": ["ctrl+n", "ctrl+n"],
    "launch": ["ctrl+n", "ctrl+n", "ctrl+n"],
    "report": ["ctrl+n", "ctrl+n", "ctrl+n", "ctrl+n"],
}


def prefilled_app() -> WizardApp:
    return WizardApp(
        answers=read_answers_file(SCENARIO),
        answers_path="answers.yaml",
        detect_gpu=lambda: None,
        today=dt.date(2026, 1, 1),
    )


async def steady_cursor(pilot) -> None:
    """Stop the text cursors blinking, so a slow machine draws the same frame."""
    for widget in pilot.app.screen.query(Input):
        widget.cursor_blink = False
    await pilot.wait_for_animation()
    await pilot.pause()


def test_interview_first_question(snap_compare):
    app = WizardApp(detect_gpu=lambda: None, today=dt.date(2026, 1, 1))
    assert snap_compare(app, run_before=steady_cursor, terminal_size=SIZE)


@pytest.fixture
def steady_runner_settings(monkeypatch):
    """The runners' settings as the launch screen draws them, cut to fields that stay: the
    runners add fields as they grow (the Pilot tests check the real ones)."""
    import runners.settings

    real = runners.settings.build_run_spec
    keep = ("per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
            "num_train_epochs", "bf16", "beta")  # fmt: skip

    def build(*args, **kwargs):
        spec = real(*args, **kwargs)
        fields = {name: spec.trl_config[name] for name in keep if name in spec.trl_config}
        return spec.model_copy(update={"trl_config": fields, "starting_values": [], "warnings": []})

    monkeypatch.setattr(runners.settings, "build_run_spec", build)


@pytest.mark.parametrize("screen", list(KEYS))
def test_screen(screen, snap_compare, steady_runner_settings):
    async def walk(pilot):
        for key in KEYS[screen]:
            await pilot.press(key)
            await pilot.pause()
        await steady_cursor(pilot)

    assert snap_compare(prefilled_app(), run_before=walk, terminal_size=SIZE)


def test_run_screen_after_a_run(snap_compare, tmp_path, monkeypatch, steady_runner_settings):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("advisor.wizard.screens.run.start_launch", fake_launcher(tmp_path, 4, []))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text((profiles_dir() / "models" / "llama-2-7b.json").read_text())
    (tmp_path / "pairs.jsonl").write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n' * 4)
    app = prefilled_app()

    async def launch_and_wait(pilot):
        pilot.app.animation_level = "none"  # the progress bar draws its final state at once
        for key in KEYS["plan"]:
            await pilot.press(key)
            await pilot.pause()
        pilot.app.screen.query_one("#model", Input).value = "model"
        await pilot.pause()
        await pilot.press("ctrl+n")
        await pilot.pause()
        pilot.app.screen.query_one("#dataset", Input).value = "pairs.jsonl"
        await pilot.press("enter")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("ctrl+l")
        for _ in range(200):
            await pilot.pause(0.05)
            if pilot.app.session.launch_status is not None:
                break
        await steady_cursor(pilot)

    assert snap_compare(app, run_before=launch_and_wait, terminal_size=SIZE)

"""The wizard, driven with Textual's Pilot: it says what `advisor recommend` and `advisor plan`
say for the same answers and settings, and it is usable from the keyboard alone."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from textual.widgets import Input, Select, Static

from advisor.cli import main
from advisor.decision.answers import load_answers, read_answers_file
from advisor.decision.decide import decide
from advisor.decision.interview import QUESTIONS, answers_yaml, raw_from_mapping, save_answers
from advisor.decision.names import label
from advisor.views.plan_view import command_line
from advisor.views.reasons import override_warning, recommendation_json
from advisor.views.session_record import session_record
from advisor.wizard.app import WizardApp
from advisor.wizard.session import WizardSession
from planner.fit import search, search_space
from planner.paths import profiles_dir
from planner.plan import estimate
from planner.specs import PlanRequest
from tests.wizard_fakes import fake_launcher

pytestmark = pytest.mark.anyio

SCENARIOS = profiles_dir() / "scenarios"
SIZE = (80, 24)
TODAY = dt.date(2026, 1, 1)


@pytest.fixture
def anyio_backend():
    return "asyncio"


def make_app(answers: dict | None = None, **kwargs) -> WizardApp:
    return WizardApp(answers=answers, detect_gpu=lambda: None, today=TODAY, **kwargs)


def cli_json(argv: list[str]) -> dict:
    """What `advisor ARGV` prints, parsed (stdout redirected: the running app holds sys.stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return json.loads(out.getvalue())


async def answer_by_keys(pilot, answers: dict) -> None:
    """Answer every question as a person would: arrow to the option, Enter; type free text."""
    for q in QUESTIONS:
        value = answers.get(q.field)
        if q.optional:
            await pilot.press("ctrl+u", *list(value or ""), "enter")
            continue
        value = str(value).lower() if isinstance(value, bool) else value
        index = [v for v, _ in q.options].index(value)
        await pilot.press("home", *["down"] * index, "enter")
    await pilot.pause()


async def forward(pilot, screens: int = 1) -> None:
    """Go on by `screens` steps with the wizard's next key, letting each screen settle."""
    for _ in range(screens):
        await pilot.press("ctrl+n")
        await pilot.pause()


def text_of(static: Static) -> str:
    """A Static's content as plain text, drawn 200 columns wide."""
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(static.content)
    return console.export_text()


def estimate_text(app: WizardApp) -> str:
    return text_of(app.screen.query_one("#estimate", Static))


async def test_whole_flow_matches_recommend_and_plan_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # short relative paths to type
    scenario = read_answers_file(SCENARIOS / "ppo-7b-one-24gb-card.yaml")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await answer_by_keys(pilot, scenario)
        assert type(app.screen).__name__ == "RecommendationScreen"

        # Save the answers; `advisor recommend --answers` on that file says the same thing.
        answers_file = tmp_path / "answers.yaml"
        await pilot.press("ctrl+s")
        await pilot.pause()
        await pilot.press("ctrl+u", *"answers.yaml", "enter")
        await pilot.pause()
        assert answers_file.exists()
        cli = cli_json(["recommend", "--answers", "answers.yaml", "--json"])
        assert cli == recommendation_json(app.session.recommendation)
        assert cli == recommendation_json(
            decide(load_answers(SCENARIOS / "ppo-7b-one-24gb-card.yaml"))
        )

        # Plan: the estimate is `advisor plan --json` for the settings shown.
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert type(app.screen).__name__ == "PlanScreen"
        assert (
            app.session.request.gpu == "rtx-4090"
            and app.session.request.method is app.session.recommendation.method
        )
        seq = app.screen.query_one("#seq_len", Input)
        seq.focus()
        await pilot.press("ctrl+u", "2", "0", "4", "8")
        app.screen.query_one("#samples", Input).focus()
        await pilot.press(*"12000")
        await pilot.pause()
        assert app.session.request.seq_len == 2048 and app.session.request.samples == 12000
        flags = shlex.split(command_line(app.session.request))[1:]
        cli_plan = cli_json([*flags, "--json"])
        assert cli_plan == app.session.plan.model_dump(mode="json")
        assert app.session.plan == estimate(app.session.request)
        shown = estimate_text(app)
        mem = app.session.plan.memory
        assert f"{mem.per_gpu_peak_gib:.1f} of {mem.capacity_gib:.1f} GiB" in shown
        assert "Run " in shown and "12,000 rows" in shown

        # Fit it: the planner's best setup on the team's GPUs is applied, and the estimate
        # follows; it never adds GPUs the team does not have.
        before = app.session.request
        await pilot.press("ctrl+f")
        await pilot.pause()
        space = search_space(before.num_gpus, before.nodes)
        assert app.session.request == search(before, space=space)[0].request
        assert app.session.request.world_size <= before.world_size
        assert app.session.plan == estimate(app.session.request)
        assert app.screen.query_one("#batch_size", Input).value == str(
            app.session.request.batch_size
        )

        # Launch shows the commands; launching itself is disabled until the runners exist.
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert type(app.screen).__name__ == "LaunchScreen"
        body = text_of(app.screen.query_one("#launch-body", Static))
        assert "advisor launch" in body
        assert app.screen.check_action("launch", ()) is None

        # Report: written where the user says, with answers, recommendation and plan.
        await pilot.press("ctrl+n")
        await pilot.pause()
        record_file = tmp_path / "record.md"
        await pilot.press("ctrl+u", *"record.md", "ctrl+s")
        await pilot.pause()
        text = record_file.read_text()
        assert text == session_record(
            app.session.recommendation,
            app.session.method,
            app.session.plan,
            source="answers.yaml",
            today=TODAY,
        )
        assert "safety_critical_automation" in text and "## Capacity plan" in text
        assert f"{app.session.plan.memory.per_gpu_peak_gib:.1f} GiB" in text

        # Esc walks back through every step.
        for name in ("LaunchScreen", "PlanScreen", "RecommendationScreen", "InterviewScreen"):
            await pilot.press("escape")
            await pilot.pause()
            assert type(app.screen).__name__ == name


async def test_prefilled_answers_need_only_enter_and_give_decide_result():
    path = SCENARIOS / "support-copilot.yaml"
    app = make_app(read_answers_file(path), answers_path=str(path))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*["enter"] * len(QUESTIONS))
        await pilot.pause()
        assert app.session.recommendation == decide(load_answers(path))
        assert app.session.method.value == "dpo"


async def test_recommend_key_jumps_ahead_when_the_file_answered_everything():
    path = SCENARIOS / "math-code-verifiable.yaml"
    app = make_app(read_answers_file(path))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.session.recommendation == decide(load_answers(path))


async def test_recommend_key_names_the_questions_still_open():
    app = make_app({"risk": "low"})
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert type(app.screen).__name__ == "InterviewScreen"
        error = text_of(app.screen.query_one("#question-error", Static))
        assert "use_case" in error and "risk" not in error


async def test_escape_goes_back_one_question_and_keeps_the_answer():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("down", "enter", "enter")
        assert app.screen.index == 2
        await pilot.press("escape")
        assert app.screen.index == 1 and app.session.raw["use_case"] == "knowledge_assistant"
        await pilot.press("escape", "escape")  # on the first question Esc stays put
        assert app.screen.index == 0


async def test_an_unknown_model_is_refused_with_the_planners_message():
    app = make_app(read_answers_file(SCENARIOS / "support-copilot.yaml"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*["enter"] * 7, *"gpt-17", "enter")
        await pilot.pause()
        assert app.screen.question.field == "model"
        assert "gpt-17" in text_of(app.screen.query_one("#question-error", Static))


async def test_picking_another_method_carries_the_engines_warning_into_the_plan():
    path = SCENARIOS / "support-copilot.yaml"
    app = make_app(read_answers_file(path))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+n")
        await pilot.pause()
        rec = app.session.recommendation
        await pilot.press("down", "down", "enter")
        await pilot.pause()
        chosen = rec.ranking[2].method
        assert app.session.method is chosen
        warning = override_warning(rec, chosen)
        assert warning and "behind DPO" in warning
        assert any(warning in n.message for n in app._notifications)
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.session.request.method is chosen and app.session.plan.method is chosen
        assert "Method chosen" in app.session.record() and warning in app.session.record()


async def test_a_bad_knob_value_says_so_and_a_good_one_restores_the_estimate():
    app = make_app(read_answers_file(SCENARIOS / "support-copilot.yaml"))
    async with app.run_test(size=SIZE) as pilot:
        await forward(pilot, screens=2)
        grad = app.screen.query_one("#grad_accum", Input)
        grad.focus()
        await pilot.press("ctrl+u", "0")
        await pilot.pause()
        assert app.session.plan is None
        assert "greater than 0" in estimate_text(app)
        await pilot.press("backspace", "4")
        await pilot.pause()
        assert (
            app.session.plan == estimate(app.session.request)
            and app.session.request.grad_accum == 4
        )


async def test_gpu_knobs_are_the_planners_layout():
    app = make_app(read_answers_file(SCENARIOS / "support-copilot.yaml"))
    async with app.run_test(size=SIZE) as pilot:
        await forward(pilot, screens=2)
        app.screen.query_one("#gpu", Select).value = "h100-80gb"
        app.screen.query_one("#gpus", Select).value = "16"
        app.screen.query_one("#sharding", Select).value = "zero3"
        await pilot.pause()
        r = app.session.request
        assert (r.gpu, r.num_gpus, r.nodes, r.sharding.value) == ("h100-80gb", 8, 2, "zero3")
        assert app.session.plan == estimate(r) and app.session.plan.gpu.count == 16


async def test_generation_knobs_show_for_the_methods_they_change_and_reach_the_plan():
    app = make_app(read_answers_file(SCENARIOS / "support-copilot.yaml"))
    async with app.run_test(size=SIZE) as pilot:
        await forward(pilot, screens=2)
        shown = lambda field: app.screen.query_one(f"#{field}", Input).display  # noqa: E731
        assert app.session.request.method.value == "dpo"
        assert not any(shown(f) for f in ("num_generations", "prompt_len", "beta", "ppo_epochs"))
        app.screen.query_one("#method", Select).value = "grpo"
        await pilot.pause()
        assert all(shown(f) for f in ("num_generations", "prompt_len", "completion_len", "beta"))
        assert not shown("ppo_epochs")
        assert app.screen.query_one("#num_generations", Input).value == "8"  # TRL's default
        for field, value in (
            ("num_generations", "4"),
            ("prompt_len", "256"),
            ("completion_len", "768"),
            ("beta", "0.04"),
            ("epochs", "2"),
        ):
            app.screen.query_one(f"#{field}", Input).value = value
            await pilot.pause()
        r = app.session.request
        assert (r.num_generations, r.prompt_len, r.completion_len, r.beta, r.epochs) == (
            4, 256, 768, 0.04, 2.0
        )  # fmt: skip
        assert r.seq_len == 1024 and app.screen.query_one("#seq_len", Input).value == "1024"
        assert app.session.plan == estimate(r)
        app.screen.query_one("#method", Select).value = "ppo"
        await pilot.pause()
        assert shown("ppo_epochs") and not shown("num_generations") and not shown("beta")
        assert app.session.request.num_generations is None  # not GRPO's setting carried over


async def test_grpo_launches_with_the_reward_chosen_on_the_launch_screen(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls: list = []
    monkeypatch.setattr(
        "advisor.wizard.screens.run.start_launch", fake_launcher(tmp_path, 2, calls)
    )
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(
        (profiles_dir() / "models" / "qwen2.5-0.5b.json").read_text()
    )
    data = tmp_path / "prompts.jsonl"
    data.write_text('{"prompt": "Say hi"}\n' * 16)
    app = make_app(read_answers_file(SCENARIOS / "ppo-7b-one-24gb-card.yaml"))
    async with app.run_test(size=SIZE) as pilot:
        await forward(pilot, screens=2)
        app.screen.query_one("#method", Select).value = "grpo"
        app.screen.query_one("#model", Input).value = str(model)
        await pilot.pause()
        await forward(pilot)
        assert app.screen.query_one("#reward-row").display
        body = lambda: text_of(app.screen.query_one("#launch-body", Static))  # noqa: E731
        assert "no --reward given: using the built-in length reward" in body()
        app.screen.query_one("#reward", Input).focus()
        await pilot.press(*"nothing-here", "enter")
        await pilot.pause()
        assert "not a built-in" in body() and app.session.rewards == []
        await pilot.press("ctrl+u", *"distinct_words", "enter")
        await pilot.pause()
        assert app.session.rewards == ["distinct_words"]
        assert "--reward distinct_words" in body() and "length reward" not in body()
        app.screen.query_one("#dataset", Input).value = str(data)
        app.screen.query_one("#dataset", Input).focus()
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("ctrl+l")
        await wait_for_run_end(pilot, app)
        ((request, options),) = calls
        assert request.method.value == "grpo" and options.rewards == ["distinct_words"]
        record = app.session.record()
        assert "--reward distinct_words" in record
        # The plan's model is not the interview's: the record says which one the check used.
        assert "The plan below was edited after the recommendation" in record
        assert "compute check used the interview's" in record


async def test_a_dpo_launch_screen_has_no_reward_row():
    app = make_app(read_answers_file(SCENARIOS / "ppo-7b-one-24gb-card.yaml"))
    async with app.run_test(size=SIZE) as pilot:
        await forward(pilot, screens=2)
        app.screen.query_one("#method", Select).value = "dpo"
        await pilot.pause()
        await forward(pilot)
        assert type(app.screen).__name__ == "LaunchScreen"
        assert not app.screen.query_one("#reward-row").display
        assert "The plan below was edited" not in app.session.record()


async def test_nvml_gpu_prefills_the_gpus_answer():
    app = WizardApp(detect_gpu=lambda: ("h100-80gb", 8), today=TODAY)
    app.session.raw.update(
        {
            k: v
            for k, v in read_answers_file(SCENARIOS / "support-copilot.yaml").items()
            if k in {q.field for q in QUESTIONS}
        }
    )
    app.session.raw["sft_done"] = "true"
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*["enter"] * 8)
        assert app.screen.query_one("#free-text", Input).value == "8x h100-80gb"
        await pilot.press("enter")
        await pilot.pause()
        assert app.session.recommendation.answers.gpus == "8x h100-80gb"


async def test_without_nvml_the_plan_starts_on_the_default_card():
    app = make_app(read_answers_file(SCENARIOS / "support-copilot.yaml"))
    async with app.run_test(size=SIZE) as pilot:
        await forward(pilot, screens=2)
        assert app.session.request == PlanRequest(model="7b", method="dpo", tuning="lora")
        assert app.screen.query_one("#gpu", Select).value == "a100-80gb"


async def test_command_palette_runs_the_screens_actions():
    app = make_app(read_answers_file(SCENARIOS / "support-copilot.yaml"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+n")
        await pilot.pause()
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Plan")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert type(app.screen).__name__ == "PlanScreen"


def test_saved_answers_load_back_the_same_for_every_example(tmp_path):
    for path in sorted(SCENARIOS.glob("*.yaml")):
        answers = load_answers(path)
        saved = save_answers(answers, tmp_path / path.name)
        assert load_answers(saved) == answers
        assert "expected" not in answers_yaml(answers)


def test_detect_gpu_answers_none_without_a_driver(monkeypatch):
    import pynvml

    from advisor.wizard.gpu_detect import detect_gpu

    def no_driver():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", no_driver)
    assert detect_gpu() is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--answers", "no-such-file.yaml"], "answers file no-such-file.yaml: no such file"),
        (["wizard", "--answers", str(SCENARIOS / "../../requirements.lock")], "expected a mapping"),
    ],
)
def test_a_bad_answers_file_stops_before_the_screen_changes(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_bad_value_in_a_partial_answers_file_is_named(tmp_path, capsys):
    path = tmp_path / "partial.yaml"
    path.write_text("risk: lo\n")
    assert main(["--answers", str(path)]) == 2
    assert "did you mean 'low'" in capsys.readouterr().err


def test_starting_the_wizard_imports_no_torch_transformers_or_trl():
    code = (
        "import sys; import advisor.cli, advisor.commands.wizard, advisor.wizard.app;"
        "from advisor.wizard.screens import recommendation, plan, launch, report, run;"
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules];"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_record_has_answers_recommendation_choice_plan_and_outcome():
    rec = decide(load_answers(SCENARIOS / "support-copilot.yaml"))
    plan = estimate(PlanRequest(model="7b", method="kto", samples=5000))
    text = session_record(rec, plan.method, plan, source="a.yaml", today=TODAY)
    for part in ("# Decision record", "| use_case | support_copilot |", "## Method chosen",
                 "KTO, against the recommendation of DPO", "## Capacity plan",
                 "advisor launch --model 7b --method kto", "## Measured outcome"):  # fmt: skip
        assert part in text
    assert Path("a.yaml").name in text


def test_the_session_recommends_plans_and_records_without_an_app():
    """The wizard's state is a plain object: each step calls what the CLI calls."""
    answers = read_answers_file(SCENARIOS / "support-copilot.yaml")
    session = WizardSession(raw=raw_from_mapping(answers), detect_gpu=lambda: None, today=TODAY)
    assert session.recommend() is None
    assert session.recommendation == decide(load_answers(SCENARIOS / "support-copilot.yaml"))
    assert session.method is session.recommendation.method
    request = session.start_plan()
    assert session.start_plan() is request and request.method is session.method
    session.estimate(request)
    assert session.plan == estimate(request)
    other = next(r.method for r in session.recommendation.ranking if r.method is not session.method)
    assert session.choose_method(other) == override_warning(session.recommendation, other)
    assert session.method is other and session.request is None
    assert "## Method chosen" in session.record()


async def test_launch_preflight_counts_the_dataset_and_times_the_run(tmp_path):
    data = tmp_path / "pairs.jsonl"
    row = '{"prompt": "Hi", "chosen": "Hello! How can I help?", "rejected": "What."}\n'
    data.write_text(row * 300)
    app = make_app(read_answers_file(SCENARIOS / "support-copilot.yaml"))
    async with app.run_test(size=SIZE) as pilot:
        await forward(pilot, screens=2)
        await pilot.press("ctrl+n")
        await pilot.pause()
        app.screen.query_one("#dataset", Input).value = str(data)
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "✓" in text_of(app.screen.query_one("#preflight", Static))
        assert app.session.request.dataset == str(data)
        assert (
            app.session.plan == estimate(app.session.request)
            and app.session.plan.time.samples == 300
        )
        app.screen.query_one("#dataset", Input).value = str(tmp_path / "missing.jsonl")
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "✗" in text_of(app.screen.query_one("#preflight", Static))


async def test_a_method_changed_on_the_plan_shows_on_the_ranking():
    app = make_app(read_answers_file(SCENARIOS / "support-copilot.yaml"))
    async with app.run_test(size=SIZE) as pilot:
        await forward(pilot, screens=2)
        app.screen.query_one("#method", Select).value = "kto"
        await pilot.pause()
        assert app.session.method.value == "kto" and app.session.plan.method.value == "kto"
        await pilot.press("escape")
        await pilot.pause()
        choice = text_of(app.screen.query_one("#choice", Static))
        assert "KTO" in choice and "not the recommendation" in choice


async def test_enter_on_the_ranking_plans_that_method_and_no_stale_warning_stays():
    app = make_app(read_answers_file(SCENARIOS / "support-copilot.yaml"))
    async with app.run_test(size=SIZE) as pilot:
        await forward(pilot)
        second = app.session.recommendation.ranking[1].method
        await pilot.press("down", "enter")
        await pilot.pause()
        assert type(app.screen).__name__ == "PlanScreen"
        assert app.session.method is second and app.session.request.method is second
        assert [n.title for n in app._notifications] == [f"Training {label(second)}"]
        app.screen.query_one("#method", Select).value = app.session.recommendation.method.value
        await pilot.pause()
        assert not list(app._notifications)  # "Training …" no longer holds
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("up", "enter")
        await pilot.pause()
        assert type(app.screen).__name__ == "PlanScreen" and not list(app._notifications)


async def test_a_long_model_path_shows_from_its_start_with_the_whole_path_as_tooltip(tmp_path):
    model = tmp_path / "a-rather-long-folder-name" / "alignment-advisor" / "tiny-llama"
    model.mkdir(parents=True)
    (model / "config.json").write_text(
        (profiles_dir() / "models" / "qwen2.5-0.5b.json").read_text()
    )
    answers = read_answers_file(SCENARIOS / "support-copilot.yaml") | {"model": str(model)}
    app = make_app(answers)
    async with app.run_test(size=SIZE) as pilot:
        await forward(pilot, screens=2)
        knob = app.screen.query_one("#model", Input)
        assert knob.value == str(model) and knob.cursor_position == 0
        assert knob.tooltip == str(model)


@pytest.mark.slow
async def test_with_no_model_folder_the_wizard_runs_the_demo_to_a_report(
    tmp_path, monkeypatch, tiny_model
):
    """Interview → recommendation → plan → launch (no model folder, so ^l is off) → ^t: the
    demo trains for real, and the report records it as the demo."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("runners.demo.tiny_model_dir", lambda: tiny_model)
    app = make_app(read_answers_file(SCENARIOS / "support-copilot.yaml"))
    async with app.run_test(size=SIZE) as pilot:
        await forward(pilot, screens=3)
        assert type(app.screen).__name__ == "LaunchScreen"
        assert app.screen.check_action("launch", ()) is None
        body = text_of(app.screen.query_one("#launch-body", Static))
        assert "^t runs the demo instead" in body and "--local-dir" in body
        await pilot.press("ctrl+t")
        for _ in range(100):
            await pilot.pause(0.1)
            if type(app.screen).__name__ == "RunScreen":
                break
        assert type(app.screen).__name__ == "RunScreen", [n.message for n in app._notifications]
        for _ in range(1800):
            await pilot.pause(0.1)
            if app.session.launch_status is not None:
                break
        assert app.session.launch_status == 0, app.screen.log_path.read_text()
        run = app.session.run_dir
        assert (run / "final").is_dir() and app.session.demo
        assert app.session.request.model == "7b"  # the plan is still the team's
        await pilot.press("ctrl+n")
        await pilot.pause()
        await pilot.press("ctrl+u", *"record.md", "ctrl+s")
        await pilot.pause()
        record = (tmp_path / "record.md").read_text()
        assert "The run below is the demo" in record and "exit status: 0" in record


async def launch_ready_app(pilot, app, tmp_path) -> None:
    """From the first question to a launch screen with a model folder and a dataset."""
    model = tmp_path / "model"
    model.mkdir()
    config = (profiles_dir() / "models" / "qwen2.5-0.5b.json").read_text()
    (model / "config.json").write_text(config)
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "Hi", "chosen": "Hello! How can I help?", "rejected": "No."}\n' * 8)
    await pilot.press("ctrl+n")
    await pilot.pause()
    await pilot.press("ctrl+n")
    await pilot.pause()
    app.screen.query_one("#model", Input).value = str(model)
    await pilot.pause()
    await pilot.press("ctrl+n")
    await pilot.pause()
    assert app.screen.check_action("launch", ()) is None  # no dataset yet
    app.screen.query_one("#dataset", Input).value = str(data)
    await pilot.press("enter")
    await app.workers.wait_for_complete()
    await pilot.pause()
    assert "✓ 8 rows" in text_of(app.screen.query_one("#preflight", Static))
    assert app.screen.check_action("launch", ()) is True


async def wait_for_run_end(pilot, app) -> None:
    for _ in range(200):
        await pilot.pause(0.05)
        if app.session.launch_status is not None:
            return
    raise AssertionError("the run never ended")


async def test_launch_follows_the_run_live_and_the_report_reads_its_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls: list = []
    monkeypatch.setattr(
        "advisor.wizard.screens.run.start_launch", fake_launcher(tmp_path, 4, calls)
    )
    app = make_app(read_answers_file(SCENARIOS / "support-copilot.yaml"))
    async with app.run_test(size=SIZE) as pilot:
        await launch_ready_app(pilot, app, tmp_path)
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert type(app.screen).__name__ == "RunScreen"
        ((request, options),) = calls  # the request itself, not a command line rebuilt
        assert request == app.session.request
        assert options.output == tmp_path / "runs" and options.quiet and not options.dry_run
        assert options.recommendation["method"] == "dpo"
        await wait_for_run_end(pilot, app)
        await pilot.pause()
        assert app.session.launch_status == 0
        assert app.session.run_dir == tmp_path / "runs" / "dpo-20260101-000000"
        metrics = text_of(app.screen.query_one("#run-metrics", Static))
        assert "step 4 / 4" in metrics and "rewards/margins" in metrics
        assert list(app.screen.query_one("#loss-chart").data) == [1.0, 0.5, 1 / 3, 0.25]
        assert list(app.screen.query_one("#gpu-chart").data) == [1.0, 2.0, 3.0, 4.0]
        gpu = text_of(app.screen.query_one("#gpu-title", Static))
        assert (
            "peak 4.0 GiB" in gpu
            and f"estimate {app.session.plan.memory.per_gpu_peak_gib:.1f}" in gpu
        )
        record = app.session.record()
        assert "| peak memory per GPU | 3.1 GiB | 3.4 GiB |" in record
        assert "exit status: 0" in record
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert type(app.screen).__name__ == "ReportScreen"


async def test_stop_sends_ctrl_c_to_the_run_and_back_waits_for_it_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("advisor.wizard.screens.run.start_launch", fake_launcher(tmp_path, 200, []))
    app = make_app(read_answers_file(SCENARIOS / "support-copilot.yaml"))
    async with app.run_test(size=SIZE) as pilot:
        await launch_ready_app(pilot, app, tmp_path)
        await pilot.press("ctrl+l")
        await pilot.pause(0.5)
        screen = app.screen
        # Esc and ^n do nothing while it trains, so the footer does not offer them.
        assert screen.running and screen.check_action("back", ()) is False
        assert screen.check_action("next", ()) is False
        await pilot.press("escape")
        assert app.screen is screen  # Esc waits for the run to end
        await pilot.press("ctrl+x")
        await wait_for_run_end(pilot, app)
        assert app.session.launch_status == 130
        assert "No validation record" in app.session.record()
        await pilot.press("escape")
        await pilot.pause()
        assert type(app.screen).__name__ == "LaunchScreen"


async def test_ctrl_q_during_a_run_asks_then_stops_it_with_a_checkpoint_and_quits(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("advisor.wizard.screens.run.start_launch", fake_launcher(tmp_path, 200, []))
    app = make_app(read_answers_file(SCENARIOS / "support-copilot.yaml"))
    async with app.run_test(size=SIZE) as pilot:
        await launch_ready_app(pilot, app, tmp_path)
        await pilot.press("ctrl+l")
        await pilot.pause(0.5)
        run = app.screen
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert type(app.screen).__name__ == "ConfirmQuit" and run.running  # asked, not killed
        await pilot.press("n")
        await pilot.pause()
        assert app.screen is run and run.running and not run.stop_request.asked
        await pilot.press("ctrl+q")
        await pilot.pause()
        await pilot.press("y")
        for _ in range(100):
            await pilot.pause(0.05)
            if not app.is_running:
                break
        assert run.stop_request.asked and not run.running
        assert run.exit_status == 130  # stopped the way Ctrl-C stops `advisor launch`
    assert app.return_code in (0, None)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_the_answers_sidebar_breaks_values_between_words_and_not_at_all_when_wide(size):
    app = make_app(read_answers_file(SCENARIOS / "safety-critical-70b-eight-h100.yaml"))
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        sidebar = app.screen.query_one("#answers-so-far", Static)
        console = Console(width=sidebar.content_size.width, record=True, file=io.StringIO())
        console.print(sidebar.content)
        lines = console.export_text().splitlines()
        words = {w for line in lines for w in line.split()}
        assert {"safety", "critical", "automation", "pairwise", "preferences"} <= words
        if size[0] >= 120:
            assert any("safety critical automation" in line for line in lines)
            assert any("pairwise preferences" in line for line in lines)


def test_run_watch_reads_steps_metrics_and_eta(tmp_path):
    from advisor.wizard.run_watch import RunWatch
    from planner.specs import Method

    lines = [{"step": s, "max_steps": 10, "time": 100 + 2 * s, "loss": 1 / s} for s in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"ste')
    watch = RunWatch(tmp_path, Method.dpo)
    watch.poll()
    assert (watch.step, watch.max_steps) == (3, 10)
    assert watch.seconds_per_step() == 2 and watch.eta_seconds() == 14
    assert watch.metrics() == [("loss", 1 / 3)]
    with (tmp_path / "metrics.jsonl").open("a") as handle:  # the half-written line completes
        handle.write('p": 4, "time": 108, "loss": 0.2}\n')
    watch.poll()
    assert watch.step == 4 and watch.loss == [1.0, 0.5, 1 / 3, 0.2]


async def test_launch_screen_shows_the_runners_trainer_settings():
    app = make_app(read_answers_file(SCENARIOS / "support-copilot.yaml"))
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(3):
            await pilot.press("ctrl+n")
            await pilot.pause()
        body = text_of(app.screen.query_one("#launch-body", Static))
        assert "DPOTrainer with DPOConfig" in body and "per_device_train_batch_size" in body
        assert "launch is off: --dataset PATH is required" in body
        app.session.request = app.session.request.model_copy(update={"dataset": "pairs.jsonl"})
        app.screen.show_body()
        body = text_of(app.screen.query_one("#launch-body", Static))
        assert "launch is off: --model 7b: launch needs a model folder" in body
        assert app.screen.check_action("launch", ()) is None


def test_the_wizard_launches_through_the_runners_not_a_command_line():
    """The launch and run screens call runners.launch: no argv rebuilt, no subprocess of
    `advisor launch`, no refusal checks of their own."""
    import inspect

    from advisor.wizard.screens import launch, run

    for module in (launch, run):
        source = inspect.getsource(module)
        for word in ("shlex", "subprocess", "advisor.cli", "sys.executable", "config.json"):
            assert word not in source, (module.__name__, word)
    assert "runners.launch import launchable" in inspect.getsource(launch.launch_blocker)


@pytest.mark.parametrize(
    ("change", "message"),
    [({"gpus": "1x foo-gpu"}, "unknown GPU"), ({"model": "99b"}, "unknown model")],
)
async def test_answers_the_engine_refuses_are_named_not_a_crash(change, message):
    answers = {**read_answers_file(SCENARIOS / "ppo-7b-one-24gb-card.yaml"), **change}
    app = make_app(answers)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert type(app.screen).__name__ == "InterviewScreen"
        assert message in text_of(app.screen.query_one("#question-error", Static))


async def test_the_model_question_completes_profile_names():
    app = make_app(read_answers_file(SCENARIOS / "support-copilot.yaml"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*["enter"] * 7, *"llama-3.1-7")
        await pilot.pause()
        await pilot.press("right", "enter")
        await pilot.pause()
        assert app.session.raw["model"] == "llama-3.1-70b"


async def test_saving_the_record_over_an_existing_file_asks_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    record = tmp_path / "record.md"
    record.write_text("an older record\n")
    app = make_app(read_answers_file(SCENARIOS / "support-copilot.yaml"))
    async with app.run_test(size=SIZE) as pilot:
        await forward(pilot, screens=4)
        assert type(app.screen).__name__ == "ReportScreen"
        await pilot.press("ctrl+u", *"record.md", "ctrl+s")
        await pilot.pause()
        # The first ^s asks; Esc keeps the older file.
        assert type(app.screen).__name__ == "ConfirmOverwrite"
        assert "record.md already exists" in text_of(app.screen.query(Static).first())
        await pilot.press("escape")
        await pilot.pause()
        assert type(app.screen).__name__ == "ReportScreen"
        assert record.read_text() == "an older record\n"
        # A second ^s within the dialog overwrites it.
        await pilot.press("ctrl+s")
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert type(app.screen).__name__ == "ReportScreen"
        assert record.read_text() == app.screen.text
        # A new file is written at once, without a question.
        await pilot.press("ctrl+u", *"fresh.md", "enter")
        await pilot.pause()
        assert type(app.screen).__name__ == "ReportScreen"
        assert (tmp_path / "fresh.md").read_text() == app.screen.text


async def test_saving_the_answers_over_an_existing_file_asks_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    answers_file = tmp_path / "answers.yaml"
    answers_file.write_text("# keep me\n")
    app = make_app(read_answers_file(SCENARIOS / "support-copilot.yaml"))
    async with app.run_test(size=SIZE) as pilot:
        await forward(pilot)
        assert type(app.screen).__name__ == "RecommendationScreen"
        await pilot.press("ctrl+s")
        await pilot.pause()
        await pilot.press("ctrl+u", *"answers.yaml", "enter")
        await pilot.pause()
        assert type(app.screen).__name__ == "ConfirmOverwrite"
        await pilot.press("n")
        await pilot.pause()
        assert type(app.screen).__name__ == "RecommendationScreen"
        assert answers_file.read_text() == "# keep me\n"
        # Asked again, Enter confirms: the file now loads back as the interview's answers.
        await pilot.press("ctrl+s")
        await pilot.pause()
        await pilot.press("ctrl+u", *"answers.yaml", "enter")
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        assert type(app.screen).__name__ == "RecommendationScreen"
        assert load_answers(answers_file) == app.session.recommendation.answers


async def test_a_save_path_that_cannot_be_written_is_a_notification_not_a_crash(tmp_path):
    app = make_app(read_answers_file(SCENARIOS / "support-copilot.yaml"))
    async with app.run_test(size=SIZE) as pilot:
        await forward(pilot, screens=4)
        for path in ("~nosuchuser/r.md", str(tmp_path / "missing" / "r.md"), str(tmp_path)):
            app.screen.query_one("#report-path", Input).value = path
            await pilot.press("ctrl+s")
            await pilot.pause()
            assert type(app.screen).__name__ == "ReportScreen"
        messages = [n.message for n in app._notifications]
        assert any("home folder" in m for m in messages)
        assert any("cannot write it" in m for m in messages)
        assert any("a folder" in m for m in messages)


def test_the_recommendations_compute_check_reads_whole_in_the_wizards_narrow_pane():
    """At 80 columns the details pane is about 46 wide: the compute check is a list there, so
    no GPU name or setup is cut to `RTX-40…` / `optimi…`."""
    from advisor.wizard.screens.recommendation import method_details

    rec = decide(load_answers(SCENARIOS / "ppo-7b-one-24gb-card.yaml"))
    console = Console(width=44, record=True, file=io.StringIO())
    console.print(method_details(rec, rec.method))
    text = console.export_text()
    section = text[text.index("Compute check") :]
    assert "…" not in section
    for check in rec.compute:
        assert f"{label(check.method)}: " in section
    assert "RTX-4090" in section

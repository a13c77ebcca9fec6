"""`advisor recommend`: the JSON contract, the Rich view, the decision record, errors, speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from advisor.cli import main
from advisor.decision.answers import load_answers
from advisor.decision.decide import Recommendation, decide
from advisor.decision.rules import CANDIDATES
from advisor.views.decision_record import decision_record
from advisor.views.reasons import rationale, reasons, why_not_runner_up
from advisor.views.recommend_view import render_recommendation
from planner.paths import profiles_dir

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = profiles_dir() / "scenarios"
SUPPORT = SCENARIOS / "support-copilot.yaml"
PPO_24GB = SCENARIOS / "ppo-7b-one-24gb-card.yaml"
HEAVY = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "textual")


def run_cli(argv, capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_is_exactly_the_contract_and_the_models_dump(capsys):
    code, out, err = run_cli(["recommend", "--answers", str(SUPPORT), "--json"], capsys)
    assert code == 0 and err == ""
    payload = json.loads(out)
    # {"method", "ranking": [{"method", "score", "effects", "reasons"}], "rationale", "caveats", ...}
    assert payload["method"] == payload["ranking"][0]["method"] == "dpo"
    for row in payload["ranking"]:
        assert set(row) == {"method", "score", "effects", "reasons"}
        assert isinstance(row["score"], float | int)
        assert row["effects"] and all(isinstance(e, dict) for e in row["effects"])
        assert row["reasons"] and all(isinstance(r, str) for r in row["reasons"])
    assert payload["rationale"] and all(isinstance(r, str) for r in payload["rationale"])
    assert payload["caveats"] and all(isinstance(c, str) for c in payload["caveats"])
    # ... and it is the pydantic model's own dump plus the sentences the views render from
    # it (each effect, the rationale, the runner-up's gaps), not a hand-built dict.
    recommendation = decide(load_answers(SUPPORT))
    dumped = json.loads(recommendation.model_dump_json())
    for row, entry in zip(recommendation.ranking, dumped["ranking"], strict=True):
        entry["reasons"] = reasons(row)
    dumped["rationale"] = rationale(recommendation)
    dumped["why_not_runner_up"] = why_not_runner_up(recommendation)
    assert payload == dumped
    assert Recommendation.model_validate_json(out).method.value == "dpo"


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.stem)
def test_json_carries_every_ranked_methods_effects_as_records_that_add_up_to_its_score(
    path, capsys
):
    code, out, _ = run_cli(["recommend", "--answers", str(path), "--json"], capsys)
    assert code == 0
    ranking = json.loads(out)["ranking"]
    assert len(ranking) == len(CANDIDATES)
    for row in ranking:
        assert row["effects"], row["method"]
        for effect in row["effects"]:
            assert set(effect) == {"factor", "points", "why", "source"}
            assert effect["factor"] and effect["why"]
            assert isinstance(effect["points"], float | int)
            assert effect["source"] is None or effect["source"].strip()
        assert round(sum(e["points"] for e in row["effects"]), 2) == row["score"]
        # `reasons` is the same effects in words, one sentence each, in the same order.
        assert row["reasons"] == [
            f"{e['factor']} → {e['points']:+g}: {e['why']}" for e in row["effects"]
        ]


def test_json_effects_name_the_paper_a_reason_cites(capsys):
    code, out, _ = run_cli(["recommend", "--answers", str(SUPPORT), "--json"], capsys)
    assert code == 0
    dpo = next(r for r in json.loads(out)["ranking"] if r["method"] == "dpo")
    prior = next(e for e in dpo["effects"] if e["factor"] == "starting point")
    assert prior["source"].startswith("Rafailov et al. 2023") and "2305.18290" in prior["source"]
    uncited = next(e for e in dpo["effects"] if e["factor"].startswith("feedback"))
    assert uncited["source"] is None


def test_json_carries_the_compute_check_when_model_and_gpus_are_given(capsys):
    code, out, _ = run_cli(["recommend", "--answers", str(PPO_24GB), "--json"], capsys)
    assert code == 0
    payload = json.loads(out)
    ppo = next(c for c in payload["compute"] if c["method"] == "ppo")
    assert ppo["fits"] is False and ppo["would_take"]
    assert payload["method"] != "ppo"


def test_the_rich_view_shows_choice_reasons_runner_up_caveats_evaluation_and_next_command():
    recommendation = decide(load_answers(SCENARIOS / "structured-reasoning-growing-team.yaml"))
    console = Console(record=True, width=200, color_system=None)
    console.print(render_recommendation(recommendation))
    text = console.export_text()
    for needle in (
        "Recommended: DPO",
        "confidence: high",
        "Why DPO",
        "Runner-up: KTO",
        "lost on",
        "Hybrid path",
        "Caveats",
        "PPO is unmaintained upstream",
        "Evaluation plan",
        "AlpacaEval",
        "advisor plan --model 7b --method dpo --fit",
    ):
        assert needle in text, needle


def test_the_rich_view_shows_the_compute_table():
    console = Console(record=True, width=140, color_system=None)
    console.print(render_recommendation(decide(load_answers(PPO_24GB))))
    text = console.export_text()
    assert "Compute check: 7b on 1× RTX-4090" in text
    assert "does not fit" in text


def test_report_writes_a_markdown_decision_record(tmp_path, capsys):
    report = tmp_path / "decision.md"
    code, out, err = run_cli(
        ["recommend", "--answers", str(PPO_24GB), "--json", "--report", str(report)], capsys
    )
    assert code == 0
    json.loads(out)  # stdout stays pure JSON; the note goes to stderr
    assert str(report) in err
    text = report.read_text()
    for heading in (
        "# Decision record: align with RLOO",
        "## Context",
        "## Decision",
        "## Options considered",
        "## Why RLOO",
        "## Why not DPO",
        "## Compute check: 7b on 1× RTX-4090",
        "## Risks and caveats",
        "## Evaluation plan",
        "## Next step",
    ):
        assert heading in text, heading
    assert "| gpus | 1x rtx-4090 |" in text


def test_decision_record_lists_every_method_once():
    text = decision_record(decide(load_answers(SUPPORT)))
    table = text.split("## Options considered")[1].split("##")[0]
    assert sum(line.startswith("| ") and line[2].isdigit() for line in table.splitlines()) == 8


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("use_case: chatbot\n", "use_case: 'chatbot' is not valid"),
        ("{}\n", "risk: missing (valid: low, medium, high)"),
    ],
)
def test_bad_answers_exit_2_with_one_line_listing_the_valid_values(
    tmp_path, capsys, content, needle
):
    path = tmp_path / "answers.yaml"
    path.write_text(content)
    code, out, err = run_cli(["recommend", "--answers", str(path)], capsys)
    assert code == 2 and out == ""
    assert needle in err
    assert err.count("\n") == 1


def test_an_unknown_gpu_in_the_answers_exits_2(tmp_path, capsys):
    path = tmp_path / "answers.yaml"
    path.write_text(SUPPORT.read_text() + "model: 7b\ngpus: 2x warp-drive\n")
    code, _, err = run_cli(["recommend", "--answers", str(path)], capsys)
    assert code == 2 and "warp-drive" in err and err.count("\n") == 1


def test_an_unwritable_report_path_exits_2(tmp_path, capsys):
    target = tmp_path / "missing-dir" / "decision.md"
    code, _, err = run_cli(
        ["recommend", "--answers", str(SUPPORT), "--report", str(target)], capsys
    )
    assert code == 2 and "cannot write it" in err


def test_report_refuses_to_overwrite_an_existing_file_without_force(tmp_path, capsys):
    report = tmp_path / "decision.md"
    report.write_text("last week's record\n")
    argv = ["recommend", "--answers", str(SUPPORT), "--json", "--report", str(report)]
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and out == ""  # refused before anything is printed
    assert (
        err == f"advisor: error: --report {report}: the file exists; pass --force to overwrite it\n"
    )
    assert report.read_text() == "last week's record\n"
    code, out, err = run_cli([*argv, "--force"], capsys)
    assert code == 0 and json.loads(out)["method"] == "dpo"
    assert report.read_text().startswith("# Decision record: align with DPO")


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_report_into_a_folder_or_a_pipe_is_refused_even_with_force(tmp_path, capsys, kind):
    target = tmp_path / "out"
    target.mkdir() if kind == "folder" else os.mkfifo(target)
    argv = ["recommend", "--answers", str(SUPPORT), "--report", str(target), "--force"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "choose a file name" in err and err.count("\n") == 1


def test_recommend_imports_no_heavy_library():
    """The whole command, planner-backed compute check included, in a fresh interpreter, loads
    neither torch nor the training stack. Its speed target (under 1 s) is measured by
    benchmarks/plan_startup.py, not here."""
    script = (
        "import contextlib, io, json, sys\n"
        "from advisor.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main(['recommend', '--answers', {str(PPO_24GB)!r}]) == 0\n"
        f"    assert main(['recommend', '--answers', {str(SUPPORT)!r}, '--json']) == 0\n"
        "print(json.dumps({'modules': sorted(sys.modules)}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    heavy = {m for m in report["modules"] if m.split(".")[0] in HEAVY}
    assert not heavy


def test_the_engine_imports_neither_textual_nor_rich():
    script = (
        "import sys, json\nimport advisor.decision.decide, advisor.decision.answers\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    )
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert not {m for m in loaded if m.split(".")[0] in (*HEAVY, "rich", "yaml")}

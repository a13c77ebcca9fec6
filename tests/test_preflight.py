"""Data pre-flight: each defect is caught and its rows are named (1-based, as JSONL lines)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from advisor.cli import main
from runners.preflight import check_dataset, check_rows
from runners.tiny import demo_rows, ensure_model, write_jsonl


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return ensure_model(tmp_path_factory.getbasetemp() / "tiny-llama")


@pytest.fixture(scope="session")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def _problem(report, code):
    found = [p for p in report.problems if p.code == code]
    assert found, [p.code for p in report.problems]
    return found[0]


def test_clean_demo_data_has_no_problems_for_any_method(tokenizer):
    for method in ("sft", "dpo", "kto", "orpo", "simpo", "reward", "ppo", "grpo", "rloo"):
        report = check_rows(demo_rows(method), method, tokenizer=tokenizer, max_length=256)
        assert report.problems == [], (method, report.problems)
        assert report.format == "plain"


def test_conversational_demo_data_renders_with_the_chat_template(tokenizer):
    report = check_rows(demo_rows("dpo", conversational=True), "dpo", tokenizer=tokenizer)
    assert report.format == "conversational"
    assert report.errors == []


def test_missing_columns_name_what_the_method_needs():
    report = check_rows([{"prompt": "p", "answer": "a"}], "dpo")
    assert "chosen, rejected" in _problem(report, "missing-columns").message
    kto = check_rows([{"prompt": "p", "chosen": "c"}], "kto")
    assert "completion" in _problem(kto, "missing-columns").message
    grpo = check_rows([{"question": "q"}], "grpo")
    assert _problem(grpo, "missing-columns").severity == "error"


def test_empty_chosen_and_rejected_are_errors_with_rows():
    rows = demo_rows("dpo")[:5]
    rows[1] = {**rows[1], "chosen": "  "}
    rows[3] = {**rows[3], "rejected": None}
    report = check_rows(rows, "dpo")
    assert _problem(report, "empty-chosen").rows == [2]
    assert _problem(report, "empty-rejected").rows == [4]


def test_identical_chosen_and_rejected_are_errors_with_rows():
    rows = demo_rows("dpo")[:6]
    rows[4] = {**rows[4], "rejected": rows[4]["chosen"]}
    problem = _problem(check_rows(rows, "dpo"), "identical-pair")
    assert problem.severity == "error" and problem.rows == [5]


def test_duplicates_are_warnings_naming_the_repeats():
    rows = demo_rows("dpo")[:4]
    rows += [rows[0], rows[2]]
    problem = _problem(check_rows(rows, "dpo"), "duplicates")
    assert problem.severity == "warning" and problem.rows == [5, 6]


def test_mixed_plain_and_conversational_rows_are_an_error():
    rows = demo_rows("dpo")[:4] + demo_rows("dpo", conversational=True)[:1]
    problem = _problem(check_rows(rows, "dpo"), "mixed-format")
    assert problem.rows == [5]


def test_kto_labels_must_be_booleans_and_both_kinds():
    rows = demo_rows("kto")[:4]
    rows[2] = {**rows[2], "label": "yes"}
    assert _problem(check_rows(rows, "kto"), "bad-label").rows == [3]
    one_sided = [r for r in demo_rows("kto") if r["label"]]
    assert _problem(check_rows(one_sided, "kto"), "one-sided-labels").severity == "warning"


def test_token_lengths_against_the_maximum_give_the_truncation_rate(tokenizer):
    rows = demo_rows("dpo")[:4]
    rows[1] = {**rows[1], "chosen": " Paris is the capital." * 30}
    report = check_rows(rows, "dpo", tokenizer=tokenizer, max_length=40)
    assert report.lengths.truncated_rows == 1
    assert report.lengths.truncation_rate == 0.25
    assert report.lengths.max > 40
    assert _problem(report, "truncated").rows == [2]


def test_conversational_data_without_a_chat_template_is_an_error(tokenizer):
    tokenizer = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    tokenizer.chat_template = None
    rows = demo_rows("dpo", conversational=True)[:3]
    assert _problem(check_rows(rows, "dpo", tokenizer=tokenizer), "no-chat-template")


def test_a_chat_template_that_fails_to_render_names_the_rows(tokenizer):
    tokenizer = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('no system role') }}{% endif %}{{ m['content'] + eos_token }}"
        "{% endfor %}"
    )
    rows = demo_rows("dpo", conversational=True)[:3]
    rows[1] = {**rows[1], "prompt": [{"role": "system", "content": "be brief"}, *rows[1]["prompt"]]}
    assert _problem(check_rows(rows, "dpo", tokenizer=tokenizer), "template-fails").rows == [2]


def test_a_template_that_never_emits_eos_is_flagged(tokenizer):
    tokenizer = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    rows = demo_rows("dpo", conversational=True)[:2]
    assert _problem(check_rows(rows, "dpo", tokenizer=tokenizer), "template-no-eos").rows == [1, 2]


def test_plain_text_ending_in_eos_gets_a_double_eos_warning(tokenizer):
    rows = demo_rows("sft")[:3]
    rows[0] = {**rows[0], "completion": rows[0]["completion"] + tokenizer.eos_token}
    assert _problem(check_rows(rows, "sft", tokenizer=tokenizer), "eos-in-text").rows == [1]


def test_a_tokenizer_without_eos_is_an_error(tokenizer):
    tokenizer = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    tokenizer.eos_token = None
    assert _problem(check_rows(demo_rows("dpo")[:2], "dpo", tokenizer=tokenizer), "no-eos")


def test_check_data_command_lists_problems_and_fails_on_errors(tiny_model, tmp_path):
    rows = demo_rows("dpo")[:3]
    rows[2] = {**rows[2], "rejected": rows[2]["chosen"]}
    path = write_jsonl(rows, tmp_path / "pairs.jsonl")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["check-data", "--dataset", str(path), "--method", "dpo", "--json"])
    assert rc == 1
    report = json.loads(out.getvalue())
    assert report["problems"][0]["rows"] == [3]
    with contextlib.redirect_stdout(io.StringIO()):
        ok = main(["check-data", "--dataset", str(path.with_name("ok.jsonl")), "--method", "dpo"])
    assert ok == 2  # a missing file is a user error


def test_reads_csv_and_saved_dataset_folders(tmp_path):
    import datasets

    rows = demo_rows("grpo")[:4]
    folder = tmp_path / "saved"
    datasets.Dataset.from_list(rows).save_to_disk(str(folder))
    assert check_dataset(str(folder), "grpo").rows == 4
    csv = tmp_path / "prompts.csv"
    csv.write_text("prompt\n" + "\n".join(r["prompt"] for r in rows) + "\n")
    assert check_dataset(str(csv), "grpo").problems == []
    parquet = tmp_path / "prompts.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(parquet))
    assert check_dataset(str(parquet), "grpo").rows == 4


def test_large_sets_are_tokenized_on_an_even_sample(tokenizer, monkeypatch):
    import runners.preflight

    monkeypatch.setattr(runners.preflight, "TOKEN_SAMPLE", 4)
    report = check_rows(demo_rows("dpo"), "dpo", tokenizer=tokenizer, max_length=256)
    assert report.lengths.measured_rows == 4
    assert report.rows == 16

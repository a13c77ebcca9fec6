"""Data pre-flight: each defect is caught and its rows are named (1-based, as JSONL lines)."""

from __future__ import annotations

import contextlib
import io
import json
import os
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


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet", "/"])
def test_check_data_prints_no_datasets_progress_bars(tmp_path, capfd, monkeypatch, suffix):
    """`datasets` draws "Generating train split" bars on the real stderr as it reads a file; the
    report is all check-data prints (a fresh cache, so the split is generated here)."""
    import datasets

    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    rows = demo_rows("dpo")[:4]
    path = tmp_path / ("pairs" + suffix.rstrip("/"))
    if suffix == ".jsonl":
        write_jsonl(rows, path)
    elif suffix == ".csv":
        datasets.Dataset.from_list(rows).to_csv(str(path), index=False)
    elif suffix == ".parquet":
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    else:
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    capfd.readouterr()
    assert main(["check-data", "--dataset", str(path), "--method", "dpo"]) == 0
    out, err = capfd.readouterr()
    assert "4 rows" in out
    for bar in ("Generating", "examples/s", "it/s", "%|"):
        assert bar not in out + err


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


# A user's broken dataset is one line on stderr and status 2, never a traceback or a hang.

PAIR = b'{"prompt": "p", "chosen": "a", "rejected": "b"}\n'
BAD_FILES = [
    ("pairs.jsonl", PAIR * 16 + b'{"prompt": "q" "chosen": "c"}\n', "line 17: not valid JSON"),
    ("pairs.jsonl", PAIR + b"[1, 2]\n", "line 2: expected a JSON object (one row), found a list"),
    ("pairs.jsonl", PAIR + b"null\n", "line 2: expected a JSON object (one row), found null"),
    ("pairs.jsonl", b'{"prompt": "caf\xe9"}\n', "line 1: not UTF-8 text (byte 0xe9"),
    ("pairs.jsonl", b'{"p": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", "nested deeper"),
    ("pairs.jsonl", b'{"p": ' + b"[" * 40 + b"]" * 40 + b"}\n", "line 1: nested deeper than 32"),
    ("pairs.jsonl", b'{"prompt": "\\ud800", "chosen": "a"}\n', "line 1: a \\u escape stands for"),
    ("pairs.jsonl", b'{"n": ' + b"9" * 5000 + b"}\n", "line 1: not valid JSON (a number with"),
    ("pairs.jsonl", PAIR + b'{"prompt": "p", "prompt": "q"}\n', "line 2: the key 'prompt' appears"),
    ("pairs.json", b"5", 'expected a list of rows (JSON objects) or {"data": [rows]}, found 5'),
    ("pairs.json", b'[{"prompt": "p"}, 7]', "item 2: expected a JSON object (one row), found 7"),
    ("pairs.json", b'[{"prompt": "p"},\n {"prompt": ', "line 2: not valid JSON (Expecting value"),
    ("pairs.json", b'{"prompt": ["p"], "chosen": ["a"]}', "found a mapping of 2 keys"),
    ("pairs.csv", b"prompt,chosen\na,b\nc,d,e\n", "line 3: 3 fields, but the header has 2"),
    ("pairs.csv", b'prompt,chosen\n"a,b\n', "not valid CSV (unexpected end of data)"),
    ("pairs.csv", b"prompt\n\xff\xfe\n", "line 2: not UTF-8 text (byte 0xff"),
    ("pairs.parquet", b"PAR1\x00", "not a readable Parquet file"),
    ("pairs.parquet", b"PAR1" + b"\x00" * 64 + b"PAR1", "not a readable Parquet file"),
    ("pairs.txt", b"hello\n", "unsupported format '.txt' (use .jsonl, .json, .csv or .parquet"),
]


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def _one_error_line(rc: int, err: str) -> str:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("advisor: error: dataset"), err
    return lines[0]


@pytest.mark.parametrize(("name", "content", "expected"), BAD_FILES)
def test_a_broken_dataset_file_is_one_line_naming_the_file_and_the_problem(
    tmp_path, name, content, expected
):
    path = tmp_path / name
    path.write_bytes(content)
    line = _one_error_line(*_cli("check-data", "--dataset", str(path), "--method", "dpo")[::2])
    assert str(path) in line and expected in line
    # `advisor plan --dataset` reads the same file through the same checks.
    rc, _, err = _cli("plan", "--model", "7b", "--dataset", str(path))
    if "cannot read it as" not in expected:  # only `datasets` refuses those
        assert expected in _one_error_line(rc, err)


def test_a_malformed_jsonl_line_is_named_with_its_number_and_column(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(PAIR * 16 + b'{"prompt": "q" "chosen": "c"}\n')
    rc, _, err = _cli("check-data", "--dataset", str(path))
    assert _one_error_line(rc, err) == (
        f"advisor: error: dataset {path} line 17: not valid JSON "
        "(Expecting ',' delimiter at column 16)"
    )


def _special_paths(tmp_path: Path) -> dict[str, tuple[str, str]]:
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    (tmp_path / "folder").mkdir()
    return {
        "fifo": (str(fifo), "not a regular file (a pipe, socket or device)"),
        "device": ("/dev/zero", "not a regular file (a pipe, socket or device)"),
        "null": ("/dev/null", "not a regular file"),
        "folder": (str(tmp_path / "folder"), "not a dataset saved with `save_to_disk`"),
        "missing": (str(tmp_path / "gone.jsonl"), "no such file or folder"),
        "inside a file": (str(tmp_path / "pipe.jsonl" / "x.jsonl"), "cannot read it"),
    }


def test_pipes_devices_and_plain_folders_are_refused_without_reading_them(tmp_path):
    for kind, (path, expected) in _special_paths(tmp_path).items():
        for argv in (
            ("check-data", "--dataset", path),
            ("plan", "--model", "7b", "--dataset", path),
        ):
            rc, _, err = _cli(*argv)
            assert rc == 2 and "Traceback" not in err, (kind, err)
            assert len(err.splitlines()) == 1 and expected in err, (kind, argv[0], err)


def test_an_empty_dataset_name_is_refused():
    assert "the name is empty" in _one_error_line(*_cli("check-data", "--dataset", "")[::2])


def test_a_file_past_the_size_ceiling_is_refused_before_reading(tmp_path):
    from planner.dataset_file import MAX_DATASET_BYTES

    path = tmp_path / "huge.jsonl"
    with path.open("wb") as handle:
        handle.truncate(MAX_DATASET_BYTES + 1)  # sparse: nothing is written
    line = _one_error_line(*_cli("check-data", "--dataset", str(path))[::2])
    assert "larger than" in line


def test_a_line_longer_than_any_row_is_refused_without_reading_all_of_it(tmp_path, monkeypatch):
    import planner.dataset_file

    monkeypatch.setattr(planner.dataset_file, "MAX_ROW_BYTES", 1000)
    path = tmp_path / "one-line.jsonl"
    path.write_bytes(PAIR + b'{"prompt": "' + b"x" * 5000 + b'"}\n')
    assert "line 2: longer than" in _one_error_line(
        *_cli("check-data", "--dataset", str(path))[::2]
    )


def test_a_damaged_saved_folder_is_one_line(tmp_path):
    import datasets

    folder = tmp_path / "saved"
    datasets.Dataset.from_list(demo_rows("dpo")[:2]).save_to_disk(str(folder))
    (folder / "state.json").write_text("{not json")
    line = _one_error_line(*_cli("check-data", "--dataset", str(folder))[::2])
    assert "cannot load the saved folder" in line


@pytest.mark.parametrize("content", [b"", b"\n \n", b"\xef\xbb\xbf"])
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_an_empty_file_is_a_report_with_no_rows_not_a_crash(tmp_path, suffix, content):
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(content)
    rc, out, err = _cli("check-data", "--dataset", str(path), "--json")
    assert rc == 1 and err == ""
    assert [p["code"] for p in json.loads(out)["problems"]] == ["empty-dataset"]


def test_bom_crlf_and_json_lines_named_json_read_like_plain_jsonl(tmp_path):
    rows = demo_rows("dpo")[:3]
    plain = write_jsonl(rows, tmp_path / "plain.jsonl")
    lines = b"".join(json.dumps(r).encode() + b"\r\n" for r in rows)
    variants = {
        "bom.jsonl": b"\xef\xbb\xbf" + lines,
        "lines.json": lines,
        "list.json": json.dumps(rows, indent=2).encode(),
        "wrapped.json": json.dumps({"data": rows}).encode(),
    }
    expected = check_dataset(str(plain), "dpo").model_dump(exclude={"dataset"})
    for name, content in variants.items():
        (tmp_path / name).write_bytes(content)
        assert check_dataset(str(tmp_path / name), "dpo").model_dump(exclude={"dataset"}) == (
            expected
        ), name


def test_column_names_from_a_file_print_as_text_not_markup(tmp_path):
    path = write_jsonl([{"[/bold]": "x", "a\x1b[2Jb": "y"}], tmp_path / "odd.jsonl")
    rc, out, err = _cli("check-data", "--dataset", str(path))
    assert rc == 1 and "Traceback" not in err
    assert "[/bold]" in out and "\x1b[2J" not in out


def test_a_bad_tokenizer_folder_is_one_line(tmp_path):
    path = write_jsonl(demo_rows("dpo")[:2], tmp_path / "pairs.jsonl")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "tokenizer_config.json").write_text("{broken")
    rc, _, err = _cli("check-data", "--dataset", str(path), "--model", str(tmp_path / "model"))
    assert rc == 2 and len(err.splitlines()) == 1 and "cannot load a tokenizer" in err


def test_a_saved_folder_holding_a_pipe_is_refused_before_loading(tmp_path):
    import datasets

    folder = tmp_path / "saved"
    datasets.Dataset.from_list(demo_rows("dpo")[:2]).save_to_disk(str(folder))
    (folder / "dataset_info.json").unlink()
    os.mkfifo(folder / "dataset_info.json")
    line = _one_error_line(*_cli("check-data", "--dataset", str(folder))[::2])
    assert "dataset_info.json in it is not a regular file" in line

"""Dataset files as people publish them read the same in `check-data`, `plan --dataset` and
`launch`'s pre-flight: gzip-compressed JSON Lines / JSON (hh-rlhf ships .jsonl.gz), a UTF-8 BOM,
rows under {"data": [...]}; a defect is one line naming its real line number, exit 2."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from advisor.cli import main
from runners.tiny import demo_rows
from tests.test_preflight import _one_error_line


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def _check_data(path: Path, method: str = "dpo") -> tuple[int, str, str]:
    return _cli("check-data", "--dataset", str(path), "--method", method, "--json")


def _plan(path: Path) -> tuple[int, str, str]:
    return _cli("plan", "--model", "7b", "--method", "dpo", "--dataset", str(path), "--json")


def _launch(path: Path, model: Path, output: Path) -> tuple[int, str, str]:
    return _cli(
        "launch", "--method", "dpo", "--model", str(model), "--dataset", str(path),
        "--tuning", "lora", "--seq-len", "64", "--device", "cpu", "--output", str(output),
        "--quiet", "--dry-run",
    )  # fmt: skip


def _hh_rows(count: int) -> list[dict[str, str]]:
    """Rows shaped as hh-rlhf publishes them: the prompt is inside chosen and rejected."""
    return [
        {
            "chosen": f"\n\nHuman: question {i}?\n\nAssistant: a kind answer {i}",
            "rejected": f"\n\nHuman: question {i}?\n\nAssistant: go away {i}",
        }
        for i in range(count)
    ]


def _jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def _report(out: str) -> dict:
    report = json.loads(out)
    report.pop("dataset")
    return report


def _planned_rows(out: str) -> int:
    return json.loads(out)["time"]["samples"]


@pytest.mark.parametrize("rows", [_hh_rows(30), demo_rows("dpo")], ids=["hh-rlhf", "explicit"])
def test_gzipped_jsonl_and_json_read_as_the_plain_file_by_check_data_and_plan(tmp_path, rows):
    plain = tmp_path / "train.jsonl"
    plain.write_bytes(_jsonl(rows))
    rc, out, err = _check_data(plain)
    assert err == ""
    expected = _report(out)
    assert expected["rows"] == len(rows)
    files = {
        "test.jsonl.gz": gzip.compress(_jsonl(rows)),
        "test.json.gz": gzip.compress(json.dumps(rows).encode()),
        "wrapped.json.gz": gzip.compress(json.dumps({"data": rows}).encode()),
        "bom.jsonl.gz": gzip.compress(b"\xef\xbb\xbf" + _jsonl(rows)),
    }
    for name, content in files.items():
        path = tmp_path / name
        path.write_bytes(content)
        assert _check_data(path)[:2] == (rc, out.replace(str(plain), str(path))), name
        assert _report(_check_data(path)[1]) == expected, name
        plan_rc, plan_out, plan_err = _plan(path)
        assert plan_rc == 0, plan_err
        assert _planned_rows(plan_out) == len(rows), name


def test_a_gzipped_jsonl_file_is_what_the_trainer_loads(tmp_path):
    from runners.data import load_train_split
    from runners.settings import trl_cli_config

    rows = demo_rows("dpo")
    path = tmp_path / "pairs.jsonl.gz"
    path.write_bytes(gzip.compress(_jsonl(rows)))
    assert [dict(row) for row in load_train_split(str(path), quiet=True)] == rows
    wrapped = tmp_path / "pairs.json.gz"
    wrapped.write_bytes(gzip.compress(json.dumps({"data": rows}).encode()))
    assert [dict(row) for row in load_train_split(str(wrapped), quiet=True)] == rows

    spec = SimpleNamespace(  # the fields trl_cli_config reads
        method="sft", trl_config={}, model="m", precision=None, dataset=str(path), peft=None,
        quantization=None, rewards=[],
    )  # fmt: skip
    config = trl_cli_config(spec)
    assert config["datasets"] == [{"path": "json", "data_files": str(path), "split": "train"}]


def test_launch_pre_flight_reads_gzip_files(tiny_model, tmp_path):
    rows = demo_rows("dpo")
    files = {
        "pairs.jsonl.gz": gzip.compress(_jsonl(rows)),
        "pairs.json.gz": gzip.compress(json.dumps(rows).encode()),
    }
    for name, content in files.items():
        path = tmp_path / name
        path.write_bytes(content)
        rc, out, err = _launch(path, tiny_model, tmp_path / "runs")
        assert rc == 0, (name, err)
        assert Path(out.strip().splitlines()[-1]).is_dir(), name


def test_a_bom_is_accepted_by_every_command(tiny_model, tmp_path):
    rows = demo_rows("dpo")
    bom = b"\xef\xbb\xbf"
    for name, content in {
        "bom.jsonl": bom + _jsonl(rows),
        "bom.json": bom + json.dumps(rows).encode(),
        "bom-wrapped.json": bom + json.dumps({"data": rows}).encode(),
        "bom.csv": bom + b"prompt,chosen,rejected\n" + b"p,a,b\n" * len(rows),
    }.items():
        path = tmp_path / name
        path.write_bytes(content)
        _, out, err = _check_data(path)
        assert err == "" and json.loads(out)["rows"] == len(rows), (name, err)
        plan_rc, plan_out, plan_err = _plan(path)
        assert plan_rc == 0 and _planned_rows(plan_out) == len(rows), (name, plan_err)
        rc, _, err = _launch(path, tiny_model, tmp_path / "runs")
        assert rc == 0, (name, err)


def test_a_damaged_gzip_file_is_one_line_in_every_command(tiny_model, tmp_path):
    whole = gzip.compress(_jsonl(demo_rows("dpo")))
    for name, content in {"garbage.jsonl.gz": b"not gzip\n", "cut.jsonl.gz": whole[:40]}.items():
        path = tmp_path / name
        path.write_bytes(content)
        for rc, _, err in (
            _check_data(path),
            _plan(path),
            _launch(path, tiny_model, tmp_path / "runs"),
        ):
            assert "not a readable gzip file" in _one_error_line(rc, err), name
    assert not (tmp_path / "runs").exists()


def test_an_unsupported_compressed_file_names_the_formats_that_are_read(tmp_path):
    path = tmp_path / "pairs.parquet.gz"
    path.write_bytes(gzip.compress(b"PAR1"))
    line = _one_error_line(*_check_data(path)[::2])
    assert "unsupported format '.gz'" in line and ".jsonl.gz" in line


def _broken_at_line_101(blank_lines: bool) -> bytes:
    lines = [json.dumps(row) + "\n" for row in demo_rows("dpo") * 10][:100]
    if blank_lines:
        lines[10:10] = ["\n", "   \n"]
        del lines[-2:]
    return "".join(lines).encode() + b'{"prompt": "p", broken}\n' + _jsonl(demo_rows("dpo"))


@pytest.mark.parametrize("blank_lines", [False, True], ids=["dense", "with-blank-lines"])
@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".json"])
def test_a_malformed_line_is_named_by_its_line_number_in_every_command(
    tiny_model, tmp_path, suffix, blank_lines
):
    content = _broken_at_line_101(blank_lines)
    path = tmp_path / f"pairs{suffix}"
    path.write_bytes(gzip.compress(content) if suffix.endswith(".gz") else content)
    for rc, _, err in (
        _check_data(path),
        _plan(path),
        _launch(path, tiny_model, tmp_path / "runs"),
    ):
        assert f"{path} line 101: not valid JSON" in _one_error_line(rc, err)
    assert not (tmp_path / "runs").exists()


def test_rows_are_named_by_their_line_after_blank_lines(tmp_path):
    rows = demo_rows("dpo")[:6]
    rows[4] = {**rows[4], "chosen": ""}  # the fifth row
    lines = [json.dumps(row) for row in rows]
    lines[2:2] = ["", "  "]  # two blank lines before the third row: the fifth is on line 7
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rc, out, _ = _check_data(path)
    assert rc == 1
    problems = {p["code"]: p["rows"] for p in json.loads(out)["problems"]}
    assert problems["empty-chosen"] == [7]
    packed = tmp_path / "packed.jsonl.gz"  # the same rows without blank lines: rows are lines
    packed.write_bytes(gzip.compress(_jsonl(rows)))
    assert {p["code"]: p["rows"] for p in json.loads(_check_data(packed)[1])["problems"]} == {
        **problems,
        "empty-chosen": [5],
    }


BARE = {
    "strings.jsonl": (b'"first text"\n"second text"\n', "line 1: expected a JSON object"),
    "numbers.jsonl": (b"1\n2\n", "line 1: expected a JSON object (one row), found 1"),
}


@pytest.mark.parametrize("name", sorted(BARE))
def test_a_jsonl_of_bare_values_is_one_line_in_every_command(tiny_model, tmp_path, name):
    content, expected = BARE[name]
    path = tmp_path / name
    path.write_bytes(content)
    for rc, _, err in (
        _check_data(path, "sft"),
        _plan(path),
        _launch(path, tiny_model, tmp_path / "runs"),
    ):
        assert expected in _one_error_line(rc, err)


def test_a_plain_folder_holding_train_jsonl_is_one_line_in_every_command(tiny_model, tmp_path):
    folder = tmp_path / "hh"
    folder.mkdir()
    (folder / "train.jsonl").write_bytes(_jsonl(demo_rows("dpo")))
    for rc, _, err in (
        _check_data(folder),
        _plan(folder),
        _launch(folder, tiny_model, tmp_path / "runs"),
    ):
        line = _one_error_line(rc, err)
        assert "not a dataset saved with `save_to_disk`" in line
        assert "give a JSONL/JSON/CSV/Parquet file" in line


def test_rows_under_a_data_key_are_counted_alike_by_plan_and_check_data(tmp_path):
    rows = demo_rows("dpo") * 20
    path = tmp_path / "wrapped.json"
    path.write_text(json.dumps({"data": rows, "version": 2}), encoding="utf-8")
    _, out, err = _check_data(path)
    assert json.loads(out)["rows"] == len(rows), err
    plan_rc, plan_out, _ = _plan(path)
    assert plan_rc == 0 and _planned_rows(plan_out) == len(rows)


def test_no_command_offers_a_hub_dataset_id_that_another_refuses(tiny_model, tmp_path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["check-data", "--help"])
    assert "HF id" not in out.getvalue() and "hub" not in out.getvalue().lower()
    refusals = {
        _one_error_line(rc, err)
        for rc, _, err in (
            _check_data(Path("Anthropic/hh-rlhf")),
            _plan(Path("Anthropic/hh-rlhf")),
            _launch(Path("Anthropic/hh-rlhf"), tiny_model, tmp_path / "runs"),
        )
    }
    assert len(refusals) == 1, refusals
    assert "a Hub dataset id is not read" in refusals.pop()
    assert not (tmp_path / "runs").exists()


# Shapes people publish (issue 12): ShareGPT from/value turns and LLaMA-Factory's own files.


def _sharegpt(count: int, column: str = "conversations") -> list[dict]:
    return [
        {
            column: [
                {"from": "system", "value": "be brief"},
                {"from": "human", "value": f"question {i}?"},
                {"from": "gpt", "value": f"answer {i}"},
            ]
        }
        for i in range(count)
    ]


def _llamafactory_pairs(count: int) -> list[dict]:
    """LLaMA-Factory's preference file (data/dpo_en_demo.json's shape)."""
    return [
        {
            "conversations": [{"from": "human", "value": f"question {i}?"}],
            "chosen": {"from": "gpt", "value": f"a kind answer {i}"},
            "rejected": {"from": "gpt", "value": f"go away {i}"},
        }
        for i in range(count)
    ]


def _problems(out: str) -> dict[str, dict]:
    return {p["code"]: p for p in json.loads(out)["problems"]}


@pytest.mark.parametrize("column", ["conversations", "messages"])
@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_sharegpt_turns_are_named_in_one_problem_not_every_row_empty(tmp_path, column, method):
    path = tmp_path / "chat.jsonl"
    path.write_bytes(_jsonl(_sharegpt(5, column)))
    rc, out, err = _check_data(path, method)
    assert rc == 1 and err == ""
    problems = _problems(out)
    assert list(problems) == ["sharegpt"]
    message = problems["sharegpt"]["message"]
    assert "ShareGPT-style from/value messages" in message
    assert "advisor check-data --convert-to trl OUT.jsonl" in message
    if method == "sft":  # TRL renames the keys of `conversations`, never the roles
        assert "keeps the role values (human, gpt)" in message


def test_llamafactory_preference_file_is_an_error_that_trl_would_crash_on(tmp_path):
    from trl.data_utils import extract_prompt

    rows = _llamafactory_pairs(4)
    with pytest.raises(KeyError):  # what DPOTrainer does with it: no prompt column
        extract_prompt(rows[0])
    path = tmp_path / "dpo_en_demo.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    rc, out, _ = _check_data(path, "dpo")
    assert rc == 1
    problem = _problems(out)["llamafactory-preference"]
    assert problem["severity"] == "error" and "KeyError: 0" in problem["message"]
    assert "--convert-to trl" in problem["message"]


def test_llamafactory_kto_file_is_named(tmp_path):
    rows = [{**row, "kto_tag": i % 2 == 0} for i, row in enumerate(_sharegpt(4))]
    path = tmp_path / "kto_en_demo.jsonl"
    path.write_bytes(_jsonl(rows))
    assert (
        "LLaMA-Factory's KTO file"
        in _problems(_check_data(path, "kto")[1])["llamafactory-kto"]["message"]
    )


CONVERSIONS = {
    "dpo": (_llamafactory_pairs, {"prompt", "chosen", "rejected"}, 1),
    "reward": (_llamafactory_pairs, {"prompt", "chosen", "rejected"}, 1),
    "kto": (_llamafactory_pairs, {"prompt", "completion", "label"}, 2),
    "sft": (_sharegpt, {"messages"}, 1),
    "grpo": (_sharegpt, {"prompt"}, 1),
}


@pytest.mark.parametrize("method", sorted(CONVERSIONS))
def test_convert_to_trl_writes_rows_that_then_pass_check_data(tmp_path, method):
    from trl.data_utils import is_conversational, maybe_extract_prompt

    make, columns, per_row = CONVERSIONS[method]
    source = tmp_path / "published.jsonl"
    source.write_bytes(_jsonl(make(3)))
    before = source.read_bytes()
    out = tmp_path / "trl.jsonl"
    rc, stdout, err = _cli(
        "check-data", "--dataset", str(source), "--method", method, "--convert-to", "trl", str(out)
    )
    assert rc == 0 and err == "", stdout
    assert f"wrote {3 * per_row} rows to {out}" in stdout
    assert source.read_bytes() == before  # the input is only read
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 * per_row and all(set(row) == columns for row in rows)
    assert all(is_conversational(row) for row in rows)
    roles = {
        turn["role"] for row in rows for v in row.values() if isinstance(v, list) for turn in v
    }
    assert roles <= {"system", "user", "assistant"} and "human" not in roles
    if method == "dpo":
        assert rows[0] == {
            "prompt": [{"role": "user", "content": "question 0?"}],
            "chosen": [{"role": "assistant", "content": "a kind answer 0"}],
            "rejected": [{"role": "assistant", "content": "go away 0"}],
        }
        assert maybe_extract_prompt(rows[0]) == rows[0]  # TRL takes the prompt as written
    rc, report, _ = _check_data(out, method)
    assert rc == 0 and json.loads(report)["format"] == "conversational", report


def test_convert_to_never_overwrites_a_file(tmp_path):
    source = tmp_path / "published.jsonl"
    source.write_bytes(_jsonl(_llamafactory_pairs(2)))
    out = tmp_path / "trl.jsonl"
    out.write_text("keep me\n")
    rc, _, err = _cli(
        "check-data", "--dataset", str(source), "--method", "dpo", "--convert-to", "trl", str(out)
    )
    assert rc == 2 and len(err.splitlines()) == 1 and "exists" in err
    assert out.read_text() == "keep me\n"


@pytest.mark.parametrize(
    "row",
    [
        {"prompt": "question?", "chosen": [{"role": "assistant", "content": "a"}],
         "rejected": [{"role": "assistant", "content": "b"}]},
        {"prompt": [{"role": "user", "content": "question?"}], "chosen": " a", "rejected": " b"},
    ],
    ids=["plain-prompt", "conversational-prompt"],
)  # fmt: skip
def test_a_row_mixing_plain_and_conversational_columns_is_an_error(row):
    from runners.preflight import check_rows

    rows = [row, {**row, "rejected": row["rejected"] * 2}]  # every row alike: no row differs
    report = check_rows(rows, "dpo")
    problem = next(p for p in report.problems if p.code == "mixed-row")
    assert problem.severity == "error" and problem.rows == [1, 2]
    assert "maybe_extract_prompt" in problem.message


@pytest.mark.parametrize(
    ("method", "extra", "named"),
    [
        ("sft", {"labels": ["helpful"]}, "labels"),
        ("sft", {"input_ids": [1, 2, 3]}, "input_ids"),
        ("reward", {"chosen_ids": [1], "rejected_ids": [2]}, "chosen_ids and rejected_ids"),
    ],
)
def test_a_column_the_trainer_takes_as_its_own_input_is_an_error(method, extra, named):
    from runners.preflight import check_rows

    rows = [{**row, **extra} for row in demo_rows(method)]
    problem = next(p for p in check_rows(rows, method).problems if p.code == "reserved-column")
    assert problem.severity == "error"
    assert f"column {named}:" in problem.message and "rename or drop it" in problem.message


def test_kto_labels_may_be_bools_ints_or_their_text_and_all_are_counted():
    from runners.data_shapes import cast_kto_labels
    from runners.preflight import check_rows

    rows = demo_rows("kto")[:6]
    forms = [True, False, 1, 0, "true", "False"]
    rows = [{**row, "label": form} for row, form in zip(rows, forms, strict=True)]
    report = check_rows(rows, "kto")
    assert report.errors == [], report.problems
    assert report.labels == {"desirable": 3, "undesirable": 3}

    import datasets

    texts = datasets.Dataset.from_list([{"label": "true"}, {"label": "0"}, {"label": "False"}])
    assert cast_kto_labels(texts)["label"] == [True, False, False]  # KTOTrainer sums them


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_check_data_writes_nothing_into_the_datasets_cache(tmp_path, monkeypatch, suffix):
    import datasets

    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    rows = demo_rows("dpo")
    path = tmp_path / f"pairs{suffix}"
    if suffix == ".jsonl":
        path.write_bytes(_jsonl(rows))
    elif suffix == ".csv":
        datasets.Dataset.from_list(rows).to_csv(str(path), index=False)
    else:
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    rc, out, err = _check_data(path)
    assert rc == 0 and json.loads(out)["rows"] == len(rows), err
    assert list(cache.rglob("*")) == []


def test_plan_counts_the_rows_of_a_saved_folder(tmp_path):
    import datasets

    rows = demo_rows("dpo")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    splits = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows[:3]), "test": datasets.Dataset.from_list(rows)}
    )
    splits.save_to_disk(str(tmp_path / "splits"))
    for folder, count in (("saved", len(rows)), ("splits", 3)):
        rc, out, err = _plan(tmp_path / folder)
        assert rc == 0 and _planned_rows(out) == count, err

"""The answers file: DESIGN.md's fields, YAML or JSON, and messages that list valid values."""

from __future__ import annotations

import json

import pytest

from advisor.decision.answers import Answers, load_answers, parse_gpus, valid_values
from planner.errors import InputError

GOOD = {
    "use_case": "support_copilot",
    "risk": "medium",
    "ml_maturity": "medium",
    "feedback": "pairwise_preferences",
    "reward_model": "none",
    "sft_done": True,
    "priority": "time_to_value",
}


def write_yaml(tmp_path, text: str):
    path = tmp_path / "answers.yaml"
    path.write_text(text)
    return path


def test_yaml_and_json_files_give_the_same_answers(tmp_path):
    yaml_path = write_yaml(tmp_path, "\n".join(f"{k}: {str(v).lower()}" for k, v in GOOD.items()))
    json_path = tmp_path / "answers.json"
    json_path.write_text(json.dumps(GOOD))
    assert load_answers(yaml_path) == load_answers(json_path) == Answers(**GOOD)


def test_model_and_gpus_are_optional_and_kept(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({**GOOD, "model": "7b", "gpus": "8x h100-80gb"}))
    answers = load_answers(path)
    assert answers.model == "7b"
    assert answers.parsed_gpus() == ("h100-80gb", 8)
    assert Answers(**GOOD).parsed_gpus() is None


def test_an_unknown_value_is_named_with_every_valid_value_and_a_suggestion(tmp_path):
    path = write_yaml(tmp_path, json.dumps({**GOOD, "use_case": "suport_copilot"}))
    with pytest.raises(InputError) as error:
        load_answers(path)
    message = str(error.value)
    assert "use_case: 'suport_copilot' is not valid" in message
    assert "did you mean 'support_copilot'" in message
    for value in valid_values("use_case"):
        assert value in message
    assert "\n" not in message


def test_every_problem_is_reported_at_once(tmp_path):
    data = {**GOOD, "risk": "extreme", "priority": "speed"}
    del data["feedback"]
    with pytest.raises(InputError) as error:
        load_answers(write_yaml(tmp_path, json.dumps(data)))
    message = str(error.value)
    assert "risk: 'extreme' is not valid; valid: low, medium, high" in message
    assert "priority: 'speed'" in message and "time_to_value, cost, control, quality" in message
    assert "feedback: missing (valid: pairwise_preferences" in message


def test_an_unknown_field_suggests_the_field_meant(tmp_path):
    data = {**GOOD, "usecase": "search"}
    with pytest.raises(InputError, match=r"usecase: unknown field; did you mean 'use_case'"):
        load_answers(write_yaml(tmp_path, json.dumps(data)))


def test_sft_done_must_be_a_boolean(tmp_path):
    with pytest.raises(InputError, match=r"sft_done: 'maybe' is not valid.*valid: true, false"):
        load_answers(write_yaml(tmp_path, json.dumps({**GOOD, "sft_done": "maybe"})))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1x a100-80gb", ("a100-80gb", 1)),
        ("8x h100-80gb", ("h100-80gb", 8)),
        ("a100-80gb", ("a100-80gb", 1)),
        ("2 x RTX-4090", ("rtx-4090", 2)),
        ("4×L40S", ("l40s", 4)),
    ],
)
def test_gpus_text_parses_into_name_and_count(text, expected):
    assert parse_gpus(text) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("gpus: 1x 4090", ("rtx-4090", 1)),
        ("gpus: '4090'", ("rtx-4090", 1)),
        ("gpus: 4090", ("rtx-4090", 1)),  # YAML reads this as a number
        ("gpus: 2x rtx 4090", ("rtx-4090", 2)),
        ("gpus: 8x nvidia h100 80gb hbm3", ("h100-80gb", 8)),
    ],
)
def test_gpus_answers_take_the_spellings_plan_takes(tmp_path, line, expected):
    text = "\n".join(f"{k}: {str(v).lower()}" for k, v in GOOD.items()) + f"\n{line}\n"
    assert load_answers(write_yaml(tmp_path, text)).parsed_gpus() == expected


def test_every_gpu_name_and_alias_plan_accepts_is_a_gpus_answer():
    from planner.gpus import list_gpus, resolve_gpu

    for gpu in list_gpus():
        for name in [gpu.name, *gpu.aliases]:
            assert resolve_gpu(name) == gpu  # what `advisor plan --gpu NAME` takes
            assert parse_gpus(f"2x {name}") == (gpu.name.lower(), 2), name
            assert parse_gpus(name) == (gpu.name.lower(), 1), name


@pytest.mark.parametrize("text", ["0x a100-80gb", "eight h100s", "8x", ""])
def test_bad_gpus_text_says_how_to_write_it(tmp_path, text):
    with pytest.raises(InputError, match="gpus:"):
        load_answers(write_yaml(tmp_path, json.dumps({**GOOD, "gpus": text})))


def test_scenario_keys_beside_the_answers_are_ignored(tmp_path):
    data = {**GOOD, "title": "x", "description": "y", "expected": {"method": "dpo"}}
    assert load_answers(write_yaml(tmp_path, json.dumps(data))) == Answers(**GOOD)


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("missing.yaml", None, "answers file .*missing.yaml: no such file"),
        ("broken.yaml", "use_case: [unclosed", "not valid YAML"),
        ("broken.json", "{", "not valid JSON"),
        ("list.yaml", "- a\n- b\n", "expected a mapping of field: value, got list"),
        ("empty.yaml", "", "expected a mapping of field: value, got NoneType"),
    ],
)
def test_unreadable_files_raise_one_line_input_errors(tmp_path, name, text, needle):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(InputError, match=needle) as error:
        load_answers(path)
    assert "\n" not in str(error.value)


def _alias_bomb(levels: int, width: int) -> str:
    lines = ['l0: &l0 ["lol", "lol"]']
    for level in range(1, levels + 1):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    return "\n".join(lines) + f"\nuse_case: *l{levels}\n"


def test_a_billion_laughs_file_is_refused_before_it_expands(tmp_path):
    with pytest.raises(InputError, match="more than 64 YAML aliases"):
        load_answers(write_yaml(tmp_path, _alias_bomb(9, 9)))


def test_an_aliased_value_under_the_limit_is_described_not_expanded(tmp_path):
    # 10 levels of 6 aliases: 120 million items if anything expanded it (it once took minutes).
    with pytest.raises(InputError, match=r"use_case: a list of 6 items is not valid") as error:
        load_answers(write_yaml(tmp_path, _alias_bomb(10, 6)))
    assert len(str(error.value)) < 600


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 10_000 + "]" * 10_000, "nested deeper than 64 levels"),
        ("use_case: " + "9" * 5000, "a number with too many digits"),
        ("a: 1\n" * 20_000, "larger than the 64 KiB"),
        ("use_case: {a: 1}\nrisk: [low]\n", "use_case: a mapping of 1 key is not valid"),
    ],
)
def test_hostile_answers_files_are_one_line_errors(tmp_path, text, message):
    with pytest.raises(InputError, match=message) as error:
        load_answers(write_yaml(tmp_path, text))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gpus": "99999999999999999999x h100"}, "at most 8,192"),
        ({"gpus": "1025x h100"}, "must be whole nodes of 8"),
        ({"model": "a\x00b"}, "holds a control character"),
        ({"model": "x" * 5000}, "at most 4,096"),
    ],
)
def test_absurd_model_and_gpus_answers_are_named(tmp_path, change, message):
    with pytest.raises(InputError, match=message):
        load_answers(write_yaml(tmp_path, json.dumps({**GOOD, **change})))

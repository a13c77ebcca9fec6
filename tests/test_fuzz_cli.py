"""Bad input never reaches a traceback: `advisor plan` and `advisor recommend` run in-process on
generated command lines (tests/cli_fuzz.py), and on the cases a tester found by hand.

Each run must exit 0, 1 or 2 without an exception escaping main() or "Traceback" on stderr, and
a `--json` run that exits 0 must print JSON with no null, NaN, infinite or negative number
outside the keys where the contract has one (cli_fuzz.ALLOWED_NULL / ALLOWED_NEGATIVE).
`scripts/fuzz_cli.py` runs the same generators thousands of times.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cli_fuzz import (
    HypothesisPick,
    Workdir,
    alias_bomb,
    plan_argv,
    recommend_argv,
    run,
    shown_argv,
)

FUZZ = settings(
    max_examples=400,
    deadline=None,  # a recommend with a compute check takes ~0.2 s, a slow CI machine more
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Workdir:
    return Workdir(tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(autouse=True)
def in_workdir(work, monkeypatch):
    monkeypatch.chdir(work.root)  # a relative --report path lands here, not in the checkout


def assert_sane(argv: list[str]) -> None:
    outcome = run(argv)
    assert not outcome.problems, (
        f"{shown_argv(argv)}: {outcome.problems}\n{outcome.escaped}{outcome.err[:500]}"
    )


@FUZZ
@given(st.data())
def test_generated_plan_command_lines_never_traceback(work, data):
    assert_sane(plan_argv(HypothesisPick(data), work))


@settings(FUZZ, max_examples=150)
@given(st.data())
def test_generated_recommend_command_lines_never_traceback(work, data):
    assert_sane(recommend_argv(HypothesisPick(data), work))


GOOD = """use_case: support_copilot
risk: medium
ml_maturity: medium
feedback: pairwise_preferences
reward_model: none
sft_done: true
priority: time_to_value
"""


def _file(work: Workdir, name: str, text: str) -> str:
    path = work.path(name)
    path.write_text(text)
    return str(path)


def _sparse(work: Workdir, name: str, size: int) -> str:
    """A fresh sparse file of `size` bytes (the shared `work.huge` may have been overwritten by
    an earlier fuzzed command that took it as an output path)."""
    path = work.path(name)
    with path.open("wb") as handle:
        handle.truncate(size)
    return str(path)


def _config(work: Workdir, **fields) -> str:
    base = json.loads(Path(work.base_configs[0]).read_text())
    return _file(work, "config.json", json.dumps({**base, **fields}))


# The cases a tester found by hand, each once: (argv builder, needle in the one-line error).
HAND_FOUND = {
    "epochs-inf": (lambda w: ["plan", "--epochs", "inf", "--samples", "100"], "--epochs"),
    "epochs-huge": (lambda w: ["plan", "--epochs", "1e200", "--json"], "at most 1,000 epochs"),
    "seq-len-huge": (lambda w: ["plan", "--seq-len", "10" * 30, "--json"], "1,048,576 tokens"),
    "batch-huge": (lambda w: ["plan", "--batch-size", str(10**300)], "--batch-size: at most"),
    "gpus-huge": (lambda w: ["plan", "--num-gpus", str(10**30)], "--num-gpus: at most 1,024"),
    "nodes-huge": (lambda w: ["plan", "--nodes", "100000"], "--nodes: at most 16,384"),
    "beta-inf": (lambda w: ["plan", "--beta", "inf", "--json"], "--beta"),
    "prompt-plus-completion": (
        lambda w: ["plan", "--prompt-len", "1048576", "--completion-len", "1"],
        "--completion-len",
    ),
    "model-300-chars": (lambda w: ["plan", "--model", "x" * 300], "unknown model"),
    "model-no-such-user": (lambda w: ["plan", "--model", "~nosuchuser/x"], "home folder"),
    "model-nul": (lambda w: ["plan", "--model", "a\x00b"], "control character"),
    "model-dev-zero": (lambda w: ["plan", "--model", "/dev/zero"], "not a regular file"),
    "model-fifo": (lambda w: ["plan", "--model", str(w.fifo)], "not a regular file"),
    "config-too-large": (
        lambda w: ["plan", "--model", _sparse(w, "huge.json", 17 * 2**20)],
        "larger than",
    ),
    "config-deep": (
        lambda w: ["plan", "--model", _file(w, "c.json", "[" * 100000 + "]" * 100000)],
        "nested deeper",
    ),
    "config-model-type-list": (
        lambda w: ["plan", "--model", _config(w, model_type=["llama"])],
        "'model_type' must be a string",
    ),
    "config-model-type-dict": (
        lambda w: ["plan", "--model", _config(w, model_type={"a": 1})],
        "'model_type' must be a string",
    ),
    "config-hidden-huge": (
        lambda w: ["plan", "--model", _config(w, hidden_size=10**30), "--json"],
        "'hidden_size' must be at most 262,144",
    ),
    "config-layers-huge": (
        lambda w: ["plan", "--model", _config(w, num_hidden_layers=10**12), "--json"],
        "'num_hidden_layers' must be at most 4,096",
    ),
    "config-vocab-inf": (
        lambda w: ["plan", "--model", _config(w, vocab_size=float("inf"))],
        "'vocab_size' must be a positive integer",
    ),
    "config-digits": (
        lambda w: ["plan", "--model", _file(w, "c.json", '{"hidden_size": ' + "9" * 5000 + "}")],
        "too many digits",
    ),
    "answers-deep-yaml": (
        lambda w: ["recommend", "--answers", _file(w, "a.yaml", "[" * 10000 + "]" * 10000)],
        "nested deeper",
    ),
    "answers-alias-bomb": (
        lambda w: ["recommend", "--answers", _file(w, "a.yaml", alias_bomb(9, 9))],
        "YAML aliases",
    ),
    "answers-small-alias-bomb": (
        lambda w: ["recommend", "--answers", _file(w, "a.yaml", alias_bomb(7, 9))],
        "use_case: a list of 9 items is not valid",
    ),
    "answers-fifo": (lambda w: ["recommend", "--answers", str(w.fifo)], "not a regular file"),
    "answers-dev-zero": (lambda w: ["recommend", "--answers", "/dev/zero"], "not a regular"),
    "answers-model-300-chars": (
        lambda w: ["recommend", "--answers", _file(w, "a.yaml", GOOD + f"model: {'x' * 300}\n")],
        "",  # the model is only echoed when no gpus are given: exit 0, no traceback
    ),
    "answers-model-fifo": (
        lambda w: [
            "recommend",
            "--answers",
            _file(w, "a.yaml", GOOD + f"model: {w.fifo}\ngpus: 1x a100-80gb\n"),
        ],
        "not a regular file",
    ),
    "answers-gpus-huge": (
        lambda w: [
            "recommend",
            "--answers",
            _file(w, "a.yaml", GOOD + "model: 7b\ngpus: 99999999999999999999x a100-80gb\n"),
        ],
        "at most 8,192",
    ),
}


@pytest.mark.parametrize("case", sorted(HAND_FOUND))
def test_hand_found_cases_are_one_line_errors(work, case):
    build, needle = HAND_FOUND[case]
    argv = build(work)
    outcome = run(argv)
    assert not outcome.problems, (outcome.problems, outcome.escaped, outcome.err)
    if needle:
        assert outcome.code == 2, (case, outcome.out[:300])
        assert needle in outcome.err, outcome.err
        assert len(outcome.err.strip().splitlines()) == 1, outcome.err


def test_seq_len_at_the_ceiling_still_estimates_finite_numbers(work):
    outcome = run(["plan", "--seq-len", "1048576", "--batch-size", "65536", "--json"])
    assert outcome.code == 0 and not outcome.problems, outcome.problems

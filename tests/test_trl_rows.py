"""The pre-flight's verdict on each row is what TRL 1.12's own preprocessing does with it.

Each test feeds the same rows to the trainer's real data preparation (its `_prepare_dataset`,
or ORPO's / CPO's `tokenize_row`, or GRPO's `_tokenize_prompts`, called on a stand-in for the
trainer that holds only what those methods read) and to `check_rows`, and compares row by row:
kept whole, truncated, dropped, left with no completion tokens, or (GRPO) prompt length.
The rows take the shapes public data comes in: hh-rlhf's implicit prompts, explicit pairs,
conversations, and prompts too long for the planned length.
"""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest

from planner.data_rules import Fate
from planner.specs import Method
from runners.preflight import check_rows
from runners.tiny import demo_rows, ensure_model

LIMIT = 48
"""max_length for every test: short enough that the corpus below has rows of every fate."""
LONG_PROMPT = " ".join(["Where is the capital of France and why?"] * 8)
LONG_ANSWER = " Paris is the capital of France." * 12


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    folder = ensure_model(tmp_path_factory.getbasetemp() / "tiny-llama")
    return AutoTokenizer.from_pretrained(folder)


def _pairs(conversational: bool = False) -> list[dict]:
    """Pairs of every fate at LIMIT: short, long answers, a prompt filling the limit, hh-rlhf
    implicit prompts (one whose extraction cuts into a word)."""
    rows = demo_rows("dpo", conversational=conversational)[:3]
    if conversational:
        user, answer = rows[0]["prompt"], rows[0]["chosen"]
        rows.append({**rows[1], "chosen": [{**answer[0], "content": LONG_ANSWER}]})
        rows.append({**rows[2], "prompt": [{**user[0], "content": LONG_PROMPT}]})
        rows.append({"prompt": user, "chosen": answer, "rejected": [{**answer[0], "content": "."}]})
        return rows
    rows.append({**rows[1], "chosen": LONG_ANSWER})
    rows.append({**rows[2], "prompt": LONG_PROMPT})
    rows.append({**rows[0], "rejected": rows[0]["rejected"] + LONG_ANSWER[:60]})
    return rows


def _implicit() -> list[dict]:
    """hh-rlhf's shape: no prompt column; the dialogue up to the last answer is shared."""
    head = "\n\nHuman: Which search engine respects privacy?\n\nAssistant:"
    return [
        {"chosen": head + " DuckDuckGo does.", "rejected": head + " Google does."},
        {"chosen": head + " Duckduckgo.", "rejected": head + " DuckDuckGo, I think."},
        {
            "chosen": "\n\nHuman:" + LONG_PROMPT + head + " Yes.",
            "rejected": "\n\nHuman:" + LONG_PROMPT + head + " No.",
        },
    ]


def _fates(report, rows) -> dict[int, Fate]:
    fates = dict.fromkeys(range(1, len(rows) + 1), Fate.kept)
    codes = {
        "dropped": Fate.dropped,
        "truncated": Fate.truncated,
        "no-completion-tokens": Fate.no_completion,
        "long-prompts": Fate.long_prompt,
    }
    for problem in report.problems:
        for row in problem.rows if problem.code in codes else []:
            fates[row] = codes[problem.code]
    return fates


def _indexed(rows):
    import datasets

    return datasets.Dataset.from_list([{**row, "row": n} for n, row in enumerate(rows, 1)])


def _prepared(trainer_class, config_class, stand_in, rows, tokenizer, tmp_path, **prepare):
    config = config_class(output_dir=str(tmp_path), max_length=LIMIT, use_cpu=True, bf16=False)
    return trainer_class._prepare_dataset(
        stand_in, _indexed(rows), tokenizer, config, dataset_name="train", **prepare
    )


def _trl_pair_fates(prepared, rows, completions=("chosen_ids", "rejected_ids")):
    fates = dict.fromkeys(range(1, len(rows) + 1), Fate.dropped)
    for example in prepared:
        longest = max(len(example["prompt_ids"]) + len(example[c]) for c in completions)
        fates[example["row"]] = Fate.truncated if longest > LIMIT else Fate.kept
    return fates


@pytest.mark.parametrize("conversational", [False, True], ids=["plain", "conversational"])
def test_dpo_drops_and_truncates_rows_as_the_preflight_says(tokenizer, tmp_path, conversational):
    from trl import DPOConfig, DPOTrainer

    stand_in = SimpleNamespace(_tokenizer=tokenizer)
    # TRL extracts implicit prompts when the first row has none: each shape is its own dataset.
    for rows in [_pairs(conversational)] + ([] if conversational else [_implicit()]):
        prepared = _prepared(DPOTrainer, DPOConfig, stand_in, rows, tokenizer, tmp_path)
        report = check_rows(rows, "dpo", tokenizer=tokenizer, max_length=LIMIT)
        assert _fates(report, rows) == _trl_pair_fates(prepared, rows)


def test_the_dpo_corpus_has_every_fate(tokenizer):
    report = check_rows(_pairs(), "dpo", tokenizer=tokenizer, max_length=LIMIT)
    assert set(_fates(report, _pairs()).values()) == {Fate.kept, Fate.truncated, Fate.dropped}


def test_kto_drops_and_truncates_rows_as_the_preflight_says(tokenizer, tmp_path):
    from trl import KTOConfig, KTOTrainer

    rows = [
        {"prompt": r["prompt"], "completion": r["chosen"], "label": n % 2 == 0}
        for n, r in enumerate(_pairs())
    ]
    stand_in = SimpleNamespace(
        _tokenizer=tokenizer, calculate_KL=False, desirable_weight=1.0, undesirable_weight=1.0
    )
    prepared = _prepared(KTOTrainer, KTOConfig, stand_in, rows, tokenizer, tmp_path)
    report = check_rows(rows, "kto", tokenizer=tokenizer, max_length=LIMIT)
    assert _fates(report, rows) == _trl_pair_fates(prepared, rows, ("completion_ids",))


@pytest.mark.parametrize("conversational", [False, True], ids=["plain", "conversational"])
def test_the_reward_trainer_drops_every_row_longer_than_max_length(
    tokenizer, tmp_path, conversational
):
    from trl import RewardConfig, RewardTrainer

    rows = _pairs(conversational)
    prepared = _prepared(RewardTrainer, RewardConfig, SimpleNamespace(), rows, tokenizer, tmp_path)
    kept = set(prepared["row"])
    expected = {n: Fate.kept if n in kept else Fate.dropped for n in range(1, len(rows) + 1)}
    report = check_rows(rows, "reward", tokenizer=tokenizer, max_length=LIMIT)
    assert _fates(report, rows) == expected
    assert Fate.dropped in expected.values()


def test_sft_truncates_and_drops_rows_left_without_completion_labels(tokenizer, tmp_path):
    from trl import SFTConfig, SFTTrainer

    rows = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in _pairs()]
    stand_in = SimpleNamespace(
        _tokenizer=tokenizer,
        completion_only_loss=True,
        chat_template=None,
        _is_vision_dataset=False,
    )
    prepared = _prepared(
        SFTTrainer,
        SFTConfig,
        stand_in,
        rows,
        tokenizer,
        tmp_path,
        packing=False,
        formatting_func=None,
    )
    full = {
        n: len(tokenizer(r["prompt"] + r["completion"] + tokenizer.eos_token)["input_ids"])
        for n, r in enumerate(rows, 1)
    }
    expected = dict.fromkeys(full, Fate.dropped)
    for example in prepared:
        n = example["row"]
        expected[n] = Fate.truncated if full[n] > LIMIT else Fate.kept
    report = check_rows(rows, "sft", tokenizer=tokenizer, max_length=LIMIT)
    assert _fates(report, rows) == expected
    assert Fate.dropped in expected.values()


@pytest.mark.parametrize("method", ["orpo", "simpo"])
def test_orpo_and_cpo_cut_answers_and_can_leave_none(tokenizer, method):
    from trl.data_utils import maybe_apply_chat_template, maybe_extract_prompt

    if method == "orpo":
        from trl.experimental.orpo import ORPOTrainer as Trainer
    else:
        from trl.experimental.cpo import CPOTrainer as Trainer
    rows = [
        *_pairs(),
        # the longer answer fills max_length exactly: both answers are cut to nothing
        {"prompt": "Hi.", "chosen": " Paris" * (LIMIT - 1), "rejected": " No."},
    ]

    def tokenized(row, limit):
        stand_in = SimpleNamespace(
            processing_class=tokenizer, is_encoder_decoder=False, max_length=limit
        )
        stand_in.build_tokenized_answer = partial(Trainer.build_tokenized_answer, stand_in)
        example = maybe_apply_chat_template(maybe_extract_prompt(dict(row)), tokenizer)
        return Trainer.tokenize_row(stand_in, example)

    expected = {}
    for n, row in enumerate(rows, 1):
        cut, whole = tokenized(row, LIMIT), tokenized(row, 10**6)
        answers = [sum(t != -100 for t in cut[f"{k}_labels"]) for k in ("chosen", "rejected")]
        expected[n] = (
            Fate.no_completion if 0 in answers else Fate.truncated if cut != whole else Fate.kept
        )
    report = check_rows(rows, method, tokenizer=tokenizer, max_length=LIMIT)
    assert _fates(report, rows) == expected
    assert Fate.no_completion in expected.values()
    assert [p.severity for p in report.problems if p.code == "no-completion-tokens"] == ["error"]


@pytest.mark.parametrize("conversational", [False, True], ids=["plain", "conversational"])
def test_grpo_prompts_are_measured_whole_as_grpo_tokenizes_them(tokenizer, conversational):
    from trl import GRPOTrainer

    rows = [{"prompt": r["prompt"]} for r in _pairs(conversational)]
    stand_in = SimpleNamespace(
        processing_class=tokenizer,
        _is_vlm=False,
        environment_factories=None,
        tools=None,
        chat_template=None,
        chat_template_kwargs={},
    )
    prompt_ids, _, _ = GRPOTrainer._tokenize_prompts(stand_in, [r["prompt"] for r in rows])
    for method in ("grpo", "rloo", "ppo"):
        report = check_rows(rows, method, tokenizer=tokenizer, max_length=LIMIT)
        assert report.lengths.max_prompt == max(len(ids) for ids in prompt_ids)
        long = [n for n, ids in enumerate(prompt_ids, 1) if len(ids) > LIMIT]
        assert long and [p.rows for p in report.problems if p.code == "long-prompts"] == [long]
        assert "truncat" not in " ".join(p.message for p in report.problems).replace(
            "truncates none", ""
        )


def test_every_row_dropped_is_an_error_before_launch(tokenizer):
    rows = [{**r, "prompt": LONG_PROMPT} for r in demo_rows("dpo")[:3]]
    report = check_rows(rows, "dpo", tokenizer=tokenizer, max_length=LIMIT)
    assert [p.code for p in report.errors] == ["every-row-dropped"]


def test_rows_ending_in_eos_are_not_said_to_get_two(tokenizer):
    rows = demo_rows("sft")[:3]
    rows[0] = {**rows[0], "completion": rows[0]["completion"] + tokenizer.eos_token}
    assert check_rows(rows, "sft", tokenizer=tokenizer, max_length=256).problems == []


def test_sampled_counts_are_labelled_estimates(tokenizer, monkeypatch):
    import runners.preflight

    monkeypatch.setattr(runners.preflight, "TOKEN_SAMPLE", 4)
    rows = _pairs() * 3
    report = check_rows(rows, "dpo", tokenizer=tokenizer, max_length=LIMIT)
    assert report.lengths.estimated and report.lengths.measured_rows < len(rows)
    dropped = next(p for p in report.problems if p.code == "dropped")
    assert f"even sample of {report.lengths.measured_rows} of {len(rows)} rows" in dropped.message


def test_implicit_prompts_that_empty_an_answer_or_cut_a_word_are_named():
    from trl.data_utils import extract_prompt

    head = "\n\nHuman: Is it safe?\n\nAssistant:"
    rows = [
        *_implicit(),
        {"chosen": head + " ", "rejected": head + " Yes, with care."},  # hh: an empty answer
        {"chosen": head + " Yes", "rejected": head + " Yes, with care."},  # a prefix of the other
    ]
    assert extract_prompt(rows[1])["chosen"] == "duckgo."  # TRL cuts "Duck" off both answers
    assert extract_prompt(rows[3])["chosen"] == " "
    assert extract_prompt(rows[4])["chosen"] == "s"  # TRL keeps the prefix's last character
    report = check_rows(rows, "dpo")
    assert [p.rows for p in report.errors if p.code == "implicit-empty-completion"] == [[4]]
    cut = next(p for p in report.problems if p.code == "implicit-prompt-cuts-word")
    assert cut.rows == [2, 5]
    assert "row 2: prompt …" in cut.message and "Assistant: Duck', chosen 'duckgo.'" in cut.message


def _launch(*flags: str) -> tuple[int, str, str]:
    import contextlib
    import io

    from advisor.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["launch", *flags])
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("method", ["orpo", "simpo"])
def test_rows_left_without_completion_tokens_refuse_the_launch(tokenizer, tmp_path, method):
    from runners.tiny import write_jsonl

    rows = [*demo_rows(method)[:3], {"prompt": "Hi.", "chosen": " Paris" * 63, "rejected": " No"}]
    dataset = write_jsonl(rows, tmp_path / "pairs.jsonl")
    flags = ["--method", method, "--model", tokenizer.name_or_path, "--dataset", str(dataset)]
    rc, _, err = _launch(*flags, "--seq-len", "64", "--device", "cpu",
                         "--output", str(tmp_path / "runs"))  # fmt: skip
    assert rc == 2
    assert "1 row (25%) keeps no completion tokens at max length 64" in " ".join(err.split())
    assert "(rows 4)" in err and not (tmp_path / "runs").exists()


def test_a_grpo_plan_is_sized_for_the_longest_prompt(tokenizer, tmp_path):
    from runners.run_folder import read_manifest
    from runners.tiny import write_jsonl

    rows = [*demo_rows("grpo")[:3], {"prompt": LONG_PROMPT}]
    longest = len(tokenizer(text=LONG_PROMPT)["input_ids"])
    dataset = write_jsonl(rows, tmp_path / "prompts.jsonl")
    flags = ["--method", "grpo", "--model", tokenizer.name_or_path, "--dataset", str(dataset)]
    rc, out, err = _launch(*flags, "--seq-len", "64", "--device", "cpu", "--dry-run",
                           "--output", str(tmp_path / "runs"))  # fmt: skip
    assert rc == 0, err
    assert f"sized for the longest prompt, {longest} tokens, not the planned 32" in err
    manifest = read_manifest(Path(out.strip().splitlines()[-1]))
    assert manifest.request.prompt_len == longest and manifest.request.seq_len == longest + 32
    assert manifest.spec.trl_config["max_completion_length"] == 32


def test_drop_long_prompts_leaves_them_out_of_the_run_instead(tokenizer, tmp_path):
    import datasets

    from runners.run_folder import read_manifest
    from runners.tiny import write_jsonl
    from runners.train import _without_long_prompts

    rows = [*demo_rows("grpo")[:3], {"prompt": LONG_PROMPT}]
    dataset = write_jsonl(rows, tmp_path / "prompts.jsonl")
    flags = ["--method", "grpo", "--model", tokenizer.name_or_path, "--dataset", str(dataset)]
    rc, out, err = _launch(*flags, "--seq-len", "64", "--device", "cpu", "--dry-run",
                           "--drop-long-prompts", "--output", str(tmp_path / "runs"))  # fmt: skip
    assert rc == 0, err
    assert "prompts longer than 32 tokens are left out (25% of the rows measured)" in err
    spec = read_manifest(Path(out.strip().splitlines()[-1])).spec
    assert spec.max_prompt_tokens == 32 and spec.request.prompt_len is None
    kept = _without_long_prompts(spec, datasets.Dataset.from_list(rows))
    assert kept["prompt"] == [r["prompt"] for r in rows[:3]]
    everything_long = write_jsonl([{"prompt": LONG_PROMPT}] * 2, tmp_path / "long.jsonl")
    flags[-1] = str(everything_long)
    rc, _, err = _launch(*flags, "--seq-len", "64", "--device", "cpu", "--dry-run",
                         "--drop-long-prompts", "--output", str(tmp_path / "runs"))  # fmt: skip
    assert rc == 2 and "would leave out every prompt" in err


# --- a corpus of the shapes public data comes in, through every method ------------------------

KNOWN_ROLES = {"system", "user", "assistant", "tool"}


def _corpus(tokenizer) -> dict[str, list[dict]]:
    q, a, b = "What is the capital of France?", "Paris.", "Lyon."
    sharegpt = [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    return {
        "hh-rlhf implicit prompts": _implicit(),
        "explicit pairs, a prompt too long": _pairs(),
        "conversational pairs": demo_rows("dpo", conversational=True)[:3],
        "KTO rows labelled 1/0": [{**r, "label": int(r["label"])} for r in demo_rows("kto")[:4]],
        "SFT prompt + completion": demo_rows("sft")[:3],
        "prompts, one too long": [*demo_rows("grpo")[:3], {"prompt": LONG_PROMPT}],
        "LLaMA-Factory preference file": [
            {
                "conversations": sharegpt[:1],
                "chosen": {"from": "gpt", "value": a},
                "rejected": {"from": "gpt", "value": b},
            }
        ]
        * 2,
        "ShareGPT conversations": [{"conversations": sharegpt}] * 2,
        "Open-Assistant export (labels)": [
            {
                "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                "labels": {"name": ["spam", "quality"], "value": [0.0, 0.9]},
            }
        ]
        * 2,
    }


def _trl_outcome(method: str, rows: list[dict], tokenizer, tmp_path) -> str:
    """What TRL 1.12's own preprocessing does with rows for method: 'raises', 'no rows' (every
    row dropped), 'nan' (a row with no completion tokens), 'misreads' (trains on something
    else than the data means: ShareGPT roles a template does not know, a `labels` column taken
    as token labels) or 'trains'."""
    from trl import (
        DPOConfig,
        DPOTrainer,
        GRPOTrainer,
        KTOConfig,
        KTOTrainer,
        RewardConfig,
        RewardTrainer,
        SFTConfig,
        SFTTrainer,
    )  # fmt: skip
    from trl.data_utils import (
        maybe_apply_chat_template,
        maybe_convert_to_chatml,
        maybe_extract_prompt,
    )  # fmt: skip

    rows = copy.deepcopy(rows)  # TRL's helpers rewrite turns in place
    try:
        if method in ("orpo", "simpo"):
            from trl.experimental.cpo import CPOTrainer
            from trl.experimental.orpo import ORPOTrainer

            trainer = ORPOTrainer if method == "orpo" else CPOTrainer
            stand_in = SimpleNamespace(
                processing_class=tokenizer, is_encoder_decoder=False, max_length=LIMIT
            )
            stand_in.build_tokenized_answer = partial(trainer.build_tokenized_answer, stand_in)
            for row in rows:
                example = maybe_apply_chat_template(maybe_extract_prompt(dict(row)), tokenizer)
                out = trainer.tokenize_row(stand_in, example)
                if any(all(t == -100 for t in out[f"{k}_labels"]) for k in ("chosen", "rejected")):
                    return "nan"
            return "trains"
        if method in ("grpo", "rloo", "ppo"):
            stand_in = SimpleNamespace(
                processing_class=tokenizer, _is_vlm=False, environment_factories=None,
                tools=None, chat_template=None, chat_template_kwargs={},
            )  # fmt: skip
            GRPOTrainer._tokenize_prompts(stand_in, [row["prompt"] for row in rows])
            return "trains"
        trainers = {
            "dpo": (DPOTrainer, DPOConfig, SimpleNamespace(_tokenizer=tokenizer), {}),
            "kto": (KTOTrainer, KTOConfig, SimpleNamespace(
                _tokenizer=tokenizer, calculate_KL=False, desirable_weight=1.0,
                undesirable_weight=1.0), {}),
            "reward": (RewardTrainer, RewardConfig, SimpleNamespace(), {}),
            "sft": (SFTTrainer, SFTConfig, SimpleNamespace(
                _tokenizer=tokenizer, chat_template=None, _is_vision_dataset=False,
                completion_only_loss="prompt" in rows[0] and "completion" in rows[0]),
                {"packing": False, "formatting_func": None}),
        }  # fmt: skip
        trainer, config, stand_in, prepare = trainers[method]
        prepared = _prepared(trainer, config, stand_in, rows, tokenizer, tmp_path, **prepare)
    except Exception:  # TRL fails in many ways on data it cannot read: that is the outcome
        return "raises"
    if len(prepared) == 0:
        return "no rows"
    if method == "sft" and prepared[0]["labels"] == rows[0].get("labels"):
        return "misreads"  # the dataset's own `labels` column reached the loss as token labels
    converted = [maybe_convert_to_chatml(dict(row)) for row in rows]
    roles = {t.get("role") for r in converted for t in r.get("messages", []) if "role" in t}
    return "misreads" if roles - KNOWN_ROLES else "trains"


@pytest.mark.parametrize("method", [m.value for m in Method])
def test_every_shape_gets_the_verdict_trl_would_give_it(tokenizer, tmp_path, method):
    """The pre-flight has an error exactly when TRL's preprocessing fails, drops every row,
    leaves a row with no completion tokens, or reads the data as something else; rows TRL
    trains on pass (warnings allowed)."""
    outcomes = {}
    for shape, rows in _corpus(tokenizer).items():
        outcome = _trl_outcome(method, rows, tokenizer, tmp_path)
        report = check_rows(rows, method, tokenizer=tokenizer, max_length=LIMIT)
        outcomes[shape] = outcome
        errors = [p.code for p in report.errors]
        assert bool(errors) == (outcome != "trains"), (shape, outcome, errors)
    assert "trains" in outcomes.values() and set(outcomes.values()) - {"trains"}, outcomes


def test_check_data_reports_an_hh_rlhf_shaped_jsonl_gz_file_and_nothing_else(tokenizer, tmp_path):
    """hh-rlhf ships `harmless-base/test.jsonl.gz`: implicit-prompt pairs, some dialogues
    longer than max_length. The report counts its rows and what DPO will drop, and the
    libraries print nothing of their own (no tokenizer length warning, no progress bars)."""
    import gzip
    import json
    import subprocess
    import sys

    longest = {k: v.replace(LONG_PROMPT, LONG_PROMPT * 8) for k, v in _implicit()[2].items()}
    rows = [*_implicit() * 10, longest]  # past the tokenizer's 512: transformers would warn
    path = tmp_path / "harmless-base" / "test.jsonl.gz"
    path.parent.mkdir()
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    flags = ["--dataset", str(path), "--method", "dpo", "--model", tokenizer.name_or_path]
    code = "import sys; from advisor.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, "check-data", *flags, "--seq-len", str(LIMIT), "--json"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["rows"] == 31 and report["lengths"]["dropped_rows"] == 11
    assert done.stderr == ""


def test_the_mirrored_trl_helpers_agree_with_trl_on_every_corpus_row(tokenizer):
    """`runners.trl_rows` keeps TRL's `is_conversational` and `extract_prompt` (importing
    trl.data_utils would import torch on a dry run): they must answer as TRL's own do."""
    from trl import data_utils

    from runners import trl_rows

    rows = [row for shape in _corpus(tokenizer).values() for row in shape]
    rows += [{"chosen": "ab", "rejected": "abc"}, {"chosen": "x y", "rejected": "x z"}]
    for row in rows:
        assert trl_rows.is_conversational(row) == data_utils.is_conversational(row), row
        if isinstance(row.get("chosen"), (str, list)) and "rejected" in row:
            pair = {"chosen": row["chosen"], "rejected": row["rejected"]}
            assert trl_rows.extract_prompt(pair) == data_utils.extract_prompt(pair), row

"""`advisor plan` through its public surface: the JSON contract, bad input, random flags."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from advisor.cli import main
from planner.errors import InputError
from planner.specs import COMPONENTS


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def plan_json(capsys, *argv: str) -> dict:
    code, out, err = run_cli(capsys, "plan", *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_json_has_the_design_contract_keys(capsys):
    plan = plan_json(capsys, "--model", "7b")
    assert plan["model"] == {**plan["model"], "name": "Llama-2-7B", "params": 6_738_415_616}
    assert plan["method"] == "dpo" and plan["tuning"] == "lora"
    assert plan["gpu"]["name"] == "A100-80GB" and plan["gpu"]["count"] == 1
    assert plan["gpu"]["memory_gib"] == pytest.approx(80.0)
    memory = plan["memory"]
    assert set(COMPONENTS) <= set(memory["components_gib"])
    assert memory["per_gpu_peak_gib"] > 0
    assert set(memory["live_at_peak"]) <= set(COMPONENTS)
    assert plan["time"]["step_seconds"] > 0 and plan["time"]["tokens_per_second"] > 0
    assert plan["time"]["total_hours"] is None
    assert plan["fits"] is True
    assert isinstance(plan["suggestions"], list)


def test_components_live_at_peak_cover_the_tensor_peak(capsys):
    for method in ("sft", "dpo", "ppo", "grpo", "kto", "reward"):
        plan = plan_json(capsys, "--model", "7b", "--method", method, "--tuning", "full")
        memory = plan["memory"]
        live = sum(memory["components_gib"][c] for c in memory["live_at_peak"])
        assert live >= memory["per_gpu_peak_gib"] - 0.05, method


def test_a_rollout_generation_peak_lists_the_kv_cache_and_logits_live(capsys):
    plan = plan_json(
        capsys,
        "--model",
        "7b",
        "--method",
        "grpo",
        "--prompt-len",
        "512",
        "--completion-len",
        "4096",
        "--batch-size",
        "8",
        "--grad-accum",
        "8",
    )
    memory = plan["memory"]
    assert memory["peak_phase"] == "rollout generation"
    assert {"generation_kv_cache", "logits"} <= set(memory["live_at_peak"])
    live = sum(memory["components_gib"][c] for c in memory["live_at_peak"])
    assert live >= memory["per_gpu_peak_gib"] - 0.05


def test_samples_and_epochs_give_total_hours(capsys):
    plan = plan_json(capsys, "--model", "7b", "--samples", "10000", "--epochs", "2")
    steps = plan["time"]["total_steps"]
    assert steps == 10000 * 2 // 8  # batch 1 × grad-accum 8 × 1 GPU
    assert plan["time"]["total_hours"] == pytest.approx(
        steps * plan["time"]["step_seconds"] / 3600, rel=0.01
    )


@pytest.mark.parametrize("samples", ["8", "1300"])  # one step (under a second); about 40 s
def test_a_short_run_total_is_shown_in_seconds_not_rounded_to_zero(capsys, monkeypatch, samples):
    argv = ["--model", "qwen2.5-0.5b", "--gpu", "h100", "--samples", samples]
    time = plan_json(capsys, *argv)["time"]
    seconds = time["total_steps"] * time["step_seconds"]
    assert time["total_hours"] * 3600 == pytest.approx(seconds, rel=0.01)
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_cli(capsys, "plan", *argv)
    assert code == 0 and "≈ 0.00 s" not in out
    shown = re.search(r"≈ ([0-9.]+) s\b", out)
    assert shown and float(shown.group(1)) == pytest.approx(seconds, rel=0.01)


def test_dataset_file_rows_are_counted(capsys, tmp_path):
    data = tmp_path / "prefs.jsonl"
    rows = [{"prompt": "hi " * 50, "chosen": "yes " * 80, "rejected": "no " * 80}] * 40
    data.write_text("\n".join(json.dumps(r) for r in rows))
    plan = plan_json(capsys, "--model", "7b", "--dataset", str(data))
    assert plan["time"]["samples"] == 40
    assert plan["time"]["total_steps"] == 5


def test_fit_prints_the_fastest_plan_that_fits(capsys, monkeypatch):
    # No GPU here (a GPU box would set the search range): up to 4 nodes of 8 GPUs.
    nvml = Path(__file__).parent / "fixtures" / "nvml" / "no-driver.json"
    monkeypatch.setenv("ADVISOR_FAKE_NVML", str(nvml))
    code, out, err = run_cli(
        capsys,
        "plan",
        "--model",
        "7b",
        "--method",
        "dpo",
        "--tuning",
        "full",
        "--gpu",
        "rtx-4090",
        "--fit",
        "--json",
    )
    assert code == 0, err
    plans = json.loads(out)
    assert plans and all(p["fits"] for p in plans)
    assert plans[0]["memory"]["per_gpu_peak_gib"] <= plans[0]["memory"]["capacity_gib"]
    # The requested tuning mode is kept when something fits with it.
    assert plans[0]["tuning"] == "full"
    # The default objective is time: no runner-up is faster than the winner.
    assert all(
        plans[0]["time"]["step_seconds"] <= p["time"]["step_seconds"]
        for p in plans
        if p["tuning"] == "full"
    )


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--model", "lama-2-7b"], "did you mean"),
        (["--model", "7b", "--gpu", "a100-81gb"], "unknown GPU"),
        (["--model", "7b", "--batch-size", "0"], "--batch-size"),
        (["--model", "7b", "--seq-len", "-5"], "--seq-len"),
        (["--model", "7b", "--grad-accum", "0"], "--grad-accum"),
        (["--model", "7b", "--offload", "optimizer"], "offload"),
        (["--model", "7b", "--method", "grpo", "--num-generations", "3"], "divisible"),
        (["--model", "7b", "--method", "teleport"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_status_2(capsys, argv, needle):
    code, _, err = run_cli(capsys, "plan", *argv)
    assert code == 2
    assert needle in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unreadable_config_json_is_status_2(capsys, tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    code, _, err = run_cli(capsys, "plan", "--model", str(bad))
    assert code == 2 and str(bad) in err


def test_sequence_past_max_positions_warns(capsys):
    plan = plan_json(capsys, "--model", "llama-2-7b", "--seq-len", "8192")
    assert any("max_position_embeddings" in w for w in plan["warnings"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seq-len", "2000000"], "--seq-len: at most 1,048,576 tokens"),
        (["--prompt-len", "2000000"], "--prompt-len: at most 1,048,576 tokens"),
        (["--batch-size", str(10**300)], "--batch-size: at most 65,536 rows per GPU"),
        (["--grad-accum", "100000"], "--grad-accum: at most 65,536 micro-batches per step"),
        (["--num-gpus", "2048"], "--num-gpus: at most 1,024 GPUs per node"),
        (["--nodes", "20000"], "--nodes: at most 16,384 nodes"),
        (["--lora-rank", "100000"], "--lora-rank: at most 65,536"),
        (["--num-generations", "5000"], "--num-generations: at most 4,096 completions per prompt"),
        (["--ppo-epochs", "1001"], "--ppo-epochs: at most 1,000 epochs"),
        (["--samples", str(10**13)], "--samples: at most 1,000,000,000,000 rows"),
        (["--epochs", "1e200"], "--epochs: at most 1,000 epochs"),
        (["--epochs", "inf"], "--epochs: input should be a finite number"),
        (["--epochs", "nan"], "--epochs: input should be a finite number"),
        (["--beta", "inf"], "--beta: input should be a finite number"),
        (["--beta", "1001"], "--beta: at most 1,000"),
        (["--beta", "-1"], "--beta: input should be greater than or equal to 0"),
    ],
)
def test_a_number_past_its_ceiling_names_the_flag_and_the_ceiling(capsys, argv, message):
    code, out, err = run_cli(capsys, "plan", *argv, "--json")
    assert code == 2 and out == ""
    assert err == f"advisor: error: {message}\n"


def test_the_ceilings_themselves_give_finite_estimates(capsys):
    plan = plan_json(
        capsys,
        *("--method", "grpo", "--tuning", "full", "--prompt-len", "1048575"),
        *("--completion-len", "1", "--batch-size", "65536", "--grad-accum", "65536"),
        *("--num-gpus", "1024", "--nodes", "16384", "--num-generations", "4096"),
        *("--samples", str(10**12), "--epochs", "1000", "--attention", "eager"),
    )
    assert plan["fits"] is False and plan["memory"]["headroom_gib"] < 0
    assert 0 < plan["time"]["total_hours"] < float("inf")


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("x" * 300, "unknown model 'xxx"),
        ("x" * 5000, "5,000 characters; a model name or path has at most 4,096"),
        ("~nosuchuser/x", "model ~nosuchuser/x: no such user's home folder"),
        ("a\x00b", "model a?b: holds a control character"),
        ("line\nbreak", "model line?break: holds a control character"),
        ("/dev/zero", "model config /dev/zero: not a regular file"),
    ],
)
def test_an_absurd_model_is_one_line_and_status_2(capsys, model, message):
    code, _, err = run_cli(capsys, "plan", "--model", model)
    assert code == 2 and message in err
    assert len(err.splitlines()) == 1 and len(err) < 400


def test_list_models_and_gpus_print_json_with_the_tables_fields(capsys):
    from planner.gpus import list_gpus
    from planner.models import list_models

    code, out, _ = run_cli(capsys, "plan", "--list-models", "--json")
    models = json.loads(out)
    assert code == 0 and len(models) == len(list_models())
    assert set(models[0]) == {
        "name", "params", "num_layers", "hidden_size", "num_heads", "num_kv_heads", "vocab_size"
    }  # fmt: skip
    llama = next(m for m in models if m["name"] == "Llama-2-7B")
    assert llama["params"] == 6_738_415_616 and llama["num_layers"] == 32
    code, out, _ = run_cli(capsys, "plan", "--list-gpus", "--json")
    gpus = json.loads(out)
    assert code == 0 and len(gpus) == len(list_gpus())
    a100 = next(g for g in gpus if g["name"] == "A100-80GB")
    assert a100["memory_gib"] == pytest.approx(80.0) and a100["bf16_tflops"] > 0
    assert {"hbm_gbps", "interconnect_gbps", "supports_bf16", "fp16_tflops"} <= set(a100)


def test_unknown_command_is_status_2(capsys):
    code, _, err = run_cli(capsys, "plna")
    assert code == 2 and "unknown command" in err


FLAG_VALUES = {
    "--model": st.sampled_from(
        ["7b", "0.5b", "qwen2.5-7b", "gemma-2-9b", "mixtral-8x7b", "nope", "", "70b"]
    ),
    "--method": st.sampled_from(
        ["sft", "dpo", "ppo", "grpo", "rloo", "kto", "orpo", "simpo", "reward", "x"]
    ),
    "--tuning": st.sampled_from(["full", "lora", "qlora", "half"]),
    "--seq-len": st.integers(-10, 200_000).map(str),
    "--batch-size": st.integers(-2, 64).map(str),
    "--grad-accum": st.integers(-1, 64).map(str),
    "--num-gpus": st.integers(-1, 16).map(str),
    "--nodes": st.integers(0, 4).map(str),
    "--sharding": st.sampled_from(["none", "ddp", "zero1", "zero2", "zero3", "fsdp", "zero4"]),
    "--offload": st.sampled_from(["none", "optimizer", "optimizer+params"]),
    "--gpu": st.sampled_from(["a100-80gb", "h100", "t4", "rtx-4090", "tpu"]),
    "--precision": st.sampled_from(["bf16", "fp16", "fp32"]),
    "--optimizer": st.sampled_from(["adamw", "adamw8bit", "paged_adamw8bit", "sgd"]),
    "--lora-rank": st.integers(-1, 512).map(str),
    "--num-generations": st.integers(0, 16).map(str),
    "--samples": st.integers(-1, 10**7).map(str),
    "--seq-len ": st.text(max_size=5).map(lambda s: s or "x"),
}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.dictionaries(st.sampled_from(sorted(FLAG_VALUES)), st.none(), max_size=8).flatmap(
        lambda keys: st.fixed_dictionaries({k: FLAG_VALUES[k] for k in keys})
    ),
    st.booleans(),
)
def test_random_flags_never_traceback(capsys, flags, as_json):
    argv = ["plan"]
    for flag, value in flags.items():
        argv += [flag.strip(), value]
    if as_json:
        argv.append("--json")
    code, out, err = run_cli(capsys, *argv)
    assert code in (0, 2), (argv, err)
    assert "Traceback" not in err
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err
    elif as_json:
        assert json.loads(out)["memory"]["per_gpu_peak_gib"] > 0


def test_trace_says_on_stderr_that_it_is_tracing_before_it_starts(capsys, monkeypatch):
    import planner.trace

    def trace_step(*_args, **_kwargs):
        assert "tracing one step on fake tensors" in capsys.readouterr().err  # already shown
        raise InputError("stop here")

    monkeypatch.setattr(planner.trace, "trace_step", trace_step)
    code, out, err = run_cli(capsys, "plan", "--model", "7b", "--trace", "--json")
    assert code == 2 and out == ""  # nothing on the JSON stdout
    assert "stop here" in err


def test_a_seq_len_that_disagrees_with_prompt_plus_completion_is_refused(capsys):
    argv = ["--seq-len", "1024", "--prompt-len", "256", "--completion-len", "512"]
    code, out, err = run_cli(capsys, "plan", *argv)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "--seq-len 1024" in err and "768" in err


@pytest.mark.parametrize(
    ("argv", "lengths"),
    [
        (["--seq-len", "768", "--prompt-len", "256", "--completion-len", "512"], (768, 256, 512)),
        (["--prompt-len", "256", "--completion-len", "512"], (768, 256, 512)),
        (["--seq-len", "2048", "--prompt-len", "512"], (2048, 512, None)),
    ],
)
def test_lengths_that_agree_plan_the_sum(capsys, argv, lengths):
    request = plan_json(capsys, "--method", "grpo", *argv)["request"]
    assert (request["seq_len"], request["prompt_len"], request["completion_len"]) == lengths

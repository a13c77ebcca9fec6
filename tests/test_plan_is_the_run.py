"""The plan is the run: every quantity the planner assumed is what the written configs say.

For every method × tuning × precision × sharding (none, ddp, zero2, zero3, zero3 + offload,
fsdp), `launch(..., dry_run=True)` writes the run folder for a GPU; the test parses the written
TRL YAML, runspec (the TRL config the trainer gets, DeepSpeed config included) and accelerate
config, and checks them against the plan saved beside them: load dtype, autocast, master weights
and optimizer-state dtype, per-device batch and accumulation, generation chunk, generations per
prompt, reference model present or precomputed, checkpointing, ZeRO stage, offload targets and
the reduction bucket the memory model counted. A changed default in a recipe changes both the
plan and the written configs (the last tests edit one and check both).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import pytest
import yaml

from planner import deepspeed, recipes, trl_defaults
from planner.memory import estimate_memory, generation_batch, model_states
from planner.methods import loop
from planner.models import resolve_model
from planner.specs import Method, Plan, PlanRequest
from runners.launch import LaunchOptions, launch
from runners.tiny import write_demo_dataset

SHARDINGS = {
    "none": dict(num_gpus=1, sharding="none"),
    "ddp": dict(num_gpus=2, sharding="ddp"),
    "zero2": dict(num_gpus=2, sharding="zero2"),
    "zero3": dict(num_gpus=2, sharding="zero3"),
    "zero3+offload": dict(num_gpus=2, sharding="zero3", offload="optimizer+params"),
    "fsdp": dict(num_gpus=2, sharding="fsdp"),
}
PRECISIONS = ("bf16-mixed", "bf16-true", "fp16-mixed", "fp32")
TUNINGS = ("full", "lora", "qlora")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[Method, str]:
    folder = tmp_path_factory.mktemp("data")
    return {m: str(write_demo_dataset(m, folder)) for m in Method}


def dry_run(tmp_path: Path, model: Path, dataset: str, **settings) -> Path:
    base = dict(gpu="a100-80gb", seq_len=256, batch_size=2, grad_accum=4)
    request = PlanRequest(model=str(model), dataset=dataset, **(base | settings))
    run = launch(
        request,
        LaunchOptions(output=tmp_path, dry_run=True, device="cuda", force=True, quiet=True),
        console=_quiet_console(),
    )
    return run.run_dir


def _quiet_console():
    from rich.console import Console

    return Console(file=open("/dev/null", "w"), highlight=False)


def written(run_dir: Path) -> dict:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    runspec = json.loads((run_dir / "runspec.json").read_text())
    accelerate = yaml.safe_load((run_dir / "accelerate.yaml").read_text())
    trl_yaml = next(run_dir.glob("trl_*.yaml"), None)
    return {
        "plan": Plan.model_validate(manifest["plan"]),
        "runspec": runspec,
        "accelerate": accelerate,
        "trl_cli": yaml.safe_load(trl_yaml.read_text()) if trl_yaml else None,
    }


def check_agreement(files: dict) -> None:
    plan: Plan = files["plan"]
    request = plan.request
    spec = files["runspec"]
    trl = spec["trl_config"]
    acc = files["accelerate"]
    precision = plan.precision
    recipe = recipes.recipe(request.method)

    # Precision: what loads, what autocasts, what the optimizer keeps.
    assert spec["precision"]["load_dtype"] == precision.load_dtype
    if files["trl_cli"] is not None:
        assert files["trl_cli"]["dtype"] == precision.load_dtype
    if recipe.reference != "never" and recipe.reference_from_init_kwargs:
        assert trl["model_init_kwargs"]["dtype"] == precision.load_dtype  # TRL's reference
    half = request.precision.half
    assert trl["bf16"] is (half == "bf16") and trl["fp16"] is (half == "fp16")
    ds = trl.get("deepspeed")
    # Under DeepSpeed the precision is the DeepSpeed config's alone (checked below).
    assert acc.get("mixed_precision", half or "no") == (half or "no")
    if ds is not None:
        assert ds["bf16"]["enabled"] is (half == "bf16")
        assert ds["fp16"]["enabled"] is (half == "fp16")
        assert precision.master_weights and precision.autocast is None
        if half:
            assert (precision.weight_bytes, precision.gradient_bytes) == (2, 2)
            assert precision.optimizer_bytes == 12  # fp32 master + two fp32 moments
    else:
        assert precision.autocast == (
            half
            if half and (precision.load_dtype == "float32" or request.tuning.value != "full")
            else precision.autocast
        )
        fp32_states = precision.load_dtype == "float32" or request.tuning.value != "full"
        fsdp = acc["distributed_type"] == "FSDP"
        expected = "float32" if fp32_states or fsdp else "bfloat16"
        assert precision.optimizer_state_dtype == expected
    if request.tuning.value == "full" and precision.load_dtype == "bfloat16" and not ds:
        assert request.precision.value == "bf16-true"

    # Batch and accumulation.
    assert trl["per_device_train_batch_size"] == request.batch_size
    assert trl["gradient_accumulation_steps"] == request.grad_accum
    assert spec["num_processes"] == request.world_size

    # Generation.
    if recipe.num_generations is not None:
        assert trl["num_generations"] == request.num_generations
        assert "generation_batch_size" not in trl and "steps_per_generation" not in trl
    if recipe.generates:
        chunk = generation_batch(request, loop(request))
        if request.method is Method.ppo:
            assert trl["local_rollout_forward_batch_size"] == chunk
        else:  # TRL's steps_per_generation defaults to gradient_accumulation_steps
            assert chunk == trl["per_device_train_batch_size"] * trl["gradient_accumulation_steps"]

    # Reference model.
    breakdown = estimate_memory(resolve_model(request.model), request)  # exact bytes
    has_reference = breakdown.components["reference_model"] > 0
    if recipe.kl is not None:
        assert trl[recipe.kl.name] == recipe.kl_value(request)
    if recipe.precomputable_reference:
        assert trl["precompute_ref_log_probs"] is request.precompute_ref_log_probs
    expects_copy = recipe.loads_reference(request) and spec["peft"] is None
    assert has_reference is expects_copy
    if recipe.loads_reference(request) and spec["peft"] is not None:
        assert loop(request).reference == "adapter-disabled"

    # Checkpointing.
    if acc["distributed_type"] == "FSDP":
        assert acc["fsdp_config"]["fsdp_activation_checkpointing"] is request.grad_checkpointing
    else:
        assert trl["gradient_checkpointing"] is request.grad_checkpointing

    # Sharding: ZeRO stage, offload targets, buckets.
    stage = deepspeed.zero_stage(request)
    if stage is None:
        assert ds is None and acc["distributed_type"] != "DEEPSPEED"
        assert breakdown.cpu_offload == 0
        return
    zero = ds["zero_optimization"]
    assert zero["stage"] == stage and acc["distributed_type"] == "DEEPSPEED"
    # accelerate takes the ZeRO settings from the TRL config alone: its DeepSpeed plugin refuses
    # an accelerate config that repeats them (the launcher passes the config's DeepSpeed keys).
    assert acc["deepspeed_config"]["zero3_init_flag"] is (stage == 3)
    assert set(acc["deepspeed_config"]) == {"deepspeed_multinode_launcher", "zero3_init_flag"}
    assert "mixed_precision" not in acc
    optimizer_target, param_target = deepspeed.offload_targets(request)
    assert zero["offload_optimizer"]["device"] == optimizer_target
    if stage == 3:
        assert zero["offload_param"]["device"] == param_target
    assert (breakdown.cpu_offload > 0) is (optimizer_target == "cpu")
    element = 2 if half else 4
    buffers = 2 if zero["overlap_comm"] and stage < 3 else 1
    counted = model_states(resolve_model(request.model), request).buckets
    assert counted == buffers * zero["reduce_bucket_size"] * element


COMBOS = list(itertools.product(Method, SHARDINGS))


@pytest.mark.parametrize(("method", "sharding"), COMBOS, ids=[f"{m.value}-{s}" for m, s in COMBOS])
def test_written_configs_hold_what_the_plan_assumed(
    tmp_path, tiny_model, datasets, method, sharding
):
    """Every tuning × precision for one method and sharding (QLoRA needs bitsandbytes)."""
    import importlib.util

    tunings = [t for t in TUNINGS if t != "qlora" or importlib.util.find_spec("bitsandbytes")]
    for tuning, precision in itertools.product(tunings, PRECISIONS):
        settings = dict(method=method.value, tuning=tuning, precision=precision)
        settings |= SHARDINGS[sharding]
        run_dir = dry_run(
            tmp_path / f"{tuning}-{precision}", tiny_model, datasets[method], **settings
        )
        try:
            check_agreement(written(run_dir))
        except AssertionError as error:
            raise AssertionError(f"{settings}: {error}") from error


def test_precomputed_reference_is_written_and_planned(tmp_path, tiny_model, datasets):
    run_dir = dry_run(
        tmp_path,
        tiny_model,
        datasets[Method.dpo],
        method="dpo",
        tuning="full",
        precompute_ref_log_probs=True,
    )
    files = written(run_dir)
    check_agreement(files)
    assert files["runspec"]["trl_config"]["precompute_ref_log_probs"] is True
    assert exact(files, "reference_model") == 0


# ----------------------------------------------------------------- a recipe edit moves both


def exact(files: dict, component: str) -> float:
    """A component's bytes as the plan counted them (the JSON rounds a tiny model's to 0)."""
    request = files["plan"].request
    return estimate_memory(resolve_model(request.model), request).components[component]


def _edit(monkeypatch, method: Method, **changes) -> None:
    edited = dataclasses.replace(recipes.RECIPES[method], **changes)
    monkeypatch.setitem(recipes.RECIPES, method, edited)


def test_a_changed_kl_default_changes_the_plan_and_the_written_config(
    monkeypatch, tmp_path, tiny_model, datasets
):
    before = written(
        dry_run(tmp_path / "a", tiny_model, datasets[Method.grpo], method="grpo", tuning="full")
    )
    assert before["runspec"]["trl_config"]["beta"] == 0.0
    assert exact(before, "reference_model") == 0
    _edit(monkeypatch, Method.grpo, kl=recipes.Knob("beta", 0.04, "edited"))
    after = written(
        dry_run(tmp_path / "b", tiny_model, datasets[Method.grpo], method="grpo", tuning="full")
    )
    assert after["runspec"]["trl_config"]["beta"] == 0.04
    assert exact(after, "reference_model") > 0
    check_agreement(after)


def test_a_changed_rollout_chunk_changes_the_plan_and_the_written_config(
    monkeypatch, tmp_path, tiny_model, datasets
):
    settings = dict(method="ppo", tuning="full", batch_size=4, grad_accum=8)
    before = written(dry_run(tmp_path / "a", tiny_model, datasets[Method.ppo], **settings))
    assert before["runspec"]["trl_config"]["local_rollout_forward_batch_size"] == 32
    kv = "generation_kv_cache"
    kv_before = exact(before, kv)
    _edit(monkeypatch, Method.ppo, rollout_chunk=8)
    after = written(dry_run(tmp_path / "b", tiny_model, datasets[Method.ppo], **settings))
    assert after["runspec"]["trl_config"]["local_rollout_forward_batch_size"] == 8
    assert exact(after, kv) == kv_before / 4
    check_agreement(after)


def test_a_changed_generation_count_changes_the_plan_and_the_written_config(
    monkeypatch, tmp_path, tiny_model, datasets
):
    # The recipe reads the count from planner.trl_defaults, where the request reads it too.
    monkeypatch.setitem(trl_defaults.NUM_GENERATIONS, Method.rloo.value, 4)
    assert recipes.recipe(Method.rloo).num_generations == 4
    files = written(dry_run(tmp_path, tiny_model, datasets[Method.rloo], method="rloo"))
    assert files["plan"].request.num_generations == 4
    assert files["runspec"]["trl_config"]["num_generations"] == 4
    check_agreement(files)

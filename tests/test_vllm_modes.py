"""GRPO / RLOO with vLLM (`--generation vllm-colocate | vllm-server`): the plan's memory and GPUs,
the TRL fields and `vllm_server.sh` written from the same request, the refusals. vLLM does not
run here: TRL's own parsers check the written config (tests/test_runners_settings.py)."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from planner.constants import GIB
from planner.errors import InputError
from planner.memory import estimate_memory
from planner.models import resolve_model
from planner.parameters import count_params
from planner.plan import estimate
from planner.specs import Plan, PlanRequest
from planner.trl_defaults import VLLM_GPU_MEMORY_UTILIZATION, VLLM_SERVE_GPU_MEMORY_UTILIZATION
from runners.run_folder import write_run_folder
from runners.settings import build_run_spec, vllm_problem, vllm_server_script
from tests.test_plan_cli import run_cli

GRPO_7B = dict(model="7b", method="grpo", tuning="full", seq_len=2048, batch_size=8, grad_accum=4)
GRPO_7B |= dict(num_gpus=4, sharding="zero2")


def _spec(device="cuda", **settings):
    return build_run_spec(
        PlanRequest(**(GRPO_7B | settings)),
        model_path="/models/my model",
        dataset="/data/train.jsonl",
        output_dir="/runs/x/checkpoints",
        device=device,
    )


def _server_command(script: str) -> list[str]:
    """The `trl vllm-serve` arguments of a vllm_server.sh."""
    line = next(line for line in script.splitlines() if line.startswith("exec "))
    return shlex.split(line)[1:]


# ----------------------------------------------------------------------------- the flags


@pytest.mark.parametrize(
    "flags",
    [
        ("--method", "dpo", "--generation", "vllm-colocate"),
        ("--method", "ppo", "--generation", "vllm-server"),
        ("--method", "grpo", "--vllm-memory", "0.5"),
        ("--method", "rloo", "--generation", "vllm-colocate", "--vllm-server-gpus", "2"),
        ("--method", "grpo", "--generation", "vllm-colocate", "--vllm-memory", "1.5"),
        ("--method", "grpo", "--generation", "vllm-server", "--vllm-server-gpus", "3"),
    ],
    ids=["dpo", "ppo", "share-without-colocate", "gpus-without-server", "share-over-1", "tp-3"],
)
def test_vllm_flags_outside_their_mode_are_one_line_errors(capsys, flags):
    code, out, err = run_cli(capsys, "plan", *flags)
    assert code == 2 and not out
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


# ----------------------------------------------------------------------------- memory


def test_colocated_engine_takes_its_share_of_every_training_gpu():
    spec = resolve_model("7b")
    hf = estimate_memory(spec, PlanRequest(**GRPO_7B))
    request = PlanRequest(**GRPO_7B, generation="vllm-colocate", vllm_memory=0.4)
    colocated = estimate_memory(spec, request, capacity=80 * GIB)
    engine = 0.4 * 80 * GIB
    assert colocated.components["vllm_engine"] == engine
    assert hf.components["generation_kv_cache"] > 0 and hf.components["vllm_engine"] == 0
    assert colocated.components["generation_kv_cache"] == 0  # vLLM's cache is inside its share
    # The share is held in every phase: training itself is what it was without generate's cache.
    assert colocated.phases["forward / backward"] == hf.phases["forward / backward"] + engine
    assert "vllm_engine" in colocated.live_at_peak
    assert "rollout generation" not in colocated.phases


def test_colocated_plan_uses_trls_share_and_says_when_training_no_longer_fits(capsys):
    code, out, err = run_cli(capsys, "plan", *_flags(GRPO_7B), "--generation", "vllm-colocate",
                             "--json")  # fmt: skip
    assert code == 0, err
    plan = json.loads(out)
    assert plan["memory"]["components_gib"]["vllm_engine"] == pytest.approx(
        VLLM_GPU_MEMORY_UTILIZATION * 80
    )
    assert plan["generation"]["mode"] == "vllm-colocate" and plan["generation"]["fits"]
    assert plan["gpu"]["count"] == 4 and plan["gpu"]["vllm_server"] == 0

    crowded = estimate(PlanRequest(**GRPO_7B, generation="vllm-colocate", vllm_memory=0.9))
    assert not crowded.fits
    assert any("training alone would fit" in w for w in crowded.warnings)


def test_server_gpus_hold_the_weights_and_kv_cache_and_count_in_the_run():
    plan = estimate(PlanRequest(**GRPO_7B, generation="vllm-server", vllm_server_gpus=2))
    memory = plan.memory.components_gib
    assert memory["generation_kv_cache"] == 0 and memory["vllm_engine"] == 0
    assert (plan.gpu.count, plan.gpu.vllm_server, plan.gpu.per_node) == (6, 2, 4)
    server = plan.generation
    params = count_params(resolve_model("7b"))
    assert server.tensor_parallel == server.gpus == 2
    assert server.weights_gib == pytest.approx(params * 2 / 2 / GIB, abs=0.01)
    assert server.engine_gib == pytest.approx(VLLM_SERVE_GPU_MEMORY_UTILIZATION * 80)
    assert server.kv_cache_gib == pytest.approx(server.engine_gib - server.weights_gib, abs=0.02)
    assert server.generation_batch == 8 * 4 * 4  # every process's prompts go to the server
    assert 1 <= server.sequences_at_once <= server.generation_batch and plan.fits


def test_a_server_too_small_for_the_weights_does_not_fit():
    request = PlanRequest(model="70b", method="rloo", generation="vllm-server", num_gpus=8,
                          sharding="zero3")  # fmt: skip
    plan = estimate(request)
    assert not plan.generation.fits and not plan.fits
    assert any("weights" in w and "do not fit" in w for w in plan.warnings)
    two = estimate(request.model_copy(update={"vllm_server_gpus": 2}))
    assert two.generation.fits and two.generation.weights_gib < plan.generation.weights_gib


def test_vllm_rollouts_are_timed_in_the_waves_their_kv_cache_allows():
    roomy = estimate(PlanRequest(**GRPO_7B, generation="vllm-colocate", vllm_memory=0.5))
    tight = estimate(PlanRequest(**GRPO_7B, generation="vllm-colocate", vllm_memory=0.2))
    assert tight.generation.sequences_at_once < roomy.generation.sequences_at_once
    phase = "rollout generation (vLLM)"
    assert tight.time.phases_seconds[phase] > roomy.time.phases_seconds[phase]
    assert "weight sync to vLLM" in roomy.time.phases_seconds
    assert any("speed-up over generate is not assumed" in a for a in roomy.assumptions)


def test_a_plan_saved_before_the_vllm_engine_component_still_loads():
    saved = json.loads(estimate(PlanRequest(model="7b")).model_dump_json())
    del saved["memory"]["components_gib"]["vllm_engine"]
    del saved["generation"]
    assert Plan.model_validate(saved).memory.components_gib["vllm_engine"] == 0


# ----------------------------------------------------------------------------- written config


def test_written_vllm_fields_are_what_the_plan_assumed(tmp_path):
    """Plan ↔ config agreement: share, context length, server GPUs and where it listens."""
    colocated = _spec(generation="vllm-colocate", vllm_memory=0.4)
    plan = estimate(colocated.request)
    trl = colocated.trl_config
    assert (trl["use_vllm"], trl["vllm_mode"]) == (True, "colocate")
    assert trl["vllm_gpu_memory_utilization"] * plan.gpu.memory_gib == pytest.approx(
        plan.memory.components_gib["vllm_engine"]
    )
    assert trl["vllm_max_model_length"] == plan.generation.sequence_tokens == 2048
    assert trl["vllm_tensor_parallel_size"] == plan.generation.tensor_parallel == 1
    assert vllm_server_script(colocated) is None

    served = _spec(generation="vllm-server", vllm_server_gpus=2, method="rloo")
    plan = estimate(served.request)
    trl = served.trl_config
    assert (trl["use_vllm"], trl["vllm_mode"]) == (True, "server")
    assert "vllm_gpu_memory_utilization" not in trl  # the server takes its own share
    assert served.num_processes == plan.gpu.count - plan.gpu.vllm_server == 4
    script = vllm_server_script(served)
    args = _server_command(script)
    assert args[:3] == ["trl", "vllm-serve", "--model"] and args[3] == "/models/my model"
    value = dict(zip(args[4::2], args[5::2], strict=True))
    assert int(value["--tensor-parallel-size"]) == plan.generation.tensor_parallel == 2
    assert int(value["--max-model-len"]) == plan.generation.sequence_tokens
    assert float(value["--gpu-memory-utilization"]) * 80 == pytest.approx(
        plan.generation.engine_gib
    )
    assert (value["--host"], int(value["--port"])) == (
        trl["vllm_server_host"],
        trl["vllm_server_port"],
    )
    assert 'CUDA_VISIBLE_DEVICES="${VLLM_GPUS:-4,5}"' in script  # after the 4 training GPUs
    write_run_folder(tmp_path, served, served.request)
    written = tmp_path / "vllm_server.sh"
    assert written.read_text() == script and os.access(written, os.X_OK)
    write_run_folder(tmp_path / "colocated", colocated, colocated.request)
    assert not (tmp_path / "colocated" / "vllm_server.sh").exists()


def test_hf_generation_writes_use_vllm_false_and_other_methods_nothing():
    assert _spec().trl_config["use_vllm"] is False
    dpo = _spec(method="dpo", num_gpus=1, sharding="none")
    assert not any(key.startswith(("use_vllm", "vllm_")) for key in dpo.trl_config)
    assert vllm_server_script(_spec()) is None


def test_a_vllm_launch_is_refused_without_vllm_or_a_gpu(monkeypatch):
    import importlib.util

    from runners.launch import check_runnable_here

    real = importlib.util.find_spec
    installed = {"vllm": None}
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: installed[name] if name in installed else real(name, *a),
    )
    served = _spec(generation="vllm-server", sharding="ddp")
    with pytest.raises(InputError, match=r"pip install 'alignment-advisor\[vllm\]'"):
        check_runnable_here(served)
    installed["vllm"] = object()
    check_runnable_here(served)
    assert vllm_problem(_spec()) is None  # transformers' generate needs no vLLM
    on_cpu = _spec(device="cpu", generation="vllm-colocate")
    assert "CUDA" in vllm_problem(on_cpu)


def _flags(settings: dict) -> list[str]:
    return [part for k, v in settings.items() for part in ("--" + k.replace("_", "-"), str(v))]


def test_launch_flags_carry_the_mode_into_the_run_folder(tiny_model, tmp_path, capsys):
    """`advisor launch --generation ... --dry-run`: the manifest's plan and the written TRL
    config come from one request (and hold everything else the agreement test checks)."""
    from runners.tiny import write_demo_dataset
    from tests.test_plan_is_the_run import check_agreement, written

    dataset = write_demo_dataset("rloo", tmp_path / "data")
    code, out, err = run_cli(
        capsys, "launch", "--method", "rloo", "--model", str(tiny_model), "--dataset",
        str(dataset), "--seq-len", "64", "--batch-size", "2", "--grad-accum", "1",
        "--num-gpus", "2", "--generation", "vllm-server", "--vllm-server-gpus", "2",
        "--output", str(tmp_path / "runs"), "--device", "cuda", "--dry-run", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    files = written(Path(out.strip().splitlines()[-1]))
    check_agreement(files)
    plan, trl = files["plan"], files["runspec"]["trl_config"]
    assert plan.request.generation.value == "vllm-server" and plan.gpu.vllm_server == 2
    assert (trl["use_vllm"], trl["vllm_mode"]) == (True, "server")
    assert files["trl_cli"]["vllm_mode"] == "server"

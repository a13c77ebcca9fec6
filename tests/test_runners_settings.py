"""RunSpec generation: per-method TRL fields, precision per device, PEFT, QLoRA, launch configs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from planner.errors import InputError
from planner.specs import Method, PlanRequest
from runners.run_folder import write_run_folder
from runners.settings import (
    TRL_CLI_METHODS,
    RewardSource,
    accelerate_config,
    build_run_spec,
    deepspeed_problem,
    precision_fields,
    trl_cli_config,
    vllm_server_script,
)
from runners.tiny import ensure_model, write_demo_dataset

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return ensure_model(tmp_path_factory.getbasetemp() / "tiny-llama")


def _spec(method="dpo", device="cuda", supports_bf16=True, **request):
    fields = {"model": "llama-3-8b", "method": method, **request}
    return build_run_spec(
        PlanRequest(**fields),
        model_path="/models/llama",
        dataset="/data/train.jsonl",
        output_dir="/runs/x/checkpoints",
        device=device,
        supports_bf16=supports_bf16,
    )


def test_precision_is_bf16_on_ampere_fp16_on_t4_and_fp32_on_cpu():
    from planner.specs import Precision

    assert precision_fields(Precision.bf16_mixed, "cuda", True) == {"bf16": True, "fp16": False}
    assert precision_fields(Precision.bf16_mixed, "cuda", False) == {"bf16": False, "fp16": True}
    cpu = precision_fields(Precision.bf16_mixed, "cpu", True)
    assert cpu == {"use_cpu": True, "bf16": False, "fp16": False}


def test_plan_settings_become_trl_fields():
    spec = _spec(
        batch_size=4, grad_accum=16, grad_checkpointing=True, precompute_ref_log_probs=True
    )
    fields = spec.trl_config
    assert fields["per_device_train_batch_size"] == 4
    assert fields["gradient_accumulation_steps"] == 16
    assert fields["gradient_checkpointing"] is True
    assert fields["precompute_ref_log_probs"] is True
    assert fields["bf16"] is True
    assert spec.trainer == "trl:DPOTrainer"


def test_every_starting_value_has_a_reason():
    for method in Method:
        spec = _spec(method.value, batch_size=8, num_generations=8)
        names = {v.name for v in spec.starting_values}
        assert "learning_rate" in names
        assert all(v.reason for v in spec.starting_values)
    assert {"beta"} <= {v.name for v in _spec("dpo").starting_values}
    assert {"kl_coef"} <= {v.name for v in _spec("ppo").starting_values}


def test_lora_learning_rate_is_ten_times_full():
    full = _spec(tuning="full").trl_config["learning_rate"]
    lora = _spec(tuning="lora").trl_config["learning_rate"]
    assert lora == pytest.approx(10 * full)


def test_learning_rates_are_read_from_the_editable_profile(tmp_path, monkeypatch):
    """A team that edits profiles/constants.toml gets its learning rate in the written config,
    with the source it wrote, for every method."""
    import shutil

    from planner import constants
    from planner.paths import profiles_dir

    profiles = tmp_path / "profiles"
    shutil.copytree(profiles_dir(), profiles)
    path = profiles / "constants.toml"
    text = path.read_text()
    row = 'dpo = { full = 5e-7, lora = 5e-6, source = "DPO paper (Rafailov et al. 2023) '
    assert row in text
    text = text.replace(row, 'dpo = { full = 2e-7, lora = 3e-6, source = "our sweep" } #')
    path.write_text(text)
    monkeypatch.setenv("ADVISOR_PROFILES", str(profiles))
    constants.constants.cache_clear()
    try:
        spec = _spec("dpo", tuning="lora")
        assert spec.trl_config["learning_rate"] == 3e-6
        value = next(v for v in spec.starting_values if v.name == "learning_rate")
        assert value.reason.startswith("our sweep")
        assert _spec("dpo", tuning="full").trl_config["learning_rate"] == 2e-7
    finally:
        monkeypatch.delenv("ADVISOR_PROFILES")
        constants.constants.cache_clear()
    for method in Method:
        full, lora, source = constants.learning_rate(method.value)
        assert 0 < full < lora and source


def test_simpo_is_cpo_with_simpo_loss_and_no_bc_term():
    spec = _spec("simpo")
    assert spec.trainer == "trl.experimental.cpo:CPOTrainer"
    assert spec.trl_config["loss_type"] == "simpo"
    assert spec.trl_config["cpo_alpha"] == 0.0


def test_peft_targets_come_from_the_planner():
    assert _spec(lora_targets="qv").peft["target_modules"] == ["q_proj", "v_proj"]
    assert _spec(lora_targets="all-linear").peft["target_modules"] == "all-linear"
    assert _spec("reward").peft["task_type"] == "SEQ_CLS"
    assert _spec(tuning="full").peft is None


def test_qlora_without_bitsandbytes_is_a_clear_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name)
    )
    with pytest.raises(InputError, match=r"bitsandbytes.*\[qlora\]"):
        _spec(tuning="qlora")


def test_qlora_with_bitsandbytes_sets_nf4_and_sharded_storage(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "bitsandbytes" else real(name),
    )
    spec = _spec(tuning="qlora", sharding="fsdp", num_gpus=4)
    assert spec.quantization["bnb_4bit_quant_type"] == "nf4"
    assert spec.quantization["bnb_4bit_quant_storage"] == "bfloat16"


@pytest.mark.parametrize(
    ("sharding", "offload", "kind"),
    [
        ("none", "none", "MULTI_GPU"),
        ("ddp", "none", "MULTI_GPU"),
        ("zero1", "none", "DEEPSPEED"),
        ("zero2", "optimizer", "DEEPSPEED"),
        ("zero3", "optimizer+params", "DEEPSPEED"),
        ("fsdp", "none", "FSDP"),
    ],
)
def test_accelerate_config_per_sharding(sharding, offload, kind):
    request = PlanRequest(model="7b", sharding=sharding, offload=offload, num_gpus=8)
    config = accelerate_config(request, "cuda")
    assert config["distributed_type"] == kind
    assert config["num_processes"] == 8
    if kind == "DEEPSPEED":
        # The ZeRO settings live in the TRL config's `deepspeed` alone (accelerate refuses a
        # config that repeats them or names a mixed precision: the agreement test runs its check).
        assert config["deepspeed_config"] == {
            "deepspeed_multinode_launcher": "standard",
            "zero3_init_flag": sharding == "zero3",
        }
        assert "mixed_precision" not in config
        spec = build_run_spec(request, model_path="/m", dataset="/d.jsonl", output_dir="ck")
        zero = spec.trl_config["deepspeed"]["zero_optimization"]
        assert zero["stage"] == int(sharding[-1])
        assert zero["offload_optimizer"]["device"] == ("none" if offload == "none" else "cpu")
    if kind == "FSDP":
        assert config["fsdp_config"]["fsdp_version"] == 2


@pytest.mark.parametrize(
    "sharding, offload",
    [("zero1", "none"), ("zero2", "optimizer"), ("zero3", "none"), ("zero3", "optimizer+params")],
)
def test_deepspeed_and_accelerate_accept_the_written_deepspeed_config(
    sharding, offload, monkeypatch
):
    pytest.importorskip(
        "deepspeed",
        reason="DeepSpeed is the optional extra alignment-advisor[deepspeed]; its config class "
        "checks the written config wherever it installs",
    )
    from accelerate.utils import DeepSpeedPlugin

    request = PlanRequest(model="7b", sharding=sharding, offload=offload, num_gpus=8)
    spec = build_run_spec(request, model_path="/m", dataset="/d.jsonl", output_dir="ck")
    assert deepspeed_problem(spec) is None  # DeepSpeedConfig, with transformers' autos filled
    # accelerate's launcher hands the ranks the accelerate config's DeepSpeed keys (and the
    # mixed precision it names); the DeepSpeed plugin refuses any that repeat the DeepSpeed
    # config (accelerate/commands/launch.py `launch_command`, utils/dataclasses.py).
    fields = list(spec.accelerate["deepspeed_config"])
    fields += ["mixed_precision"] if "mixed_precision" in spec.accelerate else []
    monkeypatch.setenv("ACCELERATE_CONFIG_DS_FIELDS", ",".join(fields).lower())
    DeepSpeedPlugin._deepspeed_config_checks(None)
    monkeypatch.setenv("ACCELERATE_CONFIG_DS_FIELDS", "zero_stage,mixed_precision")
    with pytest.raises(ValueError, match="will be ignored"):  # what the old files did
        DeepSpeedPlugin._deepspeed_config_checks(None)
    broken = spec.model_copy(deep=True)
    broken.trl_config["deepspeed"]["zero_optimization"]["offload_param"] = {"device": "tape"}
    assert "DeepSpeed refuses" in deepspeed_problem(broken)


def test_single_gpu_and_cpu_configs():
    assert accelerate_config(PlanRequest(model="7b"), "cuda")["distributed_type"] == "NO"
    cpu = accelerate_config(PlanRequest(model="7b"), "cpu")
    assert cpu["use_cpu"] is True and cpu["distributed_type"] == "NO"
    # Several CPU processes start through torch's elastic agent, as on GPUs; the TRL config's
    # use_cpu puts the ranks on CPU with gloo.
    ddp = accelerate_config(PlanRequest(model="7b", num_gpus=2), "cpu")
    assert ddp["use_cpu"] is False and ddp["distributed_type"] == "MULTI_GPU"
    fsdp = accelerate_config(PlanRequest(model="7b", num_gpus=2, sharding="fsdp"), "cpu")
    assert fsdp["distributed_type"] == "FSDP" and fsdp["mixed_precision"] == "no"


def test_multi_node_has_machine_fields_and_a_slurm_script(tmp_path):
    request = PlanRequest(model="llama-3-8b", nodes=2, num_gpus=8, sharding="zero3")
    config = accelerate_config(request, "cuda")
    assert config["num_machines"] == 2 and config["num_processes"] == 16
    assert {"machine_rank", "main_process_ip", "main_process_port"} <= set(config)
    spec = build_run_spec(
        request, model_path="/m", dataset="/d.jsonl", output_dir=str(tmp_path / "ck")
    )
    write_run_folder(tmp_path, spec, request)
    script = (tmp_path / "slurm.sbatch").read_text()
    assert "#SBATCH --nodes=2" in script
    assert "#SBATCH --requeue" in script and "#SBATCH --signal=B:TERM@300" in script
    assert 'srun --kill-on-bad-exit=1 bash "$RUN_DIR/command.sh"' in script
    command = (tmp_path / "command.sh").read_text()
    assert "node_rank=${MACHINE_RANK:-${SLURM_NODEID:-0}}" in command
    assert f"master_addr=${{MASTER_ADDR:-{config['main_process_ip']}}}" in command
    assert '--machine_rank "$node_rank"' in command


def test_slurm_script_runs_command_sh_on_every_node(tmp_path):
    request = PlanRequest(model="llama-3-8b", nodes=2, num_gpus=8, sharding="zero3")
    spec = build_run_spec(request, model_path="/m", dataset="/d.jsonl", output_dir="checkpoints")
    write_run_folder(tmp_path, spec, request)
    sbatch = (tmp_path / "slurm.sbatch").read_text()
    command = (tmp_path / "command.sh").read_text()
    # Every node runs command.sh itself: one interpreter, environment and launcher line.
    assert "accelerate" not in sbatch  # no bare `accelerate` from whatever PATH holds
    assert f"{sys.executable} -m accelerate.commands.launch" in command
    exports = [line for line in command.splitlines() if line.startswith("export ")]
    assert exports and "HF_HUB_OFFLINE=1" in exports[0]
    assert subprocess.run(["bash", "-n"], input=sbatch, text=True).returncode == 0
    assert subprocess.run(["bash", "-n"], input=command, text=True).returncode == 0


def test_single_node_writes_no_slurm_script(tmp_path):
    request = PlanRequest(model="llama-3-8b")
    spec = build_run_spec(request, model_path="/m", dataset="/d.jsonl", output_dir="/x")
    write_run_folder(tmp_path, spec, request)
    assert not (tmp_path / "slurm.sbatch").exists()


def test_grpo_rewards_parse_builtins_functions_and_model_folders(tmp_path):
    assert RewardSource.parse("length").kind == "builtin"
    assert RewardSource.parse("my_pkg.rewards:score").kind == "function"
    assert RewardSource.parse(str(tmp_path)).kind == "model"
    with pytest.raises(InputError, match="--reward"):
        RewardSource.parse("no-such-thing")


def test_grpo_generation_batch_must_divide_by_num_generations():
    with pytest.raises(InputError, match="num-generations"):
        _spec("grpo", batch_size=3, grad_accum=1, num_generations=2)


def test_ppo_notes_that_upstream_removed_it():
    assert any("1.13" in w for w in _spec("ppo").warnings)


def test_trl_yaml_only_for_methods_trl_has_a_command_for():
    for method in Method:
        config = trl_cli_config(_spec(method.value, batch_size=8, num_generations=8))
        assert (config is not None) == (method in TRL_CLI_METHODS)


def test_generating_settings_imports_no_heavy_library():
    script = (
        "import sys, json\nfrom planner.specs import PlanRequest\n"
        "from runners.settings import build_run_spec, trl_cli_config\n"
        "from runners.run_folder import write_run_folder\n"
        "s = build_run_spec(PlanRequest(model='7b'), model_path='/m', dataset='/d.jsonl',"
        " output_dir='/o')\ntrl_cli_config(s)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    )
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))
    heavy = ("torch", "transformers", "trl", "peft", "accelerate", "datasets")
    assert not {name for name in loaded if name.split(".")[0] in heavy}


def test_trl_own_parser_accepts_the_written_yaml(tiny_model, tmp_path):
    """The YAML parses with TRL's own `trl <method>` parser (TrlParser, the method's config)."""
    paths, paths_data = {}, {}
    for method in TRL_CLI_METHODS:
        dataset = write_demo_dataset(method, tmp_path / "data")
        paths_data[method.value] = str(dataset)
        request = PlanRequest(
            model=str(tiny_model), method=method, batch_size=2, num_generations=2, seq_len=64
        )
        spec = build_run_spec(
            request,
            model_path=str(tiny_model),
            dataset=str(dataset),
            output_dir=str(tmp_path / method.value),
            device="cpu",
            max_steps=2,
        )
        path = tmp_path / f"trl_{method.value}.yaml"
        path.write_text(yaml.safe_dump(trl_cli_config(spec)))
        paths[method.value] = str(path)
    # GRPO / RLOO with vLLM: TRL's GRPOConfig / RLOOConfig take the vLLM fields as written, and
    # `trl vllm-serve`'s parser the server script's arguments (tests/test_vllm_modes.py).
    vllm = {}
    for method, mode in (("grpo", "vllm-colocate"), ("rloo", "vllm-server")):
        request = PlanRequest(
            model=str(tiny_model), method=method, batch_size=2, num_generations=2, seq_len=64,
            generation=mode,
        )  # fmt: skip
        spec = build_run_spec(
            request, model_path=str(tiny_model), dataset=paths_data[method],
            output_dir=str(tmp_path / mode), device="cpu", max_steps=2,
        )  # fmt: skip
        path = tmp_path / f"trl_{method}_{mode}.yaml"
        path.write_text(yaml.safe_dump(trl_cli_config(spec)))
        fields = {k: v for k, v in spec.trl_config.items() if k.startswith(("use_vllm", "vllm_"))}
        vllm[mode] = (method, str(path), fields, vllm_server_script(spec))
    # One child process: TRL's config classes take ~10 s to import (FACTS "TRL").
    script = f"""
import importlib, json
paths = json.loads({json.dumps(json.dumps(paths))})
for name, path in paths.items():
    parser = importlib.import_module("trl.scripts." + name).make_parser()
    script_args, training_args, model_args, data_args = parser.parse_args_and_config(
        ["--config", path]
    )
    assert training_args.max_steps == 2, name
    assert training_args.use_cpu, name
    assert model_args.use_peft and model_args.lora_r == 16, name
    assert data_args.datasets[0].path == "json", name
    print("parsed", name)
import shlex
from trl.scripts.vllm_serve import ScriptArguments
for mode, (name, path, fields, script) in json.loads({json.dumps(json.dumps(vllm))}).items():
    parser = importlib.import_module("trl.scripts." + name).make_parser()
    training_args = parser.parse_args_and_config(["--config", path])[1]
    assert {{k: getattr(training_args, k) for k in fields}} == fields, mode
    if script:
        line = next(x for x in script.splitlines() if x.startswith("exec "))
        serve = importlib.import_module("trl.scripts.vllm_serve").make_parser()
        (args,) = serve.parse_args_and_config(shlex.split(line)[3:])
        assert isinstance(args, ScriptArguments) and args.tensor_parallel_size == 1, mode
    print("parsed", mode)
"""
    env = {"TRL_EXPERIMENTAL_SILENCE": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("parsed") == len(TRL_CLI_METHODS) + len(vllm)


def test_qlora_on_cpu_is_a_clear_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "bitsandbytes" else real(name),
    )
    with pytest.raises(InputError, match="CUDA GPU"):
        _spec(tuning="qlora", device="cpu")


def test_checkpoints_land_about_ten_times_per_run():
    from advisor.commands.launch import _save_steps
    from planner.plan import estimate

    plan = estimate(PlanRequest(model="7b", samples=64000, batch_size=4, grad_accum=8))
    assert _save_steps(plan, None) == plan.time.total_steps // 10
    assert _save_steps(plan, 20) == 20  # short runs save once, at the end
    assert _save_steps(plan, 1000) == 100


def test_kto_weights_up_the_minority_kind():
    from runners.settings import kto_weights

    assert [w.value for w in kto_weights(300, 100)] == [1.0, 3.0]
    assert [w.value for w in kto_weights(100, 400)] == [4.0, 1.0]
    assert kto_weights(0, 10) == []


def test_a_plan_that_picks_a_zero_stage_says_deepspeed_is_missing(monkeypatch):
    import planner.plan
    from planner.plan import estimate

    request = PlanRequest(model="7b", sharding="zero2", num_gpus=4)
    monkeypatch.setattr(planner.plan, "deepspeed_installed", lambda: False)
    (warning,) = [w for w in estimate(request).warnings if "DeepSpeed" in w]
    assert "pip install 'alignment-advisor[deepspeed]'" in warning
    assert not [
        w
        for w in estimate(PlanRequest(model="7b", sharding="fsdp", num_gpus=4)).warnings
        if "DeepSpeed" in w
    ]
    monkeypatch.setattr(planner.plan, "deepspeed_installed", lambda: True)
    assert not [w for w in estimate(request).warnings if "DeepSpeed" in w]


def test_command_sh_takes_its_node_rank_and_rendezvous_from_the_environment(tmp_path):
    """MACHINE_RANK, else SLURM_NODEID, else 0; MASTER_ADDR / MASTER_PORT, else what the launch
    wrote: the lines of command.sh that decide them, run by bash."""
    request = PlanRequest(model="llama-3-8b", nodes=2, num_gpus=8, sharding="fsdp")
    spec = build_run_spec(request, model_path="/m", dataset="/d.jsonl", output_dir="checkpoints")
    write_run_folder(tmp_path, spec, request)
    lines = (tmp_path / "command.sh").read_text().splitlines()
    chosen = [line for line in lines if line.startswith(("node_rank=", "master_", "# Every"))]
    script = "\n".join([*chosen, 'echo "$node_rank $master_addr $master_port"'])

    def decided(**env: str) -> list[str]:
        done = subprocess.run(
            ["bash", "-c", script], env={"PATH": "/usr/bin:/bin", **env},
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return done.stdout.split()

    host = spec.accelerate["main_process_ip"]
    assert decided() == ["0", host, "29500"]
    assert decided(SLURM_NODEID="3") == ["3", host, "29500"]
    rendezvous = {"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "6000"}
    assert decided(SLURM_NODEID="3", MACHINE_RANK="1", **rendezvous) == ["1", "10.0.0.1", "6000"]


def test_an_mxfp4_checkpoint_loads_with_its_experts_dequantized(tmp_path):
    """gpt-oss checkpoints store their experts in MXFP4, which cannot train: the run loads them
    dequantized to bf16, as the plan assumes."""
    from runners.train import _model_kwargs

    folder = tmp_path / "gpt-oss"
    folder.mkdir()
    config = {"model_type": "gpt_oss", "quantization_config": {"quant_method": "mxfp4"}}
    (folder / "config.json").write_text(json.dumps(config))
    request = PlanRequest(model="gpt-oss-20b", tuning="lora", lora_targets="attention")
    spec = build_run_spec(request, model_path=str(folder), dataset="/d.jsonl", output_dir="ck")
    assert _model_kwargs(spec)["quantization_config"].dequantize is True
    plain = spec.model_copy(update={"model": str(tmp_path)})  # no config.json: no quantization
    assert "quantization_config" not in _model_kwargs(plain)


def test_a_mixture_of_experts_that_would_meet_grouped_mm_in_fp32_is_refused_at_launch(tmp_path):
    from runners.launch import experts_problem
    from tests.tiny_architectures import ARCHITECTURE_CONFIGS

    config = tmp_path / "config.json"
    config.write_text(json.dumps(ARCHITECTURE_CONFIGS["qwen3_moe"]))
    request = PlanRequest(model=str(config), method="sft", tuning="full")
    on_cpu = build_run_spec(
        request, model_path=str(config), dataset="/d.jsonl", output_dir="ck", device="cpu"
    )
    assert "grouped_mm" in experts_problem(on_cpu) and "on CPU" in experts_problem(on_cpu)
    mixed = build_run_spec(request, model_path=str(config), dataset="/d.jsonl", output_dir="ck")
    assert "fp32 weights" in experts_problem(mixed)  # bf16-mixed loads fp32 master weights
    true = PlanRequest(model=str(config), method="sft", tuning="full", precision="bf16-true")
    assert (
        experts_problem(
            build_run_spec(true, model_path=str(config), dataset="/d.jsonl", output_dir="ck")
        )
        is None
    )
    dense = PlanRequest(model="llama-3.1-8b", method="sft", tuning="full")
    assert (
        experts_problem(
            build_run_spec(
                dense, model_path="/m", dataset="/d.jsonl", output_dir="ck", device="cpu"
            )
        )
        is None
    )

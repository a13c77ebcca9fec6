"""`RunSpec`: everything a run needs, generated from a plan as plain data — no trl import.

The TRL config fields are plain dicts that `runners.train` passes to the method's config class
in the child process; importing `trl`'s config classes costs ~10 s on 2 cores, so nothing
here imports them. Each starting value (learning rate, β, KL) carries the reason it was chosen.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shlex
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from planner.errors import PlanError
from planner.memory import ADAMW_OPTIM
from planner.parameters import lora_target_modules
from planner.specs import Method, Offload, Plan, PlanRequest, Precision, Sharding, Tuning

TRAINERS: dict[Method, tuple[str, str]] = {
    Method.sft: ("trl:SFTTrainer", "trl:SFTConfig"),
    Method.dpo: ("trl:DPOTrainer", "trl:DPOConfig"),
    Method.kto: ("trl:KTOTrainer", "trl:KTOConfig"),
    Method.orpo: ("trl.experimental.orpo:ORPOTrainer", "trl.experimental.orpo:ORPOConfig"),
    Method.simpo: ("trl.experimental.cpo:CPOTrainer", "trl.experimental.cpo:CPOConfig"),
    Method.reward: ("trl:RewardTrainer", "trl:RewardConfig"),
    Method.grpo: ("trl:GRPOTrainer", "trl:GRPOConfig"),
    Method.rloo: ("trl:RLOOTrainer", "trl:RLOOConfig"),
    Method.ppo: ("trl.experimental.ppo:PPOTrainer", "trl.experimental.ppo:PPOConfig"),
}
"""Trainer and config class per method, as `module:Name` (TRL 1.12 locations)."""

TRL_CLI_METHODS = (Method.sft, Method.dpo, Method.kto, Method.reward, Method.grpo, Method.rloo)
"""Methods with a `trl <method> --config` command in trl 1.12 (trl/cli/commands/__init__.py)."""

OPTIMIZERS = {
    "adamw": ADAMW_OPTIM,
    "adamw8bit": "adamw_bnb_8bit",
    "paged_adamw8bit": "paged_adamw_8bit",
    "sgd": "sgd",
}
"""Planner optimizer names -> transformers `optim` values."""

# Learning rates (full fine-tuning, LoRA) with their source; LoRA trains ~10x higher because
# adapters start at zero and update a small subspace (Hu et al. 2021; TRL examples use 1e-4..2e-4).
LEARNING_RATES: dict[Method, tuple[float, float, str]] = {
    Method.sft: (2e-5, 2e-4, "TRL SFT examples: 2e-5 full, 2e-4 LoRA"),
    Method.dpo: (5e-7, 5e-6, "DPO paper (Rafailov et al. 2023) trains at 5e-7 full"),
    Method.kto: (5e-7, 5e-6, "KTO paper (Ethayarajh et al. 2024): 5e-7 full, as DPO"),
    Method.orpo: (8e-6, 8e-5, "ORPO paper (Hong et al. 2024): 8e-6 full"),
    Method.simpo: (1e-6, 1e-5, "SimPO paper (Meng et al. 2024): 3e-7..1e-6 full"),
    Method.reward: (1e-5, 1e-4, "TRL reward examples: 1e-5 full"),
    Method.grpo: (1e-6, 1e-5, "TRL GRPOConfig default 1e-6"),
    Method.rloo: (1e-6, 1e-5, "TRL RLOOConfig default 1e-6"),
    Method.ppo: (3e-6, 3e-5, "TRL PPOConfig default 3e-6"),
}


class StartingValue(BaseModel):
    """A hyper-parameter's first value and why it was chosen."""

    name: str
    value: float
    reason: str


class RewardSource(BaseModel):
    """Where GRPO/RLOO/PPO rewards come from."""

    kind: Literal["builtin", "function", "model"]
    value: str = Field(description="built-in name, `module:function`, or a reward-model path")

    @classmethod
    def parse(cls, text: str) -> RewardSource:
        """`length` -> built-in, `pkg.mod:fn` -> function, anything path-like -> model."""
        from runners.rewards import BUILTIN

        if text in BUILTIN:
            return cls(kind="builtin", value=text)
        if ":" in text and not Path(text).exists():
            return cls(kind="function", value=text)
        if Path(text).expanduser().is_dir():
            return cls(kind="model", value=str(Path(text).expanduser().resolve()))
        raise PlanError(
            f"--reward {text!r}: not a built-in ({', '.join(BUILTIN)}), a `module:function`, "
            "or a reward-model folder"
        )


class RunSpec(BaseModel):
    """What a run needs to reproduce it: TRL fields, PEFT, accelerate, data, command."""

    method: Method
    model: str
    dataset: str
    output_dir: str
    device: Literal["cpu", "cuda"]
    trainer: str
    config_class: str
    trl_config: dict[str, Any]
    peft: dict[str, Any] | None = None
    quantization: dict[str, Any] | None = None
    rewards: list[RewardSource] = Field(default_factory=list)
    reward_model: str | None = Field(default=None, description="PPO: the reward model's path")
    starting_values: list[StartingValue] = Field(default_factory=list)
    num_processes: int = 1
    nodes: int = 1
    accelerate: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)

    def settings_hash(self) -> str:
        """sha256 of every setting that changes the training, not where it is written."""
        data = self.model_dump(mode="json", exclude={"output_dir", "warnings"})
        data["trl_config"] = {k: v for k, v in data["trl_config"].items() if k != "output_dir"}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def precision_fields(precision: Precision, device: str, supports_bf16: bool) -> dict[str, Any]:
    """bf16 on Ampere and newer, fp16 on T4/V100, fp32 on CPU (TRL defaults to bf16 and fails
    on CPU without `use_cpu=True`)."""
    if device == "cpu":
        return {"use_cpu": True, "bf16": False, "fp16": False}
    if precision is Precision.fp32:
        return {"bf16": False, "fp16": False}
    if supports_bf16 and precision is Precision.bf16:
        return {"bf16": True, "fp16": False}
    return {"bf16": False, "fp16": True}


def _learning_rate(method: Method, tuning: Tuning) -> StartingValue:
    full, lora, source = LEARNING_RATES[method]
    if tuning is Tuning.full:
        return StartingValue(name="learning_rate", value=full, reason=f"{source}")
    return StartingValue(
        name="learning_rate",
        value=lora,
        reason=f"{source}; ×10 for LoRA adapters, which start at zero in a small subspace",
    )


def _method_fields(request: PlanRequest, max_steps: int | None) -> tuple[dict, list[StartingValue]]:
    """The method's own TRL fields and their starting values."""
    m = request.method
    _, completion_len = request.prompt_and_completion()
    fields: dict[str, Any] = {}
    values: list[StartingValue] = []

    def beta(default: float, reason: str, name: str = "beta") -> float:
        if request.beta is not None:
            values.append(StartingValue(name=name, value=request.beta, reason="given by --beta"))
            return request.beta
        values.append(StartingValue(name=name, value=default, reason=reason))
        return default

    if m is Method.sft:
        fields["max_length"] = request.seq_len
    elif m in (Method.dpo, Method.kto):
        fields["max_length"] = request.seq_len
        fields["beta"] = beta(
            0.1, "TRL default and the DPO/KTO papers' value; lower drifts further"
        )
        fields["precompute_ref_log_probs"] = request.precompute_ref_log_probs
    elif m is Method.orpo:
        fields["max_length"] = request.seq_len
        fields["max_completion_length"] = completion_len
        fields["beta"] = beta(0.1, "ORPO's λ for the odds-ratio term; paper uses 0.1")
    elif m is Method.simpo:
        fields["max_length"] = request.seq_len
        fields["max_completion_length"] = completion_len
        fields["loss_type"] = "simpo"
        fields["cpo_alpha"] = 0.0
        fields["beta"] = beta(2.0, "SimPO paper: β 2.0–2.5 with length-normalised rewards")
        fields["simpo_gamma"] = 1.0
        values.append(StartingValue(name="simpo_gamma", value=1.0, reason="SimPO paper: γ/β ≈ 0.5"))
    elif m is Method.reward:
        fields["max_length"] = request.seq_len
        fields["center_rewards_coefficient"] = 0.01
        values.append(
            StartingValue(
                name="center_rewards_coefficient",
                value=0.01,
                reason="keeps rewards centred on zero (Eisenstein et al. 2023, TRL docs)",
            )
        )
    elif m in (Method.grpo, Method.rloo):
        fields["num_generations"] = request.num_generations
        fields["max_completion_length"] = completion_len
        default = 0.0 if m is Method.grpo else 0.05
        reason = (
            "TRL GRPO default: no KL term, so no reference model in memory"
            if m is Method.grpo
            else "TRL RLOO default: a small KL to the reference keeps outputs fluent"
        )
        fields["beta"] = beta(default, reason)
        fields["logging_steps"] = 1
    elif m is Method.ppo:
        fields["response_length"] = completion_len
        fields["kl_coef"] = beta(0.05, "TRL PPOConfig default; raise if KL grows fast", "kl_coef")
        fields["num_ppo_epochs"] = request.ppo_epochs
        fields["num_mini_batches"] = 1
        fields["local_rollout_forward_batch_size"] = request.batch_size
        fields["missing_eos_penalty"] = 1.0
        fields["stop_token"] = "eos"
        fields["num_sample_generations"] = 0
        if max_steps is not None:
            per_step = request.batch_size * request.grad_accum * request.world_size
            fields["total_episodes"] = max_steps * per_step
    return fields, values


def trl_fields(
    request: PlanRequest,
    *,
    output_dir: str,
    device: str,
    supports_bf16: bool = True,
    max_steps: int | None = None,
    save_steps: int | None = None,
    learning_rate: float | None = None,
    seed: int = 42,
) -> tuple[dict[str, Any], list[StartingValue]]:
    """The TRL config kwargs for request's method, and the starting values with reasons."""
    lr = _learning_rate(request.method, request.tuning)
    if learning_rate is not None:
        lr = StartingValue(name="learning_rate", value=learning_rate, reason="given by flag")
    fields: dict[str, Any] = {
        "output_dir": output_dir,
        "per_device_train_batch_size": request.batch_size,
        "gradient_accumulation_steps": request.grad_accum,
        "gradient_checkpointing": request.grad_checkpointing,
        "learning_rate": lr.value,
        "num_train_epochs": request.epochs,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": save_steps or 500,
        "save_total_limit": 2,
        "report_to": "none",
        "seed": seed,
        "optim": OPTIMIZERS[request.optimizer.value],
        **precision_fields(request.precision, device, supports_bf16),
    }
    if max_steps is not None:
        fields["max_steps"] = max_steps
    if request.grad_checkpointing:
        # Non-reentrant checkpointing works with LoRA's frozen inputs and under DDP.
        fields["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    if request.world_size > 1 and device != "cpu":
        # Every parameter gets a gradient in these trainers: skip DDP's unused-parameter scan.
        fields["ddp_find_unused_parameters"] = False
    if request.sharding is Sharding.fsdp and request.grad_checkpointing:
        # FSDP checkpoints activations itself (accelerate's fsdp_activation_checkpointing);
        # transformers' gradient checkpointing on top would re-gather weights twice.
        fields["gradient_checkpointing"] = False
    method_fields, values = _method_fields(request, max_steps)
    fields.update(method_fields)
    if request.method is Method.ppo:
        fields.pop("max_steps", None)
        fields.pop("save_total_limit", None)
    return fields, [lr, *values]


def peft_fields(request: PlanRequest) -> dict[str, Any] | None:
    """`peft.LoraConfig` kwargs, or None for full fine-tuning."""
    if request.tuning is Tuning.full:
        return None
    from planner.models import resolve_model

    spec = resolve_model(request.model)
    return {
        "r": request.lora_rank,
        "lora_alpha": 2 * request.lora_rank,
        "lora_dropout": 0.05,
        "target_modules": lora_target_modules(spec, request.lora_targets.value),
        "task_type": "SEQ_CLS" if request.method is Method.reward else "CAUSAL_LM",
    }


def quantization_fields(request: PlanRequest, device: str) -> dict[str, Any] | None:
    """`BitsAndBytesConfig` kwargs for QLoRA; PlanError if bitsandbytes or a GPU is missing."""
    if request.tuning is not Tuning.qlora:
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise PlanError(
            "--tuning qlora needs bitsandbytes: pip install 'alignment-advisor[qlora]' "
            "(or use --tuning lora)"
        )
    if device == "cpu":
        raise PlanError("--tuning qlora needs a CUDA GPU; on CPU use --tuning lora or full")
    compute = "bfloat16" if request.precision is Precision.bf16 else "float16"
    fields = {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True,
        "bnb_4bit_compute_dtype": compute,
    }
    if request.sharding in (Sharding.zero3, Sharding.fsdp):
        # Sharded QLoRA needs the 4-bit storage in the compute dtype (planner warns too).
        fields["bnb_4bit_quant_storage"] = compute
    return fields


def accelerate_config(
    request: PlanRequest,
    device: str,
    num_processes: int | None = None,
    mixed_precision: str | None = None,
) -> dict:
    """An accelerate config file's fields for the request's GPUs, nodes, sharding and offload."""
    processes = num_processes or request.world_size
    mixed = mixed_precision or "no"
    if mixed_precision is None and device != "cpu" and request.precision is not Precision.fp32:
        mixed = request.precision.value
    config: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "debug": False,
        "distributed_type": "NO",
        "downcast_bf16": "no",
        "machine_rank": 0,
        "main_training_function": "main",
        "mixed_precision": mixed,
        "num_machines": request.nodes,
        "num_processes": processes,
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": device == "cpu",
    }
    if request.nodes > 1:
        config["main_process_ip"] = "MASTER_ADDR"  # the SLURM script passes the real address
        config["main_process_port"] = 29500
    sharding = request.sharding
    if device == "cpu":
        if processes > 1:
            config["distributed_type"] = "MULTI_CPU"
        return config
    if sharding in (Sharding.zero1, Sharding.zero2, Sharding.zero3):
        stage = int(sharding.value[-1])
        offload_optimizer = request.offload is not Offload.none
        offload_params = request.offload is Offload.optimizer_params and stage == 3
        config["distributed_type"] = "DEEPSPEED"
        config["deepspeed_config"] = {
            "deepspeed_multinode_launcher": "standard",
            "gradient_accumulation_steps": request.grad_accum,
            "offload_optimizer_device": "cpu" if offload_optimizer else "none",
            "offload_param_device": "cpu" if offload_params else "none",
            "zero3_init_flag": stage == 3,
            "zero3_save_16bit_model": stage == 3,
            "zero_stage": stage,
        }
    elif sharding is Sharding.fsdp:
        config["distributed_type"] = "FSDP"
        config["fsdp_config"] = {
            "fsdp_activation_checkpointing": request.grad_checkpointing,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_offload_params": request.offload is not Offload.none,
            "fsdp_reshard_after_forward": True,
            "fsdp_state_dict_type": "FULL_STATE_DICT",
            "fsdp_version": 2,
        }
    elif processes > 1:
        config["distributed_type"] = "MULTI_GPU"
        config["gpu_ids"] = "all"
    return config


def kto_weights(desirable: int, undesirable: int) -> list[StartingValue]:
    """KTO's desirable/undesirable weights that balance the two kinds of rows.

    KTO paper (Ethayarajh et al. 2024, §4.2): keep λ_D·n_D / (λ_U·n_U) in [1, 4/3]; weighting
    the minority kind up to a ratio of 1 does that.
    """
    if not desirable or not undesirable:
        return []
    if desirable >= undesirable:
        d, u = 1.0, round(desirable / undesirable, 3)
    else:
        d, u = round(undesirable / desirable, 3), 1.0
    reason = (
        f"{desirable} desirable vs {undesirable} undesirable rows: KTO paper keeps "
        "λD·nD / λU·nU in [1, 4/3]"
    )
    return [
        StartingValue(name="desirable_weight", value=d, reason=reason),
        StartingValue(name="undesirable_weight", value=u, reason=reason),
    ]


def build_run_spec(
    request: PlanRequest,
    *,
    model_path: str,
    dataset: str,
    output_dir: str,
    device: Literal["cpu", "cuda"] = "cuda",
    supports_bf16: bool = True,
    max_steps: int | None = None,
    save_steps: int | None = None,
    learning_rate: float | None = None,
    rewards: list[RewardSource] | None = None,
    reward_model: str | None = None,
    num_processes: int | None = None,
    plan: Plan | None = None,
    kto_label_counts: tuple[int, int] | None = None,
) -> RunSpec:
    """The RunSpec for request: TRL fields, PEFT, quantization, accelerate config, rewards."""
    method = request.method
    trainer, config_class = TRAINERS[method]
    fields, values = trl_fields(
        request,
        output_dir=output_dir,
        device=device,
        supports_bf16=supports_bf16,
        max_steps=max_steps,
        save_steps=save_steps,
        learning_rate=learning_rate,
    )
    if method is Method.kto and kto_label_counts:
        weights = kto_weights(*kto_label_counts)
        fields.update({w.name: w.value for w in weights})
        values += weights
    processes = num_processes or request.world_size
    warnings = list(plan.warnings) if plan is not None else []
    if method in (Method.grpo, Method.rloo):
        if not rewards:
            warnings.append(
                "no --reward given: using the built-in length reward, a smoke test rather "
                "than a task reward (pass --reward module:function or a reward-model folder)"
            )
        rewards = rewards or [RewardSource(kind="builtin", value="length")]
        per_step = request.batch_size * request.grad_accum * processes
        if per_step % request.num_generations:
            raise PlanError(
                f"{method.value}: batch-size × grad-accum × processes = {per_step} must be "
                f"divisible by --num-generations {request.num_generations}"
            )
    if method is Method.ppo:
        warnings.append(
            "PPO runs on trl.experimental.ppo, removed upstream in trl 1.13: this project pins "
            "trl==1.12.*, and upstream no longer maintains PPO"
        )
        if not rewards and reward_model is None:
            warnings.append(
                "no --reward model folder given: PPO scores with the policy's own weights and a "
                "fresh, untrained score head — fine for a smoke test, meaningless for training"
            )
        reward_model = reward_model or model_path
        if rewards:
            models = [r.value for r in rewards if r.kind == "model"]
            if len(models) != len(rewards):
                raise PlanError(
                    "ppo: --reward must be a reward-model folder (TRL's PPO scores "
                    "with a sequence classifier)"
                )
            reward_model = models[0]
            rewards = []
    return RunSpec(
        method=method,
        model=model_path,
        dataset=dataset,
        output_dir=output_dir,
        device=device,
        trainer=trainer,
        config_class=config_class,
        trl_config=fields,
        peft=peft_fields(request),
        quantization=quantization_fields(request, device),
        rewards=rewards or [],
        reward_model=reward_model,
        starting_values=values,
        num_processes=processes,
        nodes=request.nodes,
        accelerate=accelerate_config(
            request,
            device,
            processes,
            "bf16" if fields.get("bf16") else "fp16" if fields.get("fp16") else "no",
        ),
        warnings=warnings,
    )


def trl_cli_config(spec: RunSpec) -> dict[str, Any] | None:
    """A YAML mapping that `trl <method> --config` accepts, or None where TRL has no command."""
    if spec.method not in TRL_CLI_METHODS:
        return None
    config = dict(spec.trl_config)
    config["model_name_or_path"] = spec.model
    suffix = Path(spec.dataset).suffix.lstrip(".").lower()
    loader = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet"}.get(suffix)
    if loader:
        config["datasets"] = [{"path": loader, "data_files": spec.dataset, "split": "train"}]
    else:
        config["dataset_name"] = spec.dataset
    if spec.peft:
        config["use_peft"] = True
        config["lora_r"] = spec.peft["r"]
        config["lora_alpha"] = spec.peft["lora_alpha"]
        config["lora_dropout"] = spec.peft["lora_dropout"]
        targets = spec.peft["target_modules"]
        config["lora_target_modules"] = targets if isinstance(targets, list) else [targets]
        config["lora_task_type"] = spec.peft["task_type"]
    if spec.quantization:
        config["load_in_4bit"] = True
        config["bnb_4bit_quant_type"] = spec.quantization["bnb_4bit_quant_type"]
        config["use_bnb_nested_quant"] = spec.quantization["bnb_4bit_use_double_quant"]
    if spec.method in (Method.grpo, Method.rloo):
        funcs = []
        for reward in spec.rewards:
            if reward.kind == "model":
                config["reward_model_name_or_path"] = reward.value
            elif reward.kind == "builtin":
                funcs.append(f"runners.rewards.{reward.value}_reward")
            else:
                funcs.append(reward.value.replace(":", "."))
        if funcs:
            config["reward_funcs"] = funcs
    return config


def shell_safe(text: str, what: str) -> str:
    """`text` when it can be written into a shell script (quoted); PlanError for a newline or
    another control character, which would turn a comment line into a command."""
    if any(not c.isprintable() for c in text):
        raise PlanError(f"{what} {text!r}: contains a newline or control character")
    return text


def slurm_script(spec: RunSpec, run_dir: str, gpus_per_node: int) -> str:
    """An sbatch script that starts one `accelerate launch` per node for a multi-node run. The
    run folder is written once, quoted, and reaches every node through the environment, so no
    character in its name is ever run as shell code."""
    total = spec.num_processes
    folder = shlex.quote(shell_safe(run_dir, "run folder"))
    if re.fullmatch(r"[\w./+-]+", run_dir):
        log = f"#SBATCH --output={run_dir}/slurm-%j.out"
    else:  # sbatch reads #SBATCH lines itself, without shell quoting
        log = "# The job's log: slurm-<job id>.out in the folder sbatch was started from."
    return f"""#!/bin/bash
#SBATCH --job-name=advisor-{spec.method.value}
#SBATCH --nodes={spec.nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node={gpus_per_node}
#SBATCH --cpus-per-task={8 * gpus_per_node}
{log}
set -euo pipefail
export RUN_DIR={folder}
export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_PORT=29500
export TRL_EXPERIMENTAL_SILENCE=1
srun bash -c 'accelerate launch \\
  --config_file "$RUN_DIR/accelerate.yaml" \\
  --num_machines {spec.nodes} --num_processes {total} \\
  --machine_rank "$SLURM_NODEID" \\
  --main_process_ip "$MASTER_ADDR" --main_process_port "$MASTER_PORT" \\
  -m runners.train "$RUN_DIR/runspec.json"'
"""

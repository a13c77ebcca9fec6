"""`RunSpec`: everything a run needs, generated from a plan as plain data — no trl import.

The TRL config fields are plain dicts that `runners.train` passes to the method's config class
in the child process; importing `trl`'s config classes costs ~10 s on 2 cores, so nothing
here imports them. Each starting value (learning rate, β, KL) carries the reason it was chosen.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shlex
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from planner.dataset_file import LOADERS, file_format
from planner.deepspeed import deepspeed_config, deepspeed_installed, zero_stage
from planner.errors import InputError
from planner.memory import ADAMW_OPTIM
from planner.parameters import lora_target_modules
from planner.precision import (
    DTYPE,
    learning_rate_warning,
    load_dtype,
    precision_plan,
    runnable_precision,
)
from planner.recipes import LORA_ALPHA_PER_RANK, RECIPES, StartingValue, lora_dropout, recipe
from planner.specs import (
    Generation,
    Method,
    Offload,
    Plan,
    PlanRequest,
    Precision,
    PrecisionPlan,
    Sharding,
    Tuning,
)
from planner.trl_defaults import (
    VLLM_SERVE_GPU_MEMORY_UTILIZATION,
    VLLM_SERVER_HOST,
    VLLM_SERVER_PORT,
)

__all__ = ["StartingValue"]

TRAINERS: dict[Method, tuple[str, str]] = {
    m: (r.trainer, r.config_class) for m, r in RECIPES.items()
}
"""Trainer and config class per method, as `module:Name` (from the recipes)."""

TRL_CLI_METHODS = tuple(m for m, r in RECIPES.items() if r.trl_cli)
"""Methods with a `trl <method> --config` command (from the recipes)."""

Tracker = Literal["none", "wandb", "trackio", "tensorboard", "mlflow"]

TRACKERS: dict[str, tuple[tuple[str, ...], str]] = {
    "none": ((), ""),
    "wandb": (("wandb",), "pip install wandb (then `wandb login`, or WANDB_MODE=offline)"),
    "trackio": (("trackio",), "pip install trackio"),
    "tensorboard": (("tensorboard", "tensorboardX"), "pip install tensorboard"),
    "mlflow": (("mlflow",), "pip install mlflow"),
}
"""Experiment trackers that TRL's `report_to` sends the training logs to: the modules that
transformers looks for (any one will do) and how to install one."""


def tracker_problem(report_to: str) -> str | None:
    """Why `--report-to report_to` cannot work here (its package is not installed), or None.
    Looks the package up without importing it; a name it does not know is left to TRL."""
    modules, install = TRACKERS.get(report_to, ((), ""))
    if not modules or any(importlib.util.find_spec(m) is not None for m in modules):
        return None
    return f"--report-to {report_to}: the {modules[0]} package is not installed; {install}"


OPTIMIZERS = {
    "adamw": ADAMW_OPTIM,
    "adamw8bit": "adamw_bnb_8bit",
    "paged_adamw8bit": "paged_adamw_8bit",
    "sgd": "sgd",
}
"""Planner optimizer names -> transformers `optim` values."""


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
        raise InputError(
            f"--reward {text!r}: not a built-in ({', '.join(BUILTIN)}), a `module:function`, "
            "or a reward-model folder"
        )


class RunSpec(BaseModel):
    """What a run needs to reproduce it: TRL fields, PEFT, accelerate, data, command. `request`
    is the planner's description of the same run: every config below is rendered from it."""

    method: Method
    request: PlanRequest | None = Field(
        default=None, description="the settings the plan estimated and the configs come from"
    )
    precision: PrecisionPlan | None = Field(
        default=None, description="the dtypes the run loads and trains in (TRL's `dtype`)"
    )
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
    max_prompt_tokens: int | None = Field(
        default=None,
        description="PPO/GRPO/RLOO: rows whose prompt has more tokens are left out before "
        "training (--drop-long-prompts); TRL itself generates from whole prompts",
    )
    starting_values: list[StartingValue] = Field(default_factory=list)
    num_processes: int = 1
    nodes: int = 1
    accelerate: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)

    def settings_hash(self) -> str:
        """sha256 of every setting that changes the training, not where it is written."""
        data = self.model_dump(mode="json", exclude={"output_dir", "warnings"})
        data["trl_config"] = {
            k: v for k, v in data["trl_config"].items() if k not in ("output_dir", "run_name")
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def run_precision(request: PlanRequest, device: str, supports_bf16: bool) -> PlanRequest:
    """The request with the precision it will run in here: fp32 on CPU (TRL needs `use_cpu`
    and trains there in fp32), fp16-mixed on GPUs without bf16 (T4, V100)."""
    if device == "cpu" and request.precision is not Precision.fp32:
        return request.model_copy(update={"precision": Precision.fp32})
    runnable = runnable_precision(request.precision, supports_bf16)
    if runnable is not request.precision:
        return request.model_copy(update={"precision": runnable})
    return request


def precision_fields(precision: Precision, device: str, supports_bf16: bool) -> dict[str, Any]:
    """TRL's `bf16` / `fp16` flags: autocast in the run's 16-bit dtype; fp32 on CPU (TRL
    defaults to bf16 and fails on CPU without `use_cpu=True`)."""
    if device == "cpu":
        return {"use_cpu": True, "bf16": False, "fp16": False}
    half = runnable_precision(precision, supports_bf16).half
    return {"bf16": half == "bf16", "fp16": half == "fp16"}


def trl_fields(
    request: PlanRequest,
    *,
    output_dir: str,
    device: str,
    supports_bf16: bool = True,
    max_steps: int | None = None,
    save_steps: int | None = None,
    learning_rate: float | None = None,
    learning_rate_reason: str = "given by flag",
    report_to: Tracker = "none",
    run_name: str | None = None,
    seed: int = 42,
) -> tuple[dict[str, Any], list[StartingValue]]:
    """The TRL config kwargs for request's method, and the starting values with reasons
    (`learning_rate_reason`: why a given `learning_rate` replaces the recipe's; `report_to`:
    the tracker that receives the logs, under `run_name`)."""
    method = recipe(request.method)
    lr = method.learning_rate_for(request.tuning)
    if learning_rate is not None:
        lr = StartingValue(name="learning_rate", value=learning_rate, reason=learning_rate_reason)
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
        "report_to": report_to,
        "seed": seed,
        "optim": OPTIMIZERS[request.optimizer.value],
        **precision_fields(request.precision, device, supports_bf16),
    }
    if run_name:
        fields["run_name"] = run_name
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
    if method.reference != "never" and method.reference_from_init_kwargs:
        # TRL builds the reference from `model_init_kwargs`, float32 unless dtype is given:
        # the reference loads as the policy does.
        fields["model_init_kwargs"] = {"dtype": load_dtype(request)}
    ds = deepspeed_config(request)
    if ds is not None:
        fields["deepspeed"] = ds
        if device == "cpu":
            # DeepSpeed runs on its CPU accelerator (gloo) only where the trainer is not told
            # `use_cpu`: accelerate skips DeepSpeed for `cpu=True` (accelerate/state.py).
            fields["use_cpu"] = False
    method_fields, values = method.trl_fields(request, max_steps)
    fields.update(method_fields)
    fields.update(vllm_fields(request))
    if request.method is Method.ppo:
        fields.pop("max_steps", None)
        fields.pop("save_total_limit", None)
    return fields, [lr, *values]


def vllm_fields(request: PlanRequest) -> dict[str, Any]:
    """TRL's vLLM fields for GRPO / RLOO (GRPOConfig / RLOOConfig, TRL 1.12): `use_vllm`, and
    with vLLM its mode; colocated, the engine's share of the GPU, tensor-parallel size 1 and
    the context its KV cache is sized for (prompt + completion, as planned); a server, where the
    trainer reaches it (TRL's defaults, where `vllm_server.sh` serves). {} for other methods."""
    if not recipe(request.method).supports_vllm:
        return {}
    if request.generation is Generation.hf:
        return {"use_vllm": False}
    if request.generation is Generation.vllm_colocate:
        return {
            "use_vllm": True,
            "vllm_mode": "colocate",
            "vllm_gpu_memory_utilization": request.colocated_vllm_share,
            "vllm_tensor_parallel_size": 1,
            "vllm_max_model_length": sum(request.prompt_and_completion()),
        }
    return {
        "use_vllm": True,
        "vllm_mode": "server",
        "vllm_server_host": VLLM_SERVER_HOST,
        "vllm_server_port": VLLM_SERVER_PORT,
    }


def vllm_server_script(spec: RunSpec) -> str | None:
    """`vllm_server.sh` for a run that generates on a vLLM server: `trl vllm-serve` with the
    run's model over the server's GPUs (tensor parallel), sized for prompt + completion, on the
    GPUs after the training GPUs of its node (the training ranks use the first ones; VLLM_GPUS
    overrides); None for every other run."""
    request = spec.request
    if request is None or request.generation is not Generation.vllm_server:
        return None
    gpus = request.vllm_server_gpu_count
    devices = ",".join(str(request.num_gpus + i) for i in range(gpus))
    model = shlex.quote(shell_safe(spec.model, "model path"))
    command = (
        f"trl vllm-serve --model {model} --tensor-parallel-size {gpus} "
        f"--host {VLLM_SERVER_HOST} --port {VLLM_SERVER_PORT} "
        f"--gpu-memory-utilization {VLLM_SERVE_GPU_MEMORY_UTILIZATION:g} "
        f"--max-model-len {sum(request.prompt_and_completion())}"
    )
    return (
        "#!/usr/bin/env bash\n"
        "# The vLLM server this run generates with (vllm_mode: server). Start it first, on this\n"
        "# node or another, and launch the training once it answers; the trainer connects to\n"
        f"# vllm_server_host:vllm_server_port ({VLLM_SERVER_HOST}:{VLLM_SERVER_PORT}; edit the host\n"
        "# in the TRL config when the server runs on another machine).\n"
        f"# GPUs {devices} by default: after the {request.num_gpus} training GPUs. "
        "VLLM_GPUS=... picks others.\n"
        "set -euo pipefail\n"
        f'export CUDA_VISIBLE_DEVICES="${{VLLM_GPUS:-{devices}}}"\n'
        f"exec {command}\n"
    )


def vllm_problem(spec: RunSpec) -> str | None:
    """Why a run that generates with vLLM cannot start here (vLLM not installed, or no CUDA
    device), or None. Looks vLLM up without importing it."""
    request = spec.request
    if request is None or request.generation is Generation.hf:
        return None
    if spec.device == "cpu":
        return f"--generation {request.generation.value} needs CUDA GPUs: vLLM does not run on CPU"
    if importlib.util.find_spec("vllm") is None:
        return (
            f"--generation {request.generation.value} needs vLLM: pip install "
            "'alignment-advisor[vllm]' (or --generation hf)"
        )
    return None


def peft_fields(request: PlanRequest) -> dict[str, Any] | None:
    """`peft.LoraConfig` kwargs, or None for full fine-tuning."""
    if request.tuning is Tuning.full:
        return None
    from planner.models import resolve_model

    spec = resolve_model(request.model)
    return {
        "r": request.lora_rank,
        "lora_alpha": LORA_ALPHA_PER_RANK * request.lora_rank,
        "lora_dropout": lora_dropout(spec.model_type, spec.is_moe, request.lora_targets),
        "target_modules": lora_target_modules(spec, request.lora_targets.value),
        "task_type": "SEQ_CLS" if request.method is Method.reward else "CAUSAL_LM",
    }


def quantization_fields(request: PlanRequest, device: str) -> dict[str, Any] | None:
    """`BitsAndBytesConfig` kwargs for QLoRA; InputError if bitsandbytes or a GPU is missing."""
    if request.tuning is not Tuning.qlora:
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise InputError(
            "--tuning qlora needs bitsandbytes: pip install 'alignment-advisor[qlora]' "
            "(or use --tuning lora)"
        )
    if device == "cpu":
        raise InputError("--tuning qlora needs a CUDA GPU; on CPU use --tuning lora or full")
    compute = DTYPE[request.precision.half]
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
    """An accelerate config file's fields for the request's GPUs, nodes, sharding and offload.

    Several processes on CPU take the same launcher as on GPUs (torch's elastic agent; accelerate
    sends `use_cpu` runs to its MPI launcher instead): the TRL config's `use_cpu` then puts every
    rank on CPU with gloo, and runners.train lets FSDP2 and DeepSpeed run there.
    """
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
        "use_cpu": device == "cpu" and processes == 1,
    }
    if request.nodes > 1:
        # Defaults for command.sh, which takes MASTER_ADDR / MASTER_PORT on every node first.
        config["main_process_ip"] = rendezvous_host()
        config["main_process_port"] = 29500
    sharding = request.sharding
    if processes == 1:
        return config
    stage = zero_stage(request)
    if stage is not None:
        config["distributed_type"] = "DEEPSPEED"
        # The DeepSpeed settings live in the TRL config's `deepspeed` (planner.deepspeed): an
        # accelerate config that repeats them, or names a mixed precision, is refused by
        # accelerate's DeepSpeedPlugin ("the following accelerate config variables will be
        # ignored", accelerate/utils/dataclasses.py `_deepspeed_config_checks`).
        del config["mixed_precision"]
        config["deepspeed_config"] = {
            "deepspeed_multinode_launcher": "standard",
            "zero3_init_flag": stage == 3,
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
    else:
        config["distributed_type"] = "MULTI_GPU"
        config["gpu_ids"] = "all"
    return config


def resolved_deepspeed(spec: RunSpec) -> dict[str, Any] | None:
    """The run's DeepSpeed config with transformers' "auto" values filled from the same TRL
    fields transformers reads (`HfTrainerDeepSpeedConfig.trainer_config_process`), as one
    process sees it: micro-batch, accumulation, clipping (TRL's `max_grad_norm`, 1.0 unless set)."""
    ds = spec.trl_config.get("deepspeed")
    if ds is None:
        return None
    fill = {
        "train_micro_batch_size_per_gpu": spec.trl_config["per_device_train_batch_size"],
        "gradient_accumulation_steps": spec.trl_config["gradient_accumulation_steps"],
        "gradient_clipping": spec.trl_config.get("max_grad_norm", 1.0),
    }
    resolved = {
        key: fill.get(key, value) if value == "auto" else value for key, value in ds.items()
    }
    resolved.pop("train_batch_size", None)  # DeepSpeed derives it: micro × accumulation × ranks
    return resolved


def deepspeed_problem(spec: RunSpec) -> str | None:
    """What DeepSpeed's own config class (`deepspeed.runtime.config.DeepSpeedConfig`) refuses in
    the run's DeepSpeed config, in one line; None when it accepts it or DeepSpeed is absent."""
    resolved = resolved_deepspeed(spec)
    if resolved is None or not deepspeed_installed():
        return None
    import logging

    logging.getLogger("DeepSpeed").setLevel(logging.ERROR)
    from deepspeed.runtime.config import DeepSpeedConfig

    try:
        DeepSpeedConfig(resolved)
    except Exception as error:  # DeepSpeed raises assertions, ValueErrors and pydantic errors
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"DeepSpeed refuses the run's DeepSpeed config: {first}"
    return None


def rendezvous_host() -> str:
    """The address a multi-node run meets at unless MASTER_ADDR says otherwise: this machine
    (`advisor launch` is run on the node that will be rank 0; SLURM's script sets MASTER_ADDR)."""
    import socket

    return socket.gethostname()


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
    learning_rate_reason: str = "given by flag",
    report_to: Tracker = "none",
    run_name: str | None = None,
    rewards: list[RewardSource] | None = None,
    reward_model: str | None = None,
    num_processes: int | None = None,
    plan: Plan | None = None,
    kto_label_counts: tuple[int, int] | None = None,
    max_prompt_tokens: int | None = None,
) -> RunSpec:
    """The RunSpec for request: TRL fields, PEFT, quantization, accelerate config, rewards."""
    request = run_precision(request, device, supports_bf16)
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
        learning_rate_reason=learning_rate_reason,
        report_to=report_to,
        run_name=run_name,
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
        problem = recipe(method).generation_group_problem(request, processes)
        if problem:
            raise InputError(problem)
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
                raise InputError(
                    "ppo: --reward must be a reward-model folder (TRL's PPO scores "
                    "with a sequence classifier)"
                )
            reward_model = models[0]
            rewards = []
    lr_warning = learning_rate_warning(request, fields["learning_rate"])
    if lr_warning and lr_warning not in warnings:
        warnings.append(lr_warning)
    return RunSpec(
        method=method,
        request=request,
        precision=precision_plan(request),
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
        max_prompt_tokens=max_prompt_tokens,
    )


def trl_cli_config(spec: RunSpec) -> dict[str, Any] | None:
    """A YAML mapping that `trl <method> --config` accepts, or None where TRL has no command."""
    if spec.method not in TRL_CLI_METHODS:
        return None
    config = dict(spec.trl_config)
    config["model_name_or_path"] = spec.model
    if spec.precision is not None:
        config["dtype"] = spec.precision.load_dtype  # TRL's ModelConfig: float32 when unset
    loader = LOADERS.get(file_format(spec.dataset))
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
    """`text` when it can be written into a shell script (quoted); InputError for a newline or
    another control character, which would turn a comment line into a command."""
    if any(not c.isprintable() for c in text):
        raise InputError(f"{what} {text!r}: contains a newline or control character")
    return text

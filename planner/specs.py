"""The planner's inputs and outputs as pydantic models: the one source of truth for their JSON."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from planner.trl_defaults import NUM_GENERATIONS, VLLM_GPU_MEMORY_UTILIZATION, VLLM_METHODS


class Method(StrEnum):
    """An alignment (or fine-tuning) method as TRL runs it."""

    sft = "sft"
    dpo = "dpo"
    ppo = "ppo"
    grpo = "grpo"
    rloo = "rloo"
    kto = "kto"
    orpo = "orpo"
    simpo = "simpo"
    reward = "reward"


class Tuning(StrEnum):
    full = "full"
    lora = "lora"
    qlora = "qlora"


class LoraTargets(StrEnum):
    qv = "qv"
    attention = "attention"
    all_linear = "all-linear"


class Precision(StrEnum):
    """How the run holds its numbers (LitGPT's names). `bf16-mixed` is what TRL does with
    `bf16: true` and the written `dtype`: full tuning loads fp32 weights and autocasts to bf16;
    LoRA loads a bf16 base beside fp32 adapters. `bf16-true` loads bf16 weights and keeps
    gradients and AdamW states in bf16 too."""

    bf16_mixed = "bf16-mixed"
    bf16_true = "bf16-true"
    fp16_mixed = "fp16-mixed"
    fp32 = "fp32"

    @property
    def half(self) -> str | None:
        """The 16-bit compute dtype ('bf16', 'fp16'), or None for fp32."""
        return {"bf16-mixed": "bf16", "bf16-true": "bf16", "fp16-mixed": "fp16"}.get(self.value)


PRECISION_ALIASES = {"bf16": Precision.bf16_mixed, "fp16": Precision.fp16_mixed}
"""Older names kept as aliases of the mixed forms."""


def parse_precision(value: Any) -> Any:
    """`bf16` / `fp16` as their mixed forms; anything else as given (pydantic checks it)."""
    return PRECISION_ALIASES.get(value, value) if isinstance(value, str) else value


class Optimizer(StrEnum):
    adamw = "adamw"
    adamw8bit = "adamw8bit"
    paged_adamw8bit = "paged_adamw8bit"
    sgd = "sgd"


class Sharding(StrEnum):
    none = "none"
    ddp = "ddp"
    zero1 = "zero1"
    zero2 = "zero2"
    zero3 = "zero3"
    fsdp = "fsdp"


class Offload(StrEnum):
    none = "none"
    optimizer = "optimizer"
    optimizer_params = "optimizer+params"


class Attention(StrEnum):
    """Attention kernel: sdpa / flash keep no s x s scores; eager materialises them."""

    sdpa = "sdpa"
    flash = "flash"
    eager = "eager"


class Generation(StrEnum):
    """How GRPO / RLOO generate completions (TRL's `use_vllm` / `vllm_mode`): transformers'
    `generate` in the training process (hf), a vLLM engine inside each training process that
    takes a share of its GPU (vllm-colocate), or a vLLM server on GPUs of its own (vllm-server)."""

    hf = "hf"
    vllm_colocate = "vllm-colocate"
    vllm_server = "vllm-server"


class ModelSpec(BaseModel):
    """Architecture of a decoder-only transformer and its exact parameter count."""

    model_config = ConfigDict(frozen=True)

    name: str
    source: str = Field(
        description="shorthand, profile, config, directory, hf-cache or hub (fetched now)"
    )
    representative_of: str | None = Field(
        default=None, description="the size shorthand this architecture stands for, if any"
    )
    model_type: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    attention_out_bias: bool = False
    mlp_bias: bool = False
    norms_per_layer: int = 2
    norm_has_bias: bool = False
    num_experts: int = 0
    num_experts_per_tok: int = 0
    hidden_act: str = "silu"
    params: int = Field(description="exact parameter count of the causal-LM model")
    hf_config: dict[str, Any] = Field(
        default_factory=dict, repr=False, description="the config.json it was built from"
    )
    estimate_path: str = Field(
        default="analytic",
        description="analytic (an architecture record: formulas) or traced (the general path: "
        "params counted on the real model class, memory from a traced step)",
    )
    active_params: int | None = Field(
        default=None,
        description="general path, mixture of experts: parameters a token runs through, "
        "counted on the real model class; None: from the architecture's layout",
    )
    notes: list[str] = Field(
        default_factory=list,
        description="what planning this model left out or assumed (a vision tower, config values)",
    )

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0


class GpuSpec(BaseModel):
    """One accelerator's capacity: memory, dense 16-bit TFLOPs, HBM bandwidth, interconnect."""

    model_config = ConfigDict(frozen=True)

    name: str
    memory_gib: float
    memory_bytes: int
    bf16_tflops: float = Field(description="dense bf16 tensor TFLOPs; 0 where bf16 is unsupported")
    fp16_tflops: float
    fp32_tflops: float = 0.0
    hbm_gbps: float = Field(description="memory bandwidth, GB/s")
    interconnect_gbps: float = Field(description="per-GPU intra-node bandwidth, GB/s")
    interconnect: str = Field(default="", description="the intra-node link (NVLink 4, PCIe Gen4)")
    internode_gbps: float | None = Field(
        default=None,
        description="per-GPU bandwidth between nodes, GB/s; None: profiles/constants.toml's",
    )
    internode: str = Field(default="", description="the link between nodes (InfiniBand NDR)")
    supports_bf16: bool = True
    aliases: list[str] = Field(default_factory=list)


MAX_TOKENS = 1_048_576
"""Longest sequence (and prompt, and completion) a request may ask for: 1M tokens, past any
context window a model ships with today."""
MAX_GPUS_PER_NODE = 1_024
MAX_NODES = 16_384
MAX_BATCH = 65_536
"""Micro-batch rows per GPU, and micro-batches per step: far past what fits in a GPU or a run."""
MAX_LORA_RANK = 65_536
"""Above any model's hidden size, which caps a useful rank."""
MAX_GENERATIONS = 4_096
MAX_PPO_EPOCHS = 1_000
MAX_SAMPLES = 10**12
MAX_EPOCHS = 1_000
MAX_BETA = 1_000
"""KL weights in use are 0.01-1; a thousand is already absurd."""


def _bounded(default: Any, ceiling: float, unit: str, **kwargs: Any) -> Any:
    """A Field with an upper bound whose error message names it in `unit`."""
    return Field(default, le=ceiling, json_schema_extra={"unit": unit}, **kwargs)


class PlanRequest(BaseModel):
    """Everything `advisor plan` takes: the model, the method and the training settings.

    Every number is bounded: finite, positive where it must be, and below a ceiling no real run
    reaches, so the estimate's arithmetic stays finite (see `request_problem` for the messages).
    """

    model_config = ConfigDict(extra="forbid")

    model: str = "7b"
    method: Method = Method.dpo
    tuning: Tuning = Tuning.lora
    lora_rank: int = _bounded(16, MAX_LORA_RANK, "", gt=0)
    lora_targets: LoraTargets = LoraTargets.all_linear
    seq_len: int = _bounded(
        1024, MAX_TOKENS, "tokens", gt=0, description="tokens per sequence (prompt + completion)"
    )
    prompt_len: int | None = _bounded(None, MAX_TOKENS, "tokens", gt=0)
    completion_len: int | None = _bounded(None, MAX_TOKENS, "tokens", gt=0)
    batch_size: int = _bounded(
        1, MAX_BATCH, "rows per GPU", gt=0, description="micro-batch per GPU"
    )
    grad_accum: int = _bounded(8, MAX_BATCH, "micro-batches per step", gt=0)
    precision: Precision = Precision.bf16_mixed
    optimizer: Optimizer = Optimizer.adamw
    grad_checkpointing: bool = True
    attention: Attention = Attention.sdpa
    gpu: str = "a100-80gb"
    num_gpus: int = _bounded(
        1, MAX_GPUS_PER_NODE, "GPUs per node", gt=0, description="GPUs per node"
    )
    nodes: int = _bounded(1, MAX_NODES, "nodes", gt=0)
    sharding: Sharding = Sharding.none
    offload: Offload = Offload.none
    num_generations: int | None = _bounded(
        None,
        MAX_GENERATIONS,
        "completions per prompt",
        ge=2,
        description="GRPO/RLOO completions per prompt; None = the method's TRL default",
    )
    generation: Generation = Field(
        Generation.hf,
        description="GRPO/RLOO: transformers' generate (hf), or vLLM colocated with training "
        "or as a server on GPUs of its own",
    )
    vllm_memory: float | None = Field(
        None,
        gt=0,
        lt=1,
        allow_inf_nan=False,
        description="vllm-colocate: the share of each GPU the vLLM engine takes "
        "(vllm_gpu_memory_utilization); None = TRL's default",
    )
    vllm_server_gpus: int | None = _bounded(
        None,
        MAX_GPUS_PER_NODE,
        "GPUs",
        gt=0,
        description="vllm-server: GPUs the server takes beside the training GPUs (its "
        "tensor-parallel size); None = 1",
    )
    precompute_ref_log_probs: bool = False
    beta: float | None = _bounded(
        None, MAX_BETA, "", ge=0, allow_inf_nan=False, description="KL weight; None = TRL's default"
    )
    ppo_epochs: int = _bounded(4, MAX_PPO_EPOCHS, "epochs", gt=0)
    samples: int | None = _bounded(None, MAX_SAMPLES, "rows", gt=0)
    dataset: str | None = None
    epochs: float = _bounded(1.0, MAX_EPOCHS, "epochs", gt=0, allow_inf_nan=False)
    calibration: str | None = Field(
        default=None,
        description="the calibration store to learn from and add to; None = "
        "$ADVISOR_CALIBRATION, else the user cache (planner.calibration.store_path)",
    )

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_alias(cls, value: Any) -> Any:
        return parse_precision(value)

    @field_validator("generation")
    @classmethod
    def _generation_method(cls, value: Generation, info: ValidationInfo) -> Generation:
        method = info.data.get("method")
        if value is not Generation.hf and method is not None and method.value not in VLLM_METHODS:
            raise ValueError(
                f"{value.value} is for grpo and rloo (TRL's vLLM modes), not {method.value}"
            )
        return value

    @field_validator("vllm_memory")
    @classmethod
    def _colocate_only(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("generation") is not Generation.vllm_colocate:
            raise ValueError("the vLLM engine's share is for generation vllm-colocate")
        return value

    @field_validator("vllm_server_gpus")
    @classmethod
    def _server_only(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("generation") is not Generation.vllm_server:
            raise ValueError("the server's GPU count is for generation vllm-server")
        return value

    @field_validator("completion_len")
    @classmethod
    def _total_length(cls, value: int | None, info: ValidationInfo) -> int | None:
        prompt = info.data.get("prompt_len")
        if value is not None and prompt is not None and prompt + value > MAX_TOKENS:
            raise ValueError(f"prompt + completion is at most {MAX_TOKENS:,} tokens")
        return value

    @model_validator(mode="after")
    def _lengths(self) -> PlanRequest:
        if self.prompt_len is not None and self.completion_len is not None:
            self.seq_len = self.prompt_len + self.completion_len
        if self.num_generations is None:
            self.num_generations = NUM_GENERATIONS.get(self.method.value)
        return self

    @property
    def world_size(self) -> int:
        return self.num_gpus * self.nodes

    @property
    def colocated_vllm_share(self) -> float:
        """The share of each training GPU a colocated vLLM engine takes: `vllm_memory`, else
        TRL's `vllm_gpu_memory_utilization` default; 0 unless generation is vllm-colocate."""
        if self.generation is not Generation.vllm_colocate:
            return 0.0
        return self.vllm_memory or VLLM_GPU_MEMORY_UTILIZATION

    @property
    def vllm_server_gpu_count(self) -> int:
        """GPUs a vLLM server takes beside the training GPUs (its tensor-parallel size):
        `vllm_server_gpus`, else 1; 0 unless generation is vllm-server."""
        if self.generation is not Generation.vllm_server:
            return 0
        return self.vllm_server_gpus or 1

    def rows_per_step(self, processes: int | None = None) -> int:
        """Rows per optimizer step (completions for GRPO / RLOO): micro-batch × gradient
        accumulation × processes, the run's GPUs unless given (TRL's effective batch)."""
        return self.batch_size * self.grad_accum * (processes or self.world_size)

    def prompt_and_completion(self) -> tuple[int, int]:
        """Prompt and completion lengths: given ones, else half and half of seq_len."""
        if self.prompt_len is not None and self.completion_len is not None:
            return self.prompt_len, self.completion_len
        if self.prompt_len is not None:
            return self.prompt_len, max(1, self.seq_len - self.prompt_len)
        if self.completion_len is not None:
            return max(1, self.seq_len - self.completion_len), self.completion_len
        half = self.seq_len // 2
        return self.seq_len - half, half


def request_problem(error: ValidationError) -> tuple[str | None, str]:
    """The first problem in a PlanRequest's validation error, as (field, message): the CLI puts
    the flag before the message, the wizard the knob's name. A ceiling is named with its unit."""
    problem = error.errors()[0]
    field = str(problem["loc"][0]) if problem["loc"] else None
    ctx = problem.get("ctx") or {}
    if problem["type"] == "less_than_equal" and field in PlanRequest.model_fields:
        extra = PlanRequest.model_fields[field].json_schema_extra or {}
        unit = extra.get("unit", "") if isinstance(extra, dict) else ""
        return field, f"at most {_number(ctx['le'])} {unit}".rstrip()
    message = str(problem["msg"]).removeprefix("Value error, ")
    return field, message[:1].lower() + message[1:]


def _number(value: Any) -> str:
    """1048576 as 1,048,576; 1000.0 as 1,000; 0.5 as 0.5."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}"


COMPONENTS = (
    "weights",
    "trainable_weights",
    "gradients",
    "optimizer",
    "activations",
    "logits",
    "reference_model",
    "reward_model",
    "value_model",
    "generation_kv_cache",
    "vllm_engine",
    "runtime_overhead",
)
"""Memory components, in the order the output lists them (the `plan --json` contract)."""


class ModelSummary(BaseModel):
    name: str
    params: int
    trainable_params: int
    source: str
    representative_of: str | None = None
    model_type: str | None = None
    estimate_path: str = Field(
        default="analytic",
        description="where the memory figures come from: analytic (formulas of an architecture "
        "record) or traced (a step traced on fake tensors: the general path)",
    )
    trace_seconds: float | None = Field(
        default=None, description="traced path: seconds the traced step took"
    )
    notes: list[str] = Field(
        default_factory=list, description="what planning this model left out or assumed"
    )


class GpuSummary(BaseModel):
    name: str
    memory_gib: float
    count: int = Field(description="GPUs in the job (per node x nodes, and a vLLM server's)")
    per_node: int = 1
    nodes: int = 1
    vllm_server: int = Field(
        default=0, description="GPUs a vLLM server takes beside the training GPUs (in count)"
    )


class GenerationPlan(BaseModel):
    """Where GRPO / RLOO generate with vLLM, and whether the engine holds its weights and the
    KV cache of a whole sequence; per GPU of the engine (colocated: every training GPU)."""

    mode: Generation
    gpus: int = Field(description="the engine's GPUs: 1 colocated, the server's otherwise")
    tensor_parallel: int = Field(description="GPUs the model is split over (vLLM's TP size)")
    engine_gib: float = Field(description="what vLLM takes of each of its GPUs")
    weights_gib: float = Field(description="the model's weights inside it, per GPU")
    kv_cache_gib: float = Field(description="the rest of its share: KV cache, per GPU")
    kv_tokens: int = Field(description="tokens the KV cache holds")
    sequence_tokens: int = Field(description="prompt + completion (vllm_max_model_length)")
    generation_batch: int = Field(description="sequences the engine is asked for per step")
    sequences_at_once: int = Field(description="sequences its KV cache holds at once")
    fits: bool
    summary: str = Field(description="the line the plan prints")


class Calibration(BaseModel):
    """What measured runs taught the plan: a correction to the runtime overhead only (CUDA
    context, workspaces, allocator slack); the tensor-level estimate is never changed."""

    runs: int = Field(description="measured runs it learned from")
    gpu: str = Field(description="the GPU they ran on, as the plan names it")
    stack: str = Field(description="the driver / CUDA / torch versions they ran with")
    correction_gib: float = Field(description="added to the runtime overhead (may be negative)")
    spread_gib: float = Field(
        description="the runs' standard deviation plus what the shrinkage held back"
    )
    model_runtime_gib: float = Field(description="the runtime overhead before the correction")
    applies_to: str = Field(default="runtime_overhead", description="the one component it changes")
    source: str = Field(description="the calibration store it was read from")


class MemoryEstimate(BaseModel):
    """Peak memory per GPU, by component, in GiB (2^30 bytes)."""

    per_gpu_peak_gib: float = Field(description="what NVML would show for the training process")
    tensor_peak_gib: float = Field(description="tensors live at the peak, without runtime overhead")
    components_gib: dict[str, float]
    live_at_peak: list[str] = Field(description="components that are live together at the peak")
    peak_phase: str = Field(description="the part of the step where the peak falls")
    phases_gib: dict[str, float] = Field(
        default_factory=dict, description="tensor memory at each phase's high point"
    )
    capacity_gib: float
    headroom_gib: float
    cpu_offload_gib: float = 0.0
    calibration: Calibration | None = Field(
        default=None, description="the measured runs that corrected the runtime overhead, or null"
    )

    @field_validator("components_gib")
    @classmethod
    def _every_component(cls, value: dict[str, float]) -> dict[str, float]:
        """Plans saved before a component existed read it as 0 (vllm_engine came later)."""
        return {name: 0.0 for name in COMPONENTS} | value


class TimeEstimate(BaseModel):
    """Wall-clock time per optimizer step and for the run."""

    step_seconds: float
    tokens_per_second: float
    total_hours: float | None = None
    total_steps: int | None = None
    samples: int | None = None
    flops_per_step: float
    mfu: float
    phases_seconds: dict[str, float] = Field(default_factory=dict)


class PrecisionPlan(BaseModel):
    """The run's numbers as it will really hold them (the `plan --json` `precision` object)."""

    load_dtype: str = Field(description="dtype the weights are loaded in: the TRL YAML's `dtype`")
    autocast: str | None = Field(description="'bf16' / 'fp16' autocast, or None")
    master_weights: bool = Field(description="the optimizer updates an fp32 copy of the weights")
    optimizer_state_dtype: str = Field(description="dtype of the optimizer's moments")
    weight_bytes: float = Field(description="bytes per trained weight held on the GPU")
    gradient_bytes: float
    optimizer_bytes: float = Field(
        description="bytes per trained parameter of optimizer state (fp32 master included)"
    )
    notes: list[str] = Field(default_factory=list)


class Plan(BaseModel):
    """A capacity estimate: every input echoed, memory by component, time, verdict, advice."""

    model: ModelSummary
    method: Method
    tuning: Tuning
    gpu: GpuSummary
    request: PlanRequest
    precision: PrecisionPlan | None = Field(
        default=None, description="always set by the planner; absent in plans saved before it"
    )
    memory: MemoryEstimate
    time: TimeEstimate
    generation: GenerationPlan | None = Field(
        default=None, description="GRPO/RLOO with vLLM: the engine's memory; null otherwise"
    )
    fits: bool
    suggestions: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    assumptions: list[str] = Field(default_factory=list)
    fit_explanation: str | None = Field(
        default=None,
        description="with --fit: what the sharding costs in communication per step over the "
        "interconnect, and why it beat the other shardings on as many GPUs",
    )

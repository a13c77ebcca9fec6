"""Wall-clock time per optimizer step and per run for each method's loop.

Compute-bound parts (training forward/backward, reference and reward forwards, prompt prefill)
are FLOPs / (GPU TFLOPs × MFU); rollout decoding is bandwidth-bound (bytes read per token /
HBM bandwidth); sharded all-gathers and gradient reductions are bytes / interconnect, partly
hidden behind compute. Every assumed rate lives in profiles/constants.toml [throughput].
"""

from __future__ import annotations

from dataclasses import dataclass

from planner import parameters, vllm_engine
from planner.constants import FP32_BYTES, HALF_BYTES, throughput
from planner.memory import (
    base_weight_bytes,
    compute_bytes,
    effective_sharding,
    generation_batch,
    is_deepspeed,
    kv_cache_bytes_per_token,
    shards_params,
    world,
)
from planner.methods import Loop, loop, sequence_tokens
from planner.recipes import recipe
from planner.specs import (
    Generation,
    GenerationPlan,
    GpuSpec,
    ModelSpec,
    Offload,
    PlanRequest,
    Precision,
    Sharding,
    Tuning,
)


def matmul_params(spec: ModelSpec) -> int:
    """Parameters a token multiplies by: the active ones (`parameters.active_params`: only the
    top-k experts of a MoE layer run) but the input embedding lookup (which costs no FLOPs); a
    tied lm_head still multiplies (Kaplan et al. 2020, N excludes embeddings)."""
    active = parameters.active_params(spec)
    embedding = parameters.embedding_params(spec)
    return active if spec.tie_word_embeddings else active - embedding


def forward_flops_per_token(spec: ModelSpec, seq: int) -> float:
    """Forward FLOPs per token: 2·N + 2·L·s·d_attn (Kaplan et al. 2020, Table 1; causal
    attention halves the 4·L·s·d_attn score and value matmuls)."""
    n = matmul_params(spec)
    attention = 2 * spec.num_layers * seq * parameters.q_width(spec)
    return 2.0 * n + attention


def train_flops_per_token(spec: ModelSpec, request: PlanRequest, seq: int) -> float:
    """Training FLOPs per token: forward 1× + backward 2× (6·N, Kaplan et al. 2020); frozen
    weights skip their weight-gradient matmuls (LoRA ≈ 4·N, Hu et al. 2021); recomputation
    adds one forward (Korthikanti et al. 2022)."""
    forward = forward_flops_per_token(spec, seq)
    # Frozen weights need activation gradients only, not weight gradients.
    backward = 2 * forward if request.tuning is Tuning.full else forward
    recompute = forward if request.grad_checkpointing else 0.0
    return forward + backward + recompute


def dense_tflops(gpu: GpuSpec, request: PlanRequest) -> float:
    """The card's dense TFLOPs for the run's precision (fp32 runs get TF32-less fp32)."""
    if request.precision is Precision.fp32:
        return gpu.fp32_tflops or gpu.fp16_tflops / 8
    if request.precision.half == "bf16" and gpu.supports_bf16:
        return gpu.bf16_tflops
    return gpu.fp16_tflops


def mfu(request: PlanRequest) -> float:
    """Assumed model-FLOPs utilisation by tuning mode (profiles/constants.toml)."""
    key = {Tuning.full: "train_mfu", Tuning.lora: "lora_mfu", Tuning.qlora: "qlora_mfu"}
    return throughput(key[request.tuning])


@dataclass
class StepTime:
    seconds: float
    flops: float
    tokens: float
    phases: dict[str, float]


def _decode_seconds(spec: ModelSpec, request: PlanRequest, gpu: GpuSpec, lp: Loop) -> float:
    """Rollout decoding: each new token reads the weights and the KV cache so far;
    time ≈ completion × (weight bytes + mean KV bytes) / (HBM bandwidth × efficiency)
    (Pope et al. 2022: decoding is bandwidth-bound)."""
    prompt, completion = request.prompt_and_completion()
    rows = request.rows_per_step(processes=1)
    chunk = generation_batch(request, lp)
    chunks = max(1, -(-rows // chunk))
    weights = base_weight_bytes(spec, request)
    kv_per_token = kv_cache_bytes_per_token(spec, request)
    mean_context = prompt + completion / 2
    bytes_per_step = weights + chunk * mean_context * kv_per_token
    bandwidth = gpu.hbm_gbps * 1e9 * throughput("decode_bandwidth_efficiency")
    decode = chunks * completion * bytes_per_step / bandwidth
    prefill_flops = rows * prompt * forward_flops_per_token(spec, prompt)
    prefill = prefill_flops / (dense_tflops(gpu, request) * 1e12 * throughput("prefill_mfu"))
    return decode + prefill


def _vllm_seconds(
    spec: ModelSpec, request: PlanRequest, gpu: GpuSpec, plan: GenerationPlan
) -> tuple[float, float]:
    """(generation, weight sync) with vLLM: the same bandwidth-bound decoding as `generate`
    (`_decode_seconds`, at the same efficiency: vLLM's own speed-up is not assumed), over the
    engine's GPUs (a server's tensor-parallel GPUs add their bandwidth and FLOPs), in as many
    waves as its KV cache needs (`vllm_engine.waves`); then the new weights pushed into the
    engine after the step, 16-bit: over the interconnect to a server (TRL's NCCL broadcast,
    VLLMClient.update_named_param), one HBM read and write in process when colocated."""
    prompt, completion = request.prompt_and_completion()
    weights = vllm_engine.weight_bytes(spec, request)
    at_once = min(plan.generation_batch, max(1, plan.sequences_at_once))
    mean_context = prompt + completion / 2
    bytes_per_token = weights + at_once * mean_context * vllm_engine.kv_bytes_per_token(spec)
    bandwidth = plan.gpus * gpu.hbm_gbps * 1e9 * throughput("decode_bandwidth_efficiency")
    decode = vllm_engine.waves(plan) * completion * bytes_per_token / bandwidth
    prefill_flops = plan.generation_batch * prompt * forward_flops_per_token(spec, prompt)
    peak = plan.gpus * dense_tflops(gpu, request) * 1e12 * throughput("prefill_mfu")
    if request.generation is Generation.vllm_server:
        sync = weights / (gpu.interconnect_gbps * 1e9)
    else:
        sync = 2 * weights / (gpu.hbm_gbps * 1e9)
    return decode + prefill_flops / peak, sync


def gathered_weight_bytes(spec: ModelSpec, request: PlanRequest) -> int:
    """The policy's weights in the compute dtype, as ZeRO-3 / FSDP all-gather them and CPU
    offload of the parameters moves them over PCIe."""
    return parameters.count_params(spec) * compute_bytes(request)


@dataclass
class Communication:
    """The collectives of one optimizer step on one GPU, and the link they run over."""

    collectives: str
    """What is exchanged, e.g. "all-gather + reduce-scatter"."""
    gradient_bytes: float
    """Gradient bytes reduced per step (before the ring factor)."""
    weight_bytes: float
    """Weight bytes all-gathered per step (before the ring factor), 0 without ZeRO-3 / FSDP."""
    volume_bytes: float
    """Bytes each GPU sends per step: the ring factors applied."""
    link: str
    bandwidth_gbps: float
    seconds: float


def communication(spec: ModelSpec, request: PlanRequest, gpu: GpuSpec) -> Communication:
    """Collectives per optimizer step. Gradients: a ring all-reduce sends 2·(g−1)/g × bytes
    per GPU (Patarasuk & Yuan 2009), as DDP and ZeRO-1/2 (reduce-scatter + all-gather of the
    updated weights) do once per step; ZeRO-3 / FSDP reduce-scatter them, (g−1)/g × bytes,
    and all-gather the 16-bit weights in forward and backward of every micro-batch, 2·(g−1)/g
    × weight bytes: 1.5× DDP's volume at one micro-batch (Rajbhandari et al. 2020, §7).
    Within a node the ring runs over the GPU's link, across nodes over the slower inter-node
    link (the GPU profile's `internode_gbps`)."""
    g = world(request)
    link = gpu.interconnect or "the GPU interconnect"
    if g == 1:
        return Communication("none", 0.0, 0.0, 0.0, link, gpu.interconnect_gbps, 0.0)
    sharding = effective_sharding(request)
    # Gradients are reduced in 16 bits under full tuning, LoRA adapters' in fp32.
    grad_width = HALF_BYTES if request.tuning is Tuning.full else FP32_BYTES
    grads = parameters.trainable_params(spec, request) * grad_width
    ring = (g - 1) / g
    weights = 0.0
    if shards_params(sharding):
        weights = 2.0 * gathered_weight_bytes(spec, request) * request.grad_accum
        volume = ring * (grads + weights)
        collectives = "all-gather + reduce-scatter"
    else:
        volume = 2 * ring * grads
        collectives = "all-reduce"
    link, bandwidth = collective_link(gpu, request.nodes)
    return Communication(
        collectives, grads, weights, volume, link, bandwidth, volume / (bandwidth * 1e9)
    )


def collective_link(gpu: GpuSpec, nodes: int) -> tuple[str, float]:
    """The link a run's collectives cross and its GB/s per GPU: the GPU's interconnect within
    a node; across nodes the rings run over the slower inter-node link (the GPU profile's
    `internode_gbps`, else profiles/constants.toml's)."""
    link, bandwidth = gpu.interconnect or "the GPU interconnect", gpu.interconnect_gbps
    if nodes > 1:
        internode = gpu.internode_gbps or throughput("internode_gbps")
        if internode < bandwidth:
            bandwidth, link = internode, gpu.internode or "the inter-node network"
    return link, bandwidth


def _offload_seconds(spec: ModelSpec, request: PlanRequest) -> float:
    """CPU offload: the optimizer step runs on the CPU (DeepSpeed CPU Adam) and gradients and
    weights cross PCIe once per step (Ren et al. 2021, ZeRO-Offload)."""
    if request.offload is Offload.none:
        return 0.0
    sharding = effective_sharding(request)
    share = parameters.trainable_params(spec, request) / world(request)
    cpu_step = share / throughput("cpu_adam_params_per_second")
    # 16-bit gradients to the CPU, 16-bit updated weights back.
    transfer = share * (HALF_BYTES + HALF_BYTES) / (throughput("pcie_gbps") * 1e9)
    if request.offload is Offload.optimizer_params and (
        sharding is Sharding.fsdp or is_deepspeed(sharding)
    ):
        weights = gathered_weight_bytes(spec, request)
        transfer += 2 * weights * request.grad_accum / (throughput("pcie_gbps") * 1e9)
    return cpu_step + transfer


def estimate_time(
    spec: ModelSpec, request: PlanRequest, gpu: GpuSpec, generation: GenerationPlan | None = None
) -> StepTime:
    """Seconds per optimizer step on each GPU, by phase (`generation`: the vLLM engine's plan,
    made here when not given)."""
    lp = loop(request)
    seq, _ = sequence_tokens(request, lp)
    rows = request.rows_per_step(processes=1)
    train_tokens = rows * lp.rows_per_sample * seq
    peak = dense_tflops(gpu, request) * 1e12
    phases: dict[str, float] = {}
    train_flops = train_tokens * train_flops_per_token(spec, request, seq)
    if lp.value_model:
        train_flops *= 2  # the value model trains beside the policy
    epochs = request.ppo_epochs if lp.method.value == "ppo" else 1
    train_flops *= epochs
    phases["policy forward/backward"] = train_flops / (peak * mfu(request))
    extra_flops = 0.0
    if lp.reference != "none":
        ref_tokens = rows * (lp.rows_per_sample + lp.no_grad_rows_per_sample) * seq
        extra_flops += ref_tokens * forward_flops_per_token(spec, seq)
    if lp.no_grad_rows_per_sample:
        extra_flops += rows * lp.no_grad_rows_per_sample * seq * forward_flops_per_token(spec, seq)
    if lp.reward_model:
        # PPO scores its rollouts with the policy's log-probs, the value and the reward model.
        extra_flops += 3 * rows * seq * forward_flops_per_token(spec, seq)
    if extra_flops:
        phases["reference / scoring forwards"] = extra_flops / (peak * throughput("train_mfu"))
    if lp.generates_in_process:
        phases["rollout generation"] = _decode_seconds(spec, request, gpu, lp)
    elif lp.generates:
        # TRL 1.12 waits for the completions before training on them, in both vLLM modes.
        plan = generation or vllm_engine.generation_plan(spec, gpu, request)
        if plan is not None:
            rollout, sync = _vllm_seconds(spec, request, gpu, plan)
            phases["rollout generation (vLLM)"] = rollout
            phases["weight sync to vLLM"] = sync
    comm = communication(spec, request, gpu).seconds
    if comm:
        phases["communication (not overlapped)"] = comm * (1 - throughput("comm_overlap"))
    offload = _offload_seconds(spec, request)
    if offload:
        phases["CPU offload"] = offload
    phases["host overhead"] = throughput("step_overhead_seconds")
    seconds = sum(phases.values())
    return StepTime(seconds, train_flops + extra_flops, train_tokens * world(request), phases)


def samples_per_step(request: PlanRequest) -> int:
    """Dataset rows consumed per optimizer step across the job; GRPO/RLOO's batch counts
    completions, so one prompt fills `num_generations` of it (TRL 1.12 GRPOConfig / RLOOConfig docs)."""
    rows = request.rows_per_step()
    if recipe(request.method).num_generations is not None and request.num_generations:
        return max(1, rows // request.num_generations)
    return rows

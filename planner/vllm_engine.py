"""vLLM generation for GRPO and RLOO as TRL 1.12 runs it (`use_vllm`, `vllm_mode`).

- **colocate**: a vLLM engine inside each training process takes `vllm_gpu_memory_utilization`
  of its GPU for the whole run (TRL's default leaves sleep mode off), tensor-parallel size 1
  (TRL's default); each engine generates its process's batch.
- **server**: `trl vllm-serve` on GPUs of its own, the model split over them by tensor
  parallelism; the trainer's main process sends it every prompt of a step and pushes the new
  weights after each optimizer step.

Inside its share vLLM holds the model's weights and, in what is left, the KV cache (Kwon et al.
2023, PagedAttention: the cache is allocated up front in blocks); vLLM refuses to start when the
cache cannot hold one whole sequence, and runs fewer sequences at once when it cannot hold the
batch. Pure Python: vLLM itself is never imported here.
"""

from __future__ import annotations

import math

from planner import parameters
from planner.constants import GIB, HALF_BYTES
from planner.errors import InputError
from planner.memory import nf4_bytes_per_param
from planner.specs import (
    Generation,
    GenerationPlan,
    GpuSpec,
    ModelSpec,
    PlanRequest,
    Tuning,
)
from planner.trl_defaults import VLLM_SERVE_GPU_MEMORY_UTILIZATION


def uses_vllm(request: PlanRequest) -> bool:
    """The run generates with vLLM (TRL's `use_vllm`)."""
    return request.generation is not Generation.hf


def weight_bytes(spec: ModelSpec, request: PlanRequest) -> float:
    """The model's weights as vLLM holds them: 16-bit (vLLM's dtype "auto" serves fp32 and fp16
    checkpoints in fp16, bf16 ones in bf16); a colocated QLoRA run quantises the decoder linears
    to 4-bit NF4 in flight (TRL passes quantization="bitsandbytes"), QLoRA paper §3 sizes."""
    params = parameters.count_params(spec)
    if request.tuning is Tuning.qlora and request.generation is Generation.vllm_colocate:
        linear = parameters.decoder_linear_params(spec)
        return (params - linear) * HALF_BYTES + linear * nf4_bytes_per_param()
    return params * HALF_BYTES


def kv_bytes_per_token(spec: ModelSpec) -> int:
    """vLLM's KV cache per token: 2 (k, v) × layers × kv_heads × head_dim × 2 bytes (the cache
    dtype "auto" is the 16-bit model dtype; Pope et al. 2022 §2)."""
    return 2 * spec.num_layers * parameters.kv_width(spec) * HALF_BYTES


def check_server_parallelism(spec: ModelSpec, request: PlanRequest) -> None:
    """vLLM splits attention heads over the tensor-parallel GPUs: their count must divide the
    heads (vLLM's "Total number of attention heads must be divisible by tensor parallel size")."""
    gpus = request.vllm_server_gpu_count
    if gpus > 1 and spec.num_heads % gpus:
        raise InputError(
            f"--vllm-server-gpus {gpus}: vLLM splits {spec.name}'s {spec.num_heads} attention "
            "heads over the server's GPUs, so their count must divide it"
        )


def generation_plan(spec: ModelSpec, gpu: GpuSpec, request: PlanRequest) -> GenerationPlan | None:
    """Where the completions are generated and whether the vLLM engine holds what it must:
    its weights and, in the rest of its share, the KV cache of at least one whole sequence
    (prompt + completion, TRL's `vllm_max_model_length` as written); None for transformers'
    generate. Per GPU: colocated, every training GPU; server, each of its GPUs (weights and
    KV heads split over them, KV heads repeated where there are fewer than GPUs)."""
    if not uses_vllm(request):
        return None
    check_server_parallelism(spec, request)
    prompt, completion = request.prompt_and_completion()
    sequence = prompt + completion
    colocated = request.generation is Generation.vllm_colocate
    gpus = 1 if colocated else request.vllm_server_gpu_count
    share = request.colocated_vllm_share if colocated else VLLM_SERVE_GPU_MEMORY_UTILIZATION
    engine = share * gpu.memory_bytes
    weights = weight_bytes(spec, request) / gpus
    kv_split = min(gpus, spec.num_kv_heads)
    kv_per_token = kv_bytes_per_token(spec) / kv_split
    kv_room = max(0.0, engine - weights)
    tokens = int(kv_room // kv_per_token)
    # Colocated engines generate their own process's batch; the server every process's.
    batch = request.rows_per_step(processes=1) if colocated else request.rows_per_step()
    at_once = min(batch, tokens // sequence)
    where = (
        f"a vLLM engine in each training process, {share:g} × {gpu.memory_gib:g} GiB"
        if colocated
        else f"a vLLM server on {gpus} more {gpu.name} (tensor-parallel {gpus}), "
        f"{share:g} × {gpu.memory_gib:g} GiB each"
    )
    if weights >= engine:
        verdict = (
            f"the weights ({weights / GIB:.1f} GiB per GPU) do not fit in the engine's "
            f"{engine / GIB:.1f} GiB"
        )
    elif at_once < 1:
        verdict = (
            f"the {kv_room / GIB:.1f} GiB left after the weights cannot cache one "
            f"{sequence}-token sequence: vLLM will not start"
        )
    else:
        verdict = (
            f"weights {weights / GIB:.1f} GiB + KV cache {kv_room / GIB:.1f} GiB "
            f"({tokens:,} tokens): {at_once} of the {batch} sequences generated at once"
        )
    return GenerationPlan(
        mode=request.generation,
        gpus=gpus,
        tensor_parallel=gpus,
        engine_gib=round(engine / GIB, 2),
        weights_gib=round(weights / GIB, 2),
        kv_cache_gib=round(kv_room / GIB, 2),
        kv_tokens=tokens,
        sequence_tokens=sequence,
        generation_batch=batch,
        sequences_at_once=max(0, at_once),
        fits=weights < engine and at_once >= 1,
        summary=f"Generation: {where} — {verdict}",
    )


def waves(plan: GenerationPlan) -> int:
    """Rounds in which vLLM generates the batch when its KV cache holds only part of it (the
    scheduler waits for free blocks, Kwon et al. 2023 §4.5)."""
    return max(1, math.ceil(plan.generation_batch / max(1, plan.sequences_at_once)))

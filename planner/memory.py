"""Peak GPU memory per component for one training step of each method, per GPU, in bytes.

Every quantity is a named function whose docstring gives its formula and its source. The
step is split into phases (rollout generation, reference forward, policy forward/backward,
optimizer step); the peak is the largest phase, and the components live in that phase are
what `live_at_peak` lists. The tensor-level part is checked against a traced step on fake
tensors (`planner.trace`); the runtime overhead (CUDA context, allocator slack, workspaces)
comes from `profiles/constants.toml`.

"Traced" below means counted tensor by tensor in a step run on fake tensors by `planner.trace`
(transformers 5.24, TRL 1.12); tests/test_trace_agreement.py checks that the estimate's peak
stays within 5% of the traced peak across methods, architectures and precisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from planner import deepspeed, parameters, precision
from planner.architectures import architecture
from planner.constants import FP32_BYTES, GIB, HALF_BYTES, runtime
from planner.errors import InputError
from planner.methods import Loop, loop, sequence_tokens
from planner.recipes import lora_dropout, recipe
from planner.specs import (
    Attention,
    LoraTargets,
    Method,
    ModelSpec,
    Offload,
    PlanRequest,
    Sharding,
    Tuning,
)

# ----------------------------------------------------------------------------- dtypes


compute_bytes = precision.compute_bytes


def policy_weight_bytes(request: PlanRequest) -> float:
    """Bytes per policy weight as held on the GPU (`planner.precision.trained_bytes`); a LoRA
    base is frozen in the compute dtype."""
    if request.tuning is not Tuning.full:
        return compute_bytes(request)
    return precision.trained_bytes(request)[0]


def nf4_bytes_per_param() -> float:
    """QLoRA base weight: 4-bit NF4 (0.5 B) + 8-bit absmax per 64 + fp32 absmax per 64·256
    with double quantisation (Dettmers et al. 2023, QLoRA §3; bitsandbytes blocksize 64)."""
    return 0.5 + 1 / 64 + FP32_BYTES / (64 * 256)


# ----------------------------------------------------------------------------- sharding


def world(request: PlanRequest) -> int:
    return request.world_size


effective_sharding = precision.effective_sharding
is_deepspeed = precision.is_deepspeed


def shards_params(sharding: Sharding) -> bool:
    return sharding in (Sharding.zero3, Sharding.fsdp)


def shards_grads(sharding: Sharding) -> bool:
    return sharding in (Sharding.zero2, Sharding.zero3, Sharding.fsdp)


def shards_optimizer(sharding: Sharding) -> bool:
    return sharding in (Sharding.zero1, Sharding.zero2, Sharding.zero3, Sharding.fsdp)


def check_offload(request: PlanRequest) -> None:
    """CPU offload needs a sharded optimizer (ZeRO-Offload, Ren et al. 2021; FSDP CPUOffload)."""
    sharding = effective_sharding(request)
    if request.offload is Offload.none:
        return
    if not shards_optimizer(sharding):
        raise InputError(
            "CPU offload needs --sharding zero1, zero2, zero3 or fsdp "
            f"(got {sharding.value}); DeepSpeed or FSDP moves the states to the CPU"
        )
    if request.offload is Offload.optimizer_params and sharding not in (
        Sharding.zero3,
        Sharding.fsdp,
    ):
        raise InputError("--offload optimizer+params needs --sharding zero3 or fsdp")
    if request.offload is Offload.optimizer and sharding is Sharding.fsdp:
        raise InputError(
            "FSDP offloads parameters and optimizer together: use --offload optimizer+params"
        )


# ----------------------------------------------------------------------------- model states


@dataclass
class ModelStates:
    """Bytes per GPU of weights, gradients and optimizer states, and what went to the CPU."""

    weights: float = 0.0
    trainable_weights: float = 0.0
    gradients: float = 0.0
    optimizer: float = 0.0
    gathered: float = 0.0
    """Transient: full-size weights of the layers gathered at once under ZeRO-3 / FSDP."""
    buckets: float = 0.0
    """DeepSpeed's gradient-reduction buckets, allocated at start-up (`planner.deepspeed`)."""
    step_transient: float = 0.0
    """Live during the optimizer step only: DeepSpeed's flattened 16-bit gradient partition and
    its fp32 copy (`planner.deepspeed.step_gradient_bytes`)."""
    cpu: float = 0.0
    notes: list[str] = field(default_factory=list)


def base_weight_bytes(spec: ModelSpec, request: PlanRequest) -> float:
    """Frozen or trained base weights: P × bytes (QLoRA: decoder linears in NF4, the rest in
    the compute dtype)."""
    params = parameters.model_params(spec, request)
    if request.tuning is Tuning.qlora:
        linear = parameters.decoder_linear_params(spec)
        return linear * nf4_bytes_per_param() + (params - linear) * compute_bytes(request)
    return params * policy_weight_bytes(request)


def frozen_model_bytes_per_param(request: PlanRequest) -> float:
    """A frozen copy (reference, reward model) is loaded as the policy is, with the run's
    `dtype` (TRL builds the reference from `model_init_kwargs`), and DeepSpeed casts it to
    16 bits (`trl.models.utils.prepare_deepspeed`); a LoRA base is in the compute dtype."""
    if request.tuning is not Tuning.full:
        return compute_bytes(request)
    if is_deepspeed(effective_sharding(request)) and request.precision.half:
        return HALF_BYTES
    return HALF_BYTES if precision.load_dtype(request) != "float32" else FP32_BYTES


def fsdp_gathered_bytes(spec: ModelSpec, request: PlanRequest) -> float:
    """The most 16-bit gathered bytes live at once under FSDP2 as accelerate wraps it (a unit per
    decoder layer, the input embedding, and [final norm, lm_head] kept gathered after forward).
    Full tuning, traced (planner.trace.sharded): in backward a unit holds its gathered
    parameters, their unsharded gradients and the reduce-scatter input while the next unit is
    prefetched, 3·layer + max(layer, embedding); at the start of backward the output head holds
    its parameters, a gathered copy and its reduce-scatter input, 3·(lm_head + norm), or tied to
    the embedding, 2·(embedding + norm) + a layer. LoRA: the unit in use plus the one prefetched
    (no gradients of the base), 2 × the largest module."""
    w = compute_bytes(request)
    if request.tuning is not Tuning.full:
        return 2 * parameters.largest_layer_params(spec) * w
    layer = parameters.decoder_layer_params(spec)
    embedding = parameters.embedding_params(spec)
    norm = parameters.final_norm_params(spec)
    if spec.tie_word_embeddings:
        head = 2 * (embedding + norm) + layer
    else:
        head = 3 * (parameters.lm_head_params(spec) + norm)
    return max(head, 3 * layer + max(layer, embedding)) * w


def model_states(spec: ModelSpec, request: PlanRequest) -> ModelStates:
    """Weights, gradients and optimizer states of the trained policy on one GPU.

    Bytes per trained parameter come from `planner.precision.trained_bytes`: mixed precision
    4 + 4 + 8, pure bf16 2 + 2 + 4, DeepSpeed 2 + 2 + 12 (ZeRO paper, Rajbhandari et al. 2020),
    accelerate's FSDP 4 + 4 + 8 sharded. LoRA: the base frozen in the compute dtype, adapters
    trained as `trained_bytes(adapters=True)` says.
    """
    sharding = effective_sharding(request)
    g = world(request)
    states = ModelStates()
    if request.tuning is Tuning.full:
        params = parameters.trainable_params(spec, request)
        weight, grad, opt = precision.trained_bytes(request)
        states.weights = params * weight
        states.gradients = params * grad
        states.optimizer = params * opt
        trainable_grad = states.gradients
    else:
        trainable = parameters.trainable_params(spec, request)
        weight, grad, opt = precision.trained_bytes(request, adapters=True)
        states.weights = base_weight_bytes(spec, request)
        states.trainable_weights = trainable * weight
        states.gradients = trainable * grad
        states.optimizer = trainable * opt
        trainable_grad = states.gradients

    if sharding is Sharding.zero3:
        largest = parameters.largest_layer_params(spec)
        states.gathered = deepspeed.gathered_params(request, largest) * compute_bytes(request)
    elif sharding is Sharding.fsdp:
        states.gathered = fsdp_gathered_bytes(spec, request)
    states.buckets = deepspeed.bucket_bytes(request)
    states.step_transient = deepspeed.step_gradient_bytes(
        request, parameters.trainable_params(spec, request)
    )
    if shards_params(sharding):
        states.weights /= g
        states.trainable_weights /= g
    if shards_grads(sharding):
        states.gradients /= g
    elif sharding is Sharding.ddp and g > 1:
        # DDP's reducer copies gradients into buckets unless gradient_as_bucket_view=True
        # (PyTorch DDP docs: the saving "will be equal to the total gradients size").
        states.gradients += trainable_grad
        states.notes.append("DDP bucket buffers hold a second copy of the gradients")
    if shards_optimizer(sharding):
        states.optimizer /= g

    if request.offload is not Offload.none:
        states.cpu += states.optimizer
        states.optimizer = 0.0
        if is_deepspeed(sharding):
            # ZeRO-Offload keeps fp32 gradient partitions (1/g each) on the CPU as well, for
            # the CPU Adam step (Ren et al. 2021; DeepSpeed's estimate_zero2_model_states_mem_
            # needs counts them in its 2 + 4 + 12 CPU bytes per parameter).
            partition = states.gradients if shards_grads(sharding) else states.gradients / g
            states.cpu += partition * FP32_BYTES / grad
            states.gradients = 0.0
        if request.offload is Offload.optimizer_params:
            states.cpu += states.weights + states.trainable_weights
            states.weights = 0.0
            states.trainable_weights = 0.0
            if sharding is Sharding.fsdp:
                states.cpu += states.gradients
                states.gradients = 0.0
    return states


# ----------------------------------------------------------------------------- activations


def gemma_style(spec: ModelSpec) -> bool:
    """Gemma's RMSNorm computes in fp32 and scales by (1 + weight) in fp32 too, OLMo-2's by
    its weight in fp32 (the architecture's `norm` trait): both save an fp32 normalised value."""
    return architecture(spec.model_type).norm in ("gemma", "olmo2")


def norm_bytes_per_token(spec: ModelSpec, request: PlanRequest) -> float:
    """One RMSNorm's saved tensors per token. Llama-style (HF LlamaRMSNorm): the fp32 input
    (4·h, the input itself in fp32 runs) and the w-dtype normalised value before the weight,
    (4 + w)·h; Gemma-style: the fp32 input and the fp32 normalised value, 8·h. Counted from
    autograd's saved tensors of one decoder layer (checked against the traced step in
    tests/test_trace_agreement.py)."""
    w = compute_bytes(request)
    if architecture(spec.model_type).norm == "layernorm":
        return layernorm_bytes_per_token(spec, request)
    if gemma_style(spec) or residual_bytes(request) == FP32_BYTES:
        return 2 * FP32_BYTES * spec.hidden_size  # fp32 input and fp32 normalised value
    return (FP32_BYTES + w) * spec.hidden_size


def qk_norm_bytes_per_token(spec: ModelSpec, request: PlanRequest) -> float:
    """q and k RMSNorms that scale in fp32 (OLMo-2's over the whole projections, Gemma-3's per
    head), per token: trained, the fp32 input and fp32 normalised value of each, 8·(a·d + k·d),
    less w·a·d that the attention's count already holds (not under autocast over fp32 weights);
    frozen (LoRA), the fp32 inputs, 4·(a·d + k·d) (traced). Llama-style per-head q/k norms
    (Qwen3, Qwen3-MoE) keep the fp32 input and the w-dtype normalised value, (4 + w)·(a·d + k·d),
    frozen the fp32 input alone (counted with saved-tensor hooks; traced)."""
    if not architecture(spec.model_type).qk_norm:
        return 0.0
    q, kv = parameters.q_width(spec), parameters.kv_width(spec)
    if request.tuning is not Tuning.full:
        return FP32_BYTES * (q + kv)
    if not gemma_style(spec):
        return (FP32_BYTES + compute_bytes(request)) * (q + kv)
    shared = 0 if precision.autocast_over_fp32(request) else compute_bytes(request) * q
    return 2 * FP32_BYTES * (q + kv) - shared


def layernorm_bytes_per_token(spec: ModelSpec, request: PlanRequest) -> float:
    """One nn.LayerNorm's saved tensors per token (Phi), trained or frozen: its input in the
    residual stream's dtype and the fp32 mean and rstd, r·h + 8 (native_layer_norm's saved
    tensors; its output is the following linears' input)."""
    return residual_bytes(request) * spec.hidden_size + 2 * FP32_BYTES


def residual_bytes(request: PlanRequest) -> int:
    """Bytes per element of the residual stream between decoder layers: fp32 when fp32
    weights run under autocast (precision.autocast_over_fp32), else the compute dtype."""
    return FP32_BYTES if precision.autocast_over_fp32(request) else compute_bytes(request)


def pre_norm_linear_inputs(spec: ModelSpec, request: PlanRequest) -> int:
    """Saved 16-bit inputs of the linears that read the pre-norms' outputs. With 16-bit
    weights the norm's output is shared (one per norm: 2; 1 where attention and MLP read one
    norm, Phi); under autocast over fp32 weights each linear casts the fp32 norm output itself
    and saves its own copy (q, k, v and gate, up: 5; fused qkv / gate_up: 2; Phi's q, k, v and
    fc1: 4; a MoE layer's router and its expert input: 2)."""
    if not precision.autocast_over_fp32(request):
        return 1 if architecture(spec.model_type).parallel_block else 2
    out = f"self_attn.{architecture(spec.model_type).attention_out}"
    names = [name for name, _, _ in parameters.linear_shapes(spec)]
    attention = sum(1 for n in names if n.startswith("self_attn.") and n != out)
    if spec.is_moe:
        return attention + 2
    mlp = sum(1 for n in names if n.startswith("mlp.") and n not in ("mlp.down_proj", "mlp.fc2"))
    return attention + mlp


def autocast_weight_copies(spec: ModelSpec, request: PlanRequest, lp: Loop) -> tuple[float, float]:
    """(one decoder layer's, the output head's) 16-bit weight casts kept for backward when fp32
    weights run under autocast: each linear saves the cast it multiplied by (2 bytes per
    weight). With recomputation a layer's casts live only while it is recomputed. A sequence
    classifier's score head is a single row per label (negligible). MoE experts run as
    grouped_mm, which autocast leaves alone (no casts of them; only the router's), and a
    Qwen3-MoE dense layer's MLP casts its own (the mean over layers)."""
    if not precision.autocast_over_fp32(request):
        return 0.0, 0.0
    shapes = parameters.linear_shapes(spec)
    layer = sum(n_in * n_out for name, n_in, n_out in shapes if ".experts." not in name)
    if spec.is_moe:
        dense_mlp = 3 * spec.hidden_size * spec.intermediate_size
        layer += mean_over_layers(spec, 0.0, dense_mlp)
    # SFT's chunked loss multiplies by the fp32 lm_head itself, outside autocast's casts.
    no_cast = lp.sequence_classifier or lp.method is Method.sft
    head = 0.0 if no_cast else float(HALF_BYTES) * spec.vocab_size * spec.hidden_size
    return float(HALF_BYTES) * layer, head


def attention_kernel(spec: ModelSpec, request: PlanRequest) -> Attention:
    """The attention the run gets: the requested one, but eager where sdpa is asked for and the
    architecture has none (GPT-OSS; the runners leave transformers' default, which falls back to
    eager)."""
    if request.attention is Attention.sdpa and not architecture(spec.model_type).sdpa:
        return Attention.eager
    return request.attention


def attention_bytes_per_token(spec: ModelSpec, request: PlanRequest, seq: int) -> float:
    """Attention's saved tensors per token. SDPA / flash: q, k, v after RoPE, the output and
    its transposed copy for o_proj, plus the fp32 logsumexp per head (Dao et al. 2022: no s×s
    matrix). TRL pads its batches, so SDPA gets a mask and transformers repeats k and v to every
    query head (`use_gqa_in_sdpa` needs attention_mask=None for the GQA kernel path): k and v
    are a·d wide, w·(3·q + 2·q), and each layer keeps its own copy of the 4-D mask, w·s.
    Eager: q, the repeated k and v and o_proj's input, w·4·q, plus per head s × (fp32 softmax
    + w probs [+ w softcapped scores, Gemma-2]; fp32 runs keep the softmax itself as the probs)
    (Korthikanti et al. 2022, the 5·a·s/h term)."""
    w = compute_bytes(request)
    q = parameters.q_width(spec)
    kernel = attention_kernel(spec, request)
    if kernel is Attention.eager and architecture(spec.model_type).attention_sinks:
        # GPT-OSS: one softmax in w over the s scores and the sink, and max's int64 index per
        # row (eager_attention_forward in modeling_gpt_oss; counted with saved-tensor hooks).
        return w * 4 * q + spec.num_heads * ((seq + 1) * w + INT64_BYTES)
    if kernel is Attention.eager:
        # fp32 softmax, its cast to w for the value matmul (none in fp32 runs: the cast is a
        # no-op), and Gemma-2's tanh-softcapped scores.
        softcapped = w if architecture(spec.model_type).attention_softcapping else 0
        scores = FP32_BYTES + (w if w != FP32_BYTES else 0) + softcapped
        return w * 4 * q + spec.num_heads * seq * scores
    # Padded batch: k and v repeated to every head, and each layer keeps its own copy of the
    # 4-D mask (rows × 1 × s × s), i.e. w·s per token.
    return w * (3 * q + 2 * q) + FP32_BYTES * spec.num_heads + w * seq


def mlp_bytes_per_token(spec: ModelSpec, request: PlanRequest) -> float:
    """Gated MLP (SwiGLU / GeGLU): gate, act(gate), up and their product, 4·I·w per token;
    a plain MLP (Phi's fc1, act, fc2) `plain_mlp_tensors` I-wide tensors; a MoE model the
    mean over its layers of the sparse layers' `moe_block_bytes_per_token` and the dense
    layers' 4·I·w (Qwen3-MoE's `mlp_only_layers`)."""
    if spec.is_moe:
        return mean_over_layers(spec, *moe_mlp_kinds_bytes(spec, request))
    if not architecture(spec.model_type).gated_mlp:
        return plain_mlp_tensors(spec) * spec.intermediate_size * compute_bytes(request)
    return dense_mlp_bytes(spec, request)


def dense_mlp_bytes(spec: ModelSpec, request: PlanRequest) -> float:
    """A dense gated MLP's saved tensors per token: gate, act(gate), up and their product, 4·I·w."""
    return 4 * spec.intermediate_size * compute_bytes(request)


def moe_mlp_kinds_bytes(spec: ModelSpec, request: PlanRequest) -> tuple[float, float]:
    """(a sparse layer's, a dense layer's) MLP saved tensors per token: trained, or with the
    base frozen (LoRA: the experts frozen, the dense MLP without down_proj's input)."""
    dense = dense_mlp_bytes(spec, request)
    if request.tuning is Tuning.full:
        return moe_block_bytes_per_token(spec, request, frozen=False), dense
    frozen_dense = dense - spec.intermediate_size * compute_bytes(request)
    return moe_block_bytes_per_token(spec, request, frozen=True), frozen_dense


def largest_layer_extra_bytes_per_token(spec: ModelSpec, request: PlanRequest) -> float:
    """How much more than the mean layer the largest layer saves per token: 0 where every
    layer is alike; for a MoE model with dense layers, the larger MLP kind less the mean."""
    if not spec.is_moe or parameters.moe_layer_count(spec) == spec.num_layers:
        return 0.0
    sparse, dense = moe_mlp_kinds_bytes(spec, request)
    return max(sparse, dense) - mean_over_layers(spec, sparse, dense)


def mean_over_layers(spec: ModelSpec, sparse: float, dense: float) -> float:
    """Per-layer mean of a quantity that differs between the sparse and the dense layers."""
    moe_layers = parameters.moe_layer_count(spec)
    return (moe_layers * sparse + (spec.num_layers - moe_layers) * dense) / spec.num_layers


INT64_BYTES = 8
"""Bytes per int64 element (routing indices)."""


def expert_bytes(request: PlanRequest) -> int:
    """Bytes per element inside the experts: the compute dtype, or fp32 under autocast over fp32
    weights (grouped_mm does not autocast: transformers casts the input to the weights' dtype,
    integrations/moe.py `_grouped_mm`)."""
    return FP32_BYTES if precision.autocast_over_fp32(request) else compute_bytes(request)


def moe_block_bytes_per_token(spec: ModelSpec, request: PlanRequest, frozen: bool) -> float:
    """A sparse layer's saved tensors per token as transformers 5.24's default grouped_mm
    experts keep them, each token making k (token, expert) pairs (integrations/moe.py
    `grouped_mm_experts_forward`): the gathered input and the experts' output, 2·k·h (frozen
    experts: the output alone, for the routing weights' gradient); I_e-wide, the gate_up
    output (2), act(gate) and the product, 4·k·I_e (frozen: 3) — GPT-OSS's clamped SwiGLU
    keeps 7 (6) — in the experts' dtype (`expert_bytes`); the k routing weights, 4·k; the
    router's fp32 softmax over all E and its renormalised top-k, 4·E + 4·k + 4 (GPT-OSS: a
    softmax over the k chosen, w·k); int64 indices (top-k, the sort's permutation, the gather,
    the inverse permutation; GPT-OSS's biases gathered per pair too), 32·k (40·k). Counted
    with autograd's saved-tensor hooks on a real layer; checked in the traced step."""
    traits = architecture(spec.model_type)
    h, i, k, e = (
        spec.hidden_size,
        parameters.expert_width(spec),
        spec.num_experts_per_tok,
        spec.num_experts,
    )
    x = expert_bytes(request)
    widths = 7 if traits.moe_biases else 4  # GptOssExperts._apply_gate: clamp, sigmoid, (up + 1)
    hidden = 1 if frozen else 2
    experts = x * k * (hidden * h + (widths - (1 if frozen else 0)) * i)
    softmax_all = traits.router_softmax_all
    routing = FP32_BYTES * (e + k + 1) if softmax_all else compute_bytes(request) * k
    indices = INT64_BYTES * k * (5 if traits.moe_biases else 4)
    return experts + FP32_BYTES * k + routing + indices


def plain_mlp_tensors(spec: ModelSpec) -> int:
    """I-wide tensors a plain MLP saves per token: fc1's output and fc2's input, 2, or 5 under
    transformers' `gelu_new`, a Python tanh formula whose ops save x, tanh's output, 0.5·x and
    1 + tanh (NewGELUActivation; counted in a traced Phi step)."""
    return 5 if spec.hidden_act == "gelu_new" else 2


def residual_dropout_bytes_per_token(spec: ModelSpec, request: PlanRequest) -> float:
    """Dropout on the attention and MLP outputs (Phi's `resid_pdrop`), live where TRL leaves
    dropout on (SFT): one bool mask each, 2·h bytes per token (native_dropout's saved mask)."""
    key = architecture(spec.model_type).residual_dropout_key
    if key is None or not spec.hf_config.get(key) or recipe(request.method).disables_dropout:
        return 0.0
    return 2.0 * spec.hidden_size


def layer_activation_bytes_per_token(spec: ModelSpec, request: PlanRequest, seq: int) -> float:
    """Saved activations of one decoder layer per token without recomputation: its norms,
    the inputs of the two linears that follow the pre-norms (w·h each), attention and MLP
    (Korthikanti et al. 2022 §4, recounted tensor by tensor for Hugging Face's Llama,
    Qwen2 and Gemma-2 layers). Under LoRA the frozen base saves less and the adapters more
    (`lora_layer_activation_bytes_per_token`)."""
    if request.tuning is not Tuning.full:
        return lora_layer_activation_bytes_per_token(spec, request, seq)
    w = compute_bytes(request)
    norms = spec.norms_per_layer * norm_bytes_per_token(spec, request)
    linear_inputs = pre_norm_linear_inputs(spec, request) * w * spec.hidden_size
    return (
        norms
        + linear_inputs
        + attention_bytes_per_token(spec, request, seq)
        + mlp_bytes_per_token(spec, request)
        + residual_dropout_bytes_per_token(spec, request)
        + qk_norm_bytes_per_token(spec, request)
    )


def adapted_linear_inputs(spec: ModelSpec, request: PlanRequest) -> list[tuple[str, int]]:
    """(name, in_features) of the linears of one layer that carry a LoRA adapter."""
    targets = parameters.lora_target_modules(spec, request.lora_targets.value)
    shapes = [(name, n_in) for name, n_in, _ in parameters.linear_shapes(spec)]
    if targets == "all-linear":
        router = architecture(spec.model_type).moe_router
        return [(name, n_in) for name, n_in in shapes if name != router]
    return [(name, n_in) for name, n_in in shapes if name.rsplit(".", 1)[-1] in targets]


def lora_layer_activation_bytes_per_token(spec: ModelSpec, request: PlanRequest, seq: int) -> float:
    """One layer's saved activations per token under LoRA. The frozen base saves no linear
    inputs and no normalised values for its norm weights (autograd keeps only what a gradient
    needs): norms 4·h each, SDPA's q, k, v and output, gate, act(gate) and up (3·I·w). Each
    adapter keeps its input cast to fp32 and the rank-r intermediate, 4·(in + r) (peft casts
    inputs to the adapter's fp32 dtype; Hu et al. 2021); fp32 runs share the uncast input."""
    w = compute_bytes(request)
    if architecture(spec.model_type).norm == "layernorm":
        norms = spec.norms_per_layer * layernorm_bytes_per_token(spec, request)
    else:
        norms = spec.norms_per_layer * FP32_BYTES * spec.hidden_size
    q = parameters.q_width(spec)
    # What full tuning's attention keeps, less o_proj's input (frozen base linear).
    attention = attention_bytes_per_token(spec, request, seq) - w * q
    # What full tuning's MLP keeps, less down_proj's (fc2's) input; frozen experts keep
    # neither their gathered input nor down's.
    if spec.is_moe:
        mlp = mean_over_layers(spec, *moe_mlp_kinds_bytes(spec, request))
    else:
        mlp = mlp_bytes_per_token(spec, request) - parameters.active_mlp_width(spec) * w
    mlp += residual_dropout_bytes_per_token(spec, request)
    attention += qk_norm_bytes_per_token(spec, request)
    adapters = 0.0
    inputs_seen: set[int] = set()
    # The runners' lora_dropout is live only in SFT (TRL's other trainers disable dropout):
    # each adapter then keeps a bool mask of its input (CUDA's fused dropout). None where the
    # run's dropout is 0 (a MoE's "all-linear" adapters: planner.recipes.lora_dropout).
    dropout_on = lora_dropout(spec.model_type, spec.is_moe, request.lora_targets) > 0
    dropout_mask = 1 if request.method is Method.sft and dropout_on else 0
    for _, n_in in adapted_linear_inputs(spec, request):
        adapters += FP32_BYTES * request.lora_rank + dropout_mask * n_in
        if w == FP32_BYTES and n_in in inputs_seen:
            continue  # no cast: q/k/v (and gate/up) save the one shared fp32 input
        inputs_seen.add(n_in)
        adapters += FP32_BYTES * n_in
    return norms + attention + mlp + adapters


def outside_layers_bytes_per_token(spec: ModelSpec, request: PlanRequest) -> float:
    """The final norm and the lm_head's input, saved outside the decoder layers. Under LoRA
    the first layer's input norm saves nothing (the frozen embedding's output needs no
    gradient) and the final norm only its fp32 input."""
    if request.tuning is not Tuning.full:
        # + 4·h for the final norm's fp32 input, − 4·h for layer 0's input norm, and the
        # frozen lm_head keeps no input.
        return 0.0
    return norm_bytes_per_token(spec, request) + compute_bytes(request) * spec.hidden_size


def checkpointed_layer_bytes_per_token(spec: ModelSpec, request: PlanRequest) -> float:
    """With full recomputation each layer keeps only its input, s·b·h·w (Korthikanti et al.
    2022 §5; exactly B·S·h·2 per layer in a traced step, tests/test_trace_agreement.py), in the
    residual stream's dtype."""
    return spec.hidden_size * residual_bytes(request)


SFT_LOSS_CHUNK_TOKENS = 256
"""TRL 1.12 SFTTrainer's default loss_type="chunked_nll" computes the loss in checkpointed
chunks of 256 valid tokens (trl.trainer.sft_trainer._chunked_cross_entropy_loss)."""


def softcap_bytes(spec: ModelSpec, request: PlanRequest) -> float:
    """Gemma-2's final logit softcapping keeps tanh's w-dtype output per logit (when the
    architecture has one and the config sets it)."""
    key = architecture(spec.model_type).final_logit_softcapping
    return compute_bytes(request) if key is not None and spec.hf_config.get(key) else 0.0


def logits_stay_16bit(request: PlanRequest, lp: Loop) -> bool:
    """The loss sees 16-bit logits: a 16-bit run without accelerate's fp32 output conversion
    (DeepSpeed; `precision.outputs_in_fp32`), for a method whose loss was traced that way."""
    return (
        lp.logit_copies_16bit is not None
        and compute_bytes(request) != FP32_BYTES
        and not precision.outputs_in_fp32(request)
    )


def logits_bytes_per_token(spec: ModelSpec, request: PlanRequest, lp: Loop) -> float:
    """Vocabulary-wide tensors per token live from the loss into backward: the w-dtype logits,
    accelerate's fp32 copy of the model outputs (convert_outputs_to_fp32) and the fp32
    log-softmax TRL saves for the per-token log-probs, V·(w + 4 + 4) (seen in a traced step);
    ORPO adds the NLL's log-softmax over the chosen half (V·4/2). fp32 runs make no copy but
    hold three fp32 logit-sized tensors as backward starts.
    When the logits stay 16-bit (DeepSpeed), the recipe's count of w-dtype copies at the
    loss's high point, which also covers the gradient (traced)."""
    w = compute_bytes(request)
    if logits_stay_16bit(request, lp):
        assert lp.logit_copies_16bit is not None
        return spec.vocab_size * (lp.logit_copies_16bit * w + softcap_bytes(spec, request))
    if w == FP32_BYTES:
        # fp32 logits from the start: at backward's high point the logits (kept by the
        # log-probs' logsumexp), the per-row gradients stacked, the gather's scattered gradient
        # and their sum, 3 × 4 bytes beside the 4-byte gradient (traced).
        per_logit = 3 * FP32_BYTES + softcap_bytes(spec, request)
    else:
        per_logit = w + FP32_BYTES + FP32_BYTES + softcap_bytes(spec, request)
    if lp.method is Method.orpo:
        per_logit += FP32_BYTES / 2
    return spec.vocab_size * per_logit


ENTROPY_CHUNK_ROWS = 128
"""Rows (tokens) per chunk of trl.trainer.utils.entropy_from_logits (TRL 1.12 default)."""


def entropy_chunk_bytes(spec: ModelSpec, request: PlanRequest, tokens: int) -> float:
    """The entropy metric's working set: one chunk's log-softmax, its exp and their product,
    3 × 128 rows × V in the logits' dtype."""
    return 3 * min(tokens, ENTROPY_CHUNK_ROWS) * spec.vocab_size * compute_bytes(request)


def logits_grad_bytes_per_token(spec: ModelSpec, request: PlanRequest, lp: Loop) -> float:
    """Gradient of the logits at the start of backward: fp32, then cast to w for lm_head's
    matmul, V·(4 + w). With 16-bit logits the w-dtype gradient replaces copies the loss has
    freed by then (counted in `logits_bytes_per_token`)."""
    if logits_stay_16bit(request, lp):
        return 0.0
    w = compute_bytes(request)
    return spec.vocab_size * (FP32_BYTES + (w if w != FP32_BYTES else 0))


def sft_chunked_loss_bytes(spec: ModelSpec, request: PlanRequest, tokens: int) -> float:
    """SFT's chunked cross-entropy: an fp32 copy of the lm_head weight and its gradient
    (4·V·h each; no gradient when the lm_head is frozen), and, while a chunk of 256 tokens is
    back-propagated, its fp32 log-probs, their gradient, the logits and the logits' gradient
    (four chunk-sized fp32 tensors; three and a half beside the weight's gradient in the
    traced step), plus tanh's output under Gemma-2's softcapping."""
    weight = spec.vocab_size * spec.hidden_size * FP32_BYTES
    weight_grad = weight if request.tuning is Tuning.full else 0.0
    if residual_bytes(request) == FP32_BYTES:
        weight = 0.0  # the lm_head is already fp32: `.float()` makes no copy
    chunk = min(tokens, SFT_LOSS_CHUNK_TOKENS) * spec.vocab_size * FP32_BYTES
    softcap = chunk if softcap_bytes(spec, request) else 0.0
    # Before lm_head's backward: log-probs, their gradient, the logits and the logits'
    # gradient; during it the weight's gradient appears as half a chunk is released.
    return weight + softcap + max(4 * chunk, weight_grad + 3.5 * chunk)


def backward_transient_bytes_per_token(spec: ModelSpec, request: PlanRequest, seq: int) -> float:
    """Gradient buffers a layer's backward holds beside what it frees: the fp32 gradient of
    the residual stream and of a norm's input, 2 × 4·h per token, the MLP's w·I gradient (a
    sparse layer's k (token, expert) pairs: w·k·max(h, I_e), the gradient of their gathered
    input or of their expert width; the wider of the sparse and any dense layer), and under
    eager attention the w-dtype gradient of the s×s probabilities per head (traced)."""
    w = compute_bytes(request)
    mlp = w * spec.intermediate_size
    if spec.is_moe:
        k, i = spec.num_experts_per_tok, parameters.expert_width(spec)
        sparse = w * k * max(spec.hidden_size, i)
        dense_layers = spec.num_layers > parameters.moe_layer_count(spec)
        mlp = max(sparse, mlp) if dense_layers else sparse
    transient = 2 * FP32_BYTES * spec.hidden_size + mlp
    if attention_kernel(spec, request) is Attention.eager:
        transient += spec.num_heads * seq * compute_bytes(request)
    return transient


@dataclass
class Activations:
    """Bytes per GPU of activations and logits in the policy's forward/backward."""

    saved: float
    """Activations saved for backward across all layers."""
    recompute: float
    """Transient: one layer recomputed (checkpointing) with its gradient buffers."""
    logits: float
    """The loss's vocabulary-wide tensors, live from the loss into backward."""
    logits_grad: float
    """Extra at the start of backward: the logits' gradient."""
    backward_transient: float
    """Gradient buffers of the layer being back-propagated."""
    outside: float
    """Saved outside the decoder layers (final norm, lm_head input)."""
    loss_residue: float
    """Left by a chunked loss to the decoder's backward (SFT): the reordered hidden states
    the chunks saved, their w-dtype gradient and its fp32 accumulation."""
    no_grad_forward: float
    """Transient peak of a forward under no_grad (reference, KL batch, scoring)."""


def decoder_saved_bytes(
    spec: ModelSpec, request: PlanRequest, lp: Loop, tokens: int, seq: int
) -> tuple[float, float]:
    """(saved for backward across the decoder layers and outside them, one layer's
    recomputation): every layer's activations, or under checkpointing each layer's input
    (`checkpointed_layer_bytes_per_token`) with one layer recomputed at a time; plus the 16-bit
    weight casts autocast keeps (`autocast_weight_copies`) and what is saved outside the layers
    (Korthikanti et al. 2022 §4-5)."""
    per_layer = layer_activation_bytes_per_token(spec, request, seq)
    if request.grad_checkpointing:
        saved = tokens * (spec.num_layers * checkpointed_layer_bytes_per_token(spec, request))
        # The recomputed layer at the high point is the largest kind (Qwen3-MoE's dense layers).
        recompute = tokens * (per_layer + largest_layer_extra_bytes_per_token(spec, request))
    else:
        saved = tokens * spec.num_layers * per_layer
        recompute = 0.0
    layer_casts, _ = autocast_weight_copies(spec, request, lp)
    if request.grad_checkpointing:
        recompute += layer_casts
    else:
        saved += spec.num_layers * layer_casts
    saved += outside_layers_bytes(spec, request, lp, tokens)
    return saved, recompute


def outside_layers_bytes(spec: ModelSpec, request: PlanRequest, lp: Loop, tokens: int) -> float:
    """Saved outside the decoder layers for `tokens` tokens (`outside_layers_bytes_per_token`
    and the router auxiliary loss's `router_aux_bytes_per_token`), plus the output head's
    16-bit weight cast under autocast over fp32 weights."""
    _, head_cast = autocast_weight_copies(spec, request, lp)
    per_token = outside_layers_bytes_per_token(spec, request) + router_aux_bytes_per_token(
        spec, request
    )
    return tokens * per_token + head_cast


ROUTER_AUX_LOSS_METHODS = frozenset({Method.sft, Method.dpo, Method.kto, Method.grpo, Method.rloo})
"""Trainers that add the router's load-balancing loss to a MoE model's loss in TRL 1.12: they
pass `output_router_logits=True` whenever the config has that key, with their own
`router_aux_loss_coef` (default 0.001; sft_trainer.py, dpo_trainer.py, kto_trainer.py,
grpo_trainer.py, rloo_trainer.py); ORPO, CPO/SimPO, reward and PPO do not."""

TRL_ROUTER_AUX_LOSS_COEF = 0.001
"""TRL 1.12's `router_aux_loss_coef` default (SFTConfig, DPOConfig, KTOConfig, GRPOConfig,
RLOOConfig); SFT also writes it over the model config's."""


def router_aux_loss_on(spec: ModelSpec, request: PlanRequest) -> bool:
    """The run adds the router's auxiliary (load-balancing) loss (`ROUTER_AUX_LOSS_METHODS`)."""
    return spec.is_moe and request.method in ROUTER_AUX_LOSS_METHODS


def router_aux_bytes_per_token(spec: ModelSpec, request: PlanRequest) -> float:
    """The auxiliary loss's saved tensors per token: in every sparse layer, the softmax over the
    E router logits in their dtype, w·E (transformers' `load_balancing_loss_func`, Fedus et al.
    2021 eq. 4-6; its fp32 copy times the padding mask saves only the mask; traced)."""
    if not router_aux_loss_on(spec, request):
        return 0.0
    return parameters.moe_layer_count(spec) * compute_bytes(request) * spec.num_experts


def loss_logits_bytes(
    spec: ModelSpec, request: PlanRequest, lp: Loop, rows: int, logit_tokens: int
) -> tuple[float, float]:
    """(the loss's vocabulary-wide tensors, the logits' gradient at the start of backward) for
    `rows` rows of `logit_tokens` tokens each: none for a sequence classifier, SFT's chunked
    loss (`sft_chunked_loss_bytes`), else `logits_bytes_per_token` (with the entropy metric's
    chunk when the logits stay 16-bit) and `logits_grad_bytes_per_token`."""
    if lp.sequence_classifier:
        return 0.0, 0.0
    if lp.method is Method.sft:
        return sft_chunked_loss_bytes(spec, request, rows * logit_tokens), 0.0
    logits = rows * logit_tokens * logits_bytes_per_token(spec, request, lp)
    if lp.entropy_metric and logits_stay_16bit(request, lp):
        logits += entropy_chunk_bytes(spec, request, rows * logit_tokens)
    logits_grad = rows * logit_tokens * logits_grad_bytes_per_token(spec, request, lp)
    return logits, logits_grad


def no_grad_layer_bytes_per_token(spec: ModelSpec, request: PlanRequest) -> int:
    """A decoder layer's working set in a forward under no_grad, 2·h·w + 2·I·w per token: the
    residual stream and a norm's output, and the MLP's two I-wide intermediates; nothing is
    saved for backward (counted in the traced reference and KTO KL-batch forwards of
    planner/trace, whose peak tests/test_trace_agreement.py checks against this estimate)."""
    w = compute_bytes(request)
    return 2 * spec.hidden_size * w + spec.intermediate_size * w * 2


def no_grad_logits_bytes_per_token(spec: ModelSpec, request: PlanRequest) -> int:
    """The logits of a forward under no_grad per token: the w-dtype logits and their fp32
    log-softmax, V·(w + 4) (traced as in `no_grad_layer_bytes_per_token`)."""
    return spec.vocab_size * (compute_bytes(request) + FP32_BYTES)


def no_grad_forward_bytes(
    spec: ModelSpec, request: PlanRequest, lp: Loop, seq: int, logit_tokens: int
) -> int:
    """Transient peak of a forward under no_grad (reference, KTO's KL batch, scoring) over the
    rows it runs: one layer's working set per token and, unless the model is a sequence
    classifier, the logits of every token that needs them."""
    rows = request.batch_size * max(lp.rows_per_sample, lp.no_grad_rows_per_sample)
    total = rows * seq * no_grad_layer_bytes_per_token(spec, request)
    if not lp.sequence_classifier:
        total += rows * logit_tokens * no_grad_logits_bytes_per_token(spec, request)
    return total


def sft_loss_residue_bytes(spec: ModelSpec, request: PlanRequest, lp: Loop, tokens: int) -> float:
    """What SFT's chunked loss leaves to the decoder's backward: the reordered hidden states
    the chunks saved and their gradient in the residual stream's dtype plus its fp32
    accumulation, (2·r + 4)·h per token; under LoRA also the frozen lm_head's fp32 copy,
    4·V·h, which the loss graph keeps referenced (both counted in the traced SFT step of
    planner/trace, checked in tests/test_trace_agreement.py); 0 for the other methods."""
    if lp.method is not Method.sft:
        return 0.0
    h = spec.hidden_size
    residue = tokens * (2 * residual_bytes(request) + FP32_BYTES) * h
    if request.tuning is not Tuning.full:
        residue += spec.vocab_size * h * FP32_BYTES
    return residue


def activations(spec: ModelSpec, request: PlanRequest, lp: Loop | None = None) -> Activations:
    """The policy's saved activations and logits for one micro-batch (Korthikanti et al. 2022)."""
    lp = lp or loop(request)
    seq, logit_tokens = sequence_tokens(request, lp)
    rows = request.batch_size * lp.rows_per_sample
    tokens = rows * seq
    saved, recompute = decoder_saved_bytes(spec, request, lp, tokens, seq)
    logits, logits_grad = loss_logits_bytes(spec, request, lp, rows, logit_tokens)
    return Activations(
        saved=saved,
        recompute=recompute,
        logits=logits,
        logits_grad=logits_grad,
        backward_transient=tokens * backward_transient_bytes_per_token(spec, request, seq),
        outside=outside_layers_bytes(spec, request, lp, tokens),
        loss_residue=sft_loss_residue_bytes(spec, request, lp, tokens),
        no_grad_forward=no_grad_forward_bytes(spec, request, lp, seq, logit_tokens),
    )


# ----------------------------------------------------------------------------- other models


def frozen_model_share(params: int, request: PlanRequest) -> float:
    """One GPU's bytes of a frozen model of `params` parameters (`frozen_model_bytes_per_param`
    each): split over the GPUs under ZeRO-3 / FSDP, whole otherwise (TRL prepares a frozen
    model with the same DeepSpeed / FSDP plugin as the policy)."""
    size = params * frozen_model_bytes_per_param(request)
    return size / world(request) if shards_params(effective_sharding(request)) else size


def frozen_copy_bytes(spec: ModelSpec, request: PlanRequest) -> float:
    """A frozen copy of the policy (reference model): P·w, sharded under ZeRO-3 / FSDP."""
    return frozen_model_share(parameters.count_params(spec), request)


def reward_model_bytes(spec: ModelSpec, request: PlanRequest) -> float:
    """PPO's frozen reward model: a sequence classifier of the policy's architecture,
    (P − V·h + h)·w (TRL PPO's default: same base model with a score head)."""
    return frozen_model_share(parameters.reward_model_params(spec), request)


def value_model_states(spec: ModelSpec, request: PlanRequest) -> ModelStates:
    """PPO's value model trains in full beside the policy, under the same optimizer and (with
    DeepSpeed) the same engine (TRL's PolicyAndValueWrapper): weights, gradients and optimizer
    states at the run's bytes per trained parameter, sharded and offloaded as the policy's."""
    full = request.model_copy(update={"tuning": Tuning.full, "method": Method.reward})
    return model_states(spec, full)


def generation_batch(request: PlanRequest, lp: Loop) -> int:
    """Sequences generated at once: TRL generates the whole local rollout batch
    (micro-batch × gradient accumulation) in chunks of `local_rollout_forward_batch_size`."""
    return recipe(lp.method).generation_chunk(request)


def generation_gathered_bytes(spec: ModelSpec, request: PlanRequest, lp: Loop) -> float:
    """Under ZeRO-3, TRL generates rollouts inside `deepspeed.zero.GatheredParameters` over the
    whole trained module (policy, and PPO's value model with it): every parameter is gathered in
    the compute dtype for the rollout (trl/models/utils.py `_unwrap_model_for_generation`,
    `ds3_gather_for_generation` defaults to True in GRPO, RLOO and PPO configs)."""
    if effective_sharding(request) is not Sharding.zero3 or not lp.generates:
        return 0.0
    params = parameters.count_params(spec)
    if lp.value_model:
        params += parameters.value_model_params(spec)
    return params * compute_bytes(request)


def vllm_engine_bytes(request: PlanRequest, capacity: float) -> float:
    """What a colocated vLLM engine takes on each training GPU, for the whole run (TRL leaves
    sleep mode off): share × the GPU's memory (vLLM's `gpu_memory_utilization` is a fraction of
    the device's total memory); its weights and KV cache live inside it (`planner.vllm_engine`)."""
    return request.colocated_vllm_share * capacity


def kv_cache_bytes_per_token(spec: ModelSpec, request: PlanRequest) -> int:
    """KV cache per token of context: 2 (k, v) × layers × kv_heads × head_dim × w (Pope et al.
    2022, "Efficiently Scaling Transformer Inference" §2)."""
    return 2 * spec.num_layers * parameters.kv_width(spec) * compute_bytes(request)


def kv_cache_bytes(spec: ModelSpec, request: PlanRequest, rows: int) -> float:
    """KV cache over prompt + completion for every generated sequence
    (`kv_cache_bytes_per_token` each)."""
    prompt, completion = request.prompt_and_completion()
    return rows * (prompt + completion) * kv_cache_bytes_per_token(spec, request)


# ----------------------------------------------------------------------------- the estimate


@dataclass
class MemoryBreakdown:
    """Bytes per GPU: each component's own high point, the phases, and the peak."""

    components: dict[str, float]
    phases: dict[str, float]
    phase_members: dict[str, list[str]]
    peak_phase: str
    tensor_peak: float
    overhead: float
    cpu_offload: float
    notes: list[str]

    @property
    def peak(self) -> float:
        return self.tensor_peak + self.overhead

    @property
    def live_at_peak(self) -> list[str]:
        return self.phase_members[self.peak_phase]


def experts_need_bf16(spec: ModelSpec, request: PlanRequest) -> bool:
    """The run's MoE experts would meet torch's grouped_mm with weights that are not bf16:
    transformers 5.24 runs experts with grouped_mm by default, which takes bf16 only (its
    checks mirror the CUDA kernel's, torch/_meta_registrations.py), so a forward over fp32 or
    fp16 expert weights fails. DeepSpeed and FSDP hold 16-bit weights for compute in bf16 runs."""
    if not spec.is_moe:
        return False
    sharded_bf16 = request.precision.half == "bf16" and (
        is_deepspeed(effective_sharding(request)) or effective_sharding(request) is Sharding.fsdp
    )
    return precision.load_dtype(request) != "bfloat16" and not sharded_bf16


def architecture_notes(spec: ModelSpec, request: PlanRequest) -> list[str]:
    """What the estimate assumes of the model beyond its layout: the attention kernel it really
    gets, how a quantized checkpoint is held, the router's auxiliary loss, and MoE settings a
    run with transformers 5.24 / peft 0.21 cannot take."""
    notes: list[str] = []
    traits = architecture(spec.model_type)
    if attention_kernel(spec, request) is not request.attention:
        notes.append(
            f"{spec.model_type} has no sdpa attention in transformers 5.24: planned with eager "
            "attention (an s × s softmax per head), which the run falls back to"
        )
    quant = spec.hf_config.get("quantization_config")
    method = quant.get("quant_method") if isinstance(quant, dict) else None
    if method == "mxfp4":
        notes.append(
            "the checkpoint stores its experts in MXFP4; planned with them dequantized to bf16, "
            "as training needs: transformers 5.24 dequantizes on load without triton and the "
            "`kernels` package, and otherwise keeps MXFP4 experts it cannot train "
            "(Mxfp4HfQuantizer.is_trainable is False), so load with "
            "Mxfp4Config(dequantize=True)"
        )
    elif method:
        notes.append(
            f"the checkpoint is quantized ({method}); planned as if its weights were held in the "
            "run's dtype"
        )
    if spec.is_moe:
        sparse = parameters.moe_layer_count(spec)
        notes.append(
            f"mixture of experts: memory holds all {spec.num_experts} experts of each of the "
            f"{sparse} sparse layers; time counts the {spec.num_experts_per_tok} a token runs "
            "through (active parameters)"
        )
        if router_aux_loss_on(spec, request):
            notes.append(
                f"router auxiliary loss on: TRL 1.12's {request.method.value} trainer sets "
                f"output_router_logits=True and adds router_aux_loss_coef={TRL_ROUTER_AUX_LOSS_COEF} "
                "(TRL's default, not the config's) × the load-balancing loss; its router "
                "softmaxes are counted"
            )
        else:
            notes.append(
                f"router auxiliary loss off: TRL 1.12's {request.method.value} trainer does not "
                "add it (the router is trained by the method's loss alone)"
            )
        if experts_need_bf16(spec, request):
            notes.append(
                f"will not run as planned: transformers 5.24 runs the experts with torch's "
                f"grouped_mm, which takes bf16 only, and this plan loads "
                f"{precision.load_dtype(request)} weights; use --precision bf16-true"
            )
        if (
            request.tuning is not Tuning.full
            and request.lora_targets is LoraTargets.all_linear
            and traits.lora_adapts_experts
        ):
            notes.append(
                'LoRA dropout 0: peft 0.21 adapts the stacked expert weights under "all-linear" '
                "with a ParamWrapper, which refuses any other dropout (the run is written so)"
            )
    return notes


def runtime_overhead_bytes(request: PlanRequest, tensor_peak: float) -> float:
    """CUDA context + cuBLAS workspaces + NCCL buffers (multi-GPU) + allocator fragmentation
    as a fraction of the tensor peak; every term in profiles/constants.toml [runtime]."""
    overhead = (runtime("cuda_context_gib") + runtime("cublas_workspace_gib")) * GIB
    if world(request) > 1:
        overhead += runtime("nccl_buffers_gib") * GIB
    return overhead + runtime("allocator_fragmentation") * tensor_peak


ADAMW_OPTIM = "adamw_torch_fused"
"""The transformers `optim` behind `--optimizer adamw`, shared by the runners and the trace:
torch's fused AdamW (transformers' own default for torch >= 2.8), one kernel per step."""


def late_backward_bytes(
    spec: ModelSpec, request: PlanRequest, act: Activations, gradients: float, accumulating: bool
) -> tuple[float, float]:
    """Backward after the loss, as (activation bytes, gradient bytes): at layer i, the
    activations (or checkpointed inputs) of layers 0..i, the gradients of the layers above and
    the head, and layer i's recomputation and gradient buffers. Linear in i, so the high point
    is at the top layer or at layer 0; last comes the embedding's gradient, computed in fp32
    and cast (embedding_dense_backward)."""
    layers = spec.num_layers
    trained = parameters.model_params(spec, request)
    layer_share = parameters.decoder_params(spec) / layers / trained  # the mean layer
    head_share = max(0.0, 1 - layers * layer_share - parameters.embedding_params(spec) / trained)
    if request.tuning is not Tuning.full:
        layer_share, head_share = 1 / layers, 0.0  # adapters sit in the layers only
    grads_head = gradients * head_share
    grads_above_layer0 = gradients * (head_share + (layers - 1) * layer_share)
    if accumulating:
        grads_head = grads_above_layer0 = gradients
    working = act.recompute + act.backward_transient + act.loss_residue
    per_layer_saved = (act.saved - act.outside) / layers
    candidates = [
        (act.saved + working, grads_head),  # top layer
        (per_layer_saved + working, grads_above_layer0),  # layer 0
    ]
    if request.tuning is Tuning.full:
        candidates.append((0.0, gradients + parameters.embedding_params(spec) * FP32_BYTES))
    return max(candidates, key=sum)


def estimate_memory(
    spec: ModelSpec, request: PlanRequest, capacity: float | None = None
) -> MemoryBreakdown:
    """Peak memory per GPU of one steady-state training step (optimizer states already
    allocated, as from the second step on). `capacity`: the GPU's bytes, which a colocated vLLM
    engine takes its share of (default: the request's GPU profile)."""
    check_offload(request)
    lp = loop(request)
    engine = 0.0
    if request.colocated_vllm_share:
        if capacity is None:
            from planner.gpus import resolve_gpu

            capacity = resolve_gpu(request.gpu).memory_bytes
        engine = vllm_engine_bytes(request, capacity)
    states = model_states(spec, request)
    act = activations(spec, request, lp)
    notes = list(lp.notes) + states.notes + architecture_notes(spec, request)

    reference = frozen_copy_bytes(spec, request) if lp.reference == "copy" else 0.0
    reward = reward_model_bytes(spec, request) if lp.reward_model else 0.0
    value_states = value_model_states(spec, request) if lp.value_model else ModelStates()
    value = value_states.weights + value_states.gradients + value_states.optimizer
    # Only transformers' generate holds a KV cache in training memory; vLLM's lives in its share.
    in_process = lp.generates_in_process
    kv = kv_cache_bytes(spec, request, generation_batch(request, lp)) if in_process else 0.0
    # The value model (same architecture, no vocabulary logits) trains beside the policy.
    value_act = act.saved if lp.value_model else 0.0

    resident = {
        "weights": states.weights,
        "trainable_weights": states.trainable_weights,
        "optimizer": states.optimizer,
        "buckets": states.buckets,
        "reference_model": reference,
        "reward_model": reward,
        "value_model": value,
        "vllm_engine": engine,  # taken at start-up and held all run (no sleep mode)
    }
    base = sum(resident.values())
    accumulating = request.grad_accum > 1  # gradients from earlier micro-batches stay live

    grads_live = states.gradients if accumulating else 0.0
    phases: dict[str, float] = {}
    members: dict[str, list[str]] = {}
    # DeepSpeed's reduction buckets are gradient buffers: listed as gradients.
    resident_names = list(
        dict.fromkeys("gradients" if k == "buckets" else k for k, v in resident.items() if v > 0)
    )

    # Each decoding step holds the fp32 next-token logits and their softmax per sequence.
    gen_logits = (
        generation_batch(request, lp) * spec.vocab_size * FP32_BYTES * 2 if in_process else 0.0
    )
    if lp.generates and not in_process:
        # vLLM: the new weights are pushed into the engine after each step; under ZeRO-3 TRL
        # gathers them one parameter at a time, but a PEFT model whole, to merge the adapters
        # (trl/generation/vllm_generation.py `_iter_named_params`).
        whole = request.tuning is not Tuning.full
        gathered = generation_gathered_bytes(spec, request, lp) if whole else 0.0
        phases["weight sync to vLLM"] = base + max(gathered, states.gathered)
        members["weight sync to vLLM"] = list(resident_names)
    elif lp.generates:
        gathered = generation_gathered_bytes(spec, request, lp) or states.gathered
        if gathered > states.gathered:
            notes.append(
                "ZeRO-3: rollouts run with the whole trained model gathered on every GPU "
                "(TRL's unwrap_model_for_generation, ds3_gather_for_generation=True)"
            )
        phases["rollout generation"] = base + kv + gen_logits + gathered
        members["rollout generation"] = [*resident_names, "generation_kv_cache", "logits"]
    scoring = lp.reference != "none" or bool(lp.no_grad_rows_per_sample) or lp.reward_model
    no_grad = act.no_grad_forward if scoring else 0.0
    if scoring:
        phases["reference / scoring forward"] = base + no_grad + states.gathered + grads_live
        members["reference / scoring forward"] = [*resident_names, "logits"] + (
            ["gradients"] if accumulating else []
        )
        members["reference / scoring forward"] = list(
            dict.fromkeys(members["reference / scoring forward"])
        )

    # Backward starts with the loss's logits and their gradient live; later, gradients pile
    # up while layers are recomputed. Each branch is (activations, logits, gradients).
    start = (act.saved, act.logits + act.logits_grad, grads_live)
    late_act, late_grads = late_backward_bytes(spec, request, act, states.gradients, accumulating)
    late = (late_act, 0.0, late_grads)
    fb_act, fb_logits, fb_grads = max(start, late, key=sum)
    phases["forward / backward"] = (
        base + value_act + states.gathered + fb_act + fb_logits + fb_grads
    )
    members["forward / backward"] = (
        [*resident_names, "activations"]
        + (["logits"] if fb_logits else [])
        + (["gradients"] if fb_grads else [])
    )
    members["forward / backward"] = list(dict.fromkeys(members["forward / backward"]))

    # The step itself allocates nothing: fused AdamW (ADAMW_OPTIM), DeepSpeed's fused Adam,
    # bitsandbytes' 8-bit kernels and SGD update in place (foreach AdamW, `adamw_torch`, would
    # hold a state-sized sqrt(v): torch.optim.adamw._multi_tensor_adamw).
    phases["optimizer step"] = base + states.gradients + states.step_transient
    members["optimizer step"] = list(dict.fromkeys([*resident_names, "gradients"]))

    peak_phase = max(phases, key=lambda name: phases[name])
    tensor_peak = phases[peak_phase]
    # vLLM's share is one reservation of its own: no allocator fragmentation over it.
    overhead = runtime_overhead_bytes(request, tensor_peak - engine)
    components = {
        "weights": states.weights + states.gathered,
        "trainable_weights": states.trainable_weights,
        "gradients": states.gradients + states.buckets,
        "optimizer": states.optimizer,
        "activations": max(act.saved, late_act) + value_act,
        "logits": max(act.logits + act.logits_grad, no_grad, gen_logits),
        "reference_model": reference,
        "reward_model": reward,
        "value_model": value,
        "generation_kv_cache": kv,
        "vllm_engine": engine,
        "runtime_overhead": overhead,
    }
    return MemoryBreakdown(
        components=components,
        phases=phases,
        phase_members=members,
        peak_phase=peak_phase,
        tensor_peak=tensor_peak,
        overhead=overhead,
        cpu_offload=states.cpu + value_states.cpu,
        notes=notes,
    )

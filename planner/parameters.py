"""Parameter counts of a decoder-only transformer, one named function per quantity.

Every count is exact for the Hugging Face implementation in transformers 5.24 (checked in
tests/test_models.py against `sum(p.numel())` of the model built on the meta device). Notation:
h hidden size, L layers, a query heads, k key/value heads, d head dim, I intermediate size,
V vocabulary, E experts, r LoRA rank.
"""

from __future__ import annotations

from planner.architectures import ArchitectureTraits, architecture
from planner.errors import InputError
from planner.specs import LoraTargets, Method, ModelSpec, PlanRequest, Tuning


def q_width(spec: ModelSpec) -> int:
    """Query projection width: a·d (not always h: Gemma-2 and Llama-3.2-1B differ)."""
    return spec.num_heads * spec.head_dim


def kv_width(spec: ModelSpec) -> int:
    """Key (or value) projection width: k·d, smaller than a·d under grouped-query attention."""
    return spec.num_kv_heads * spec.head_dim


def embedding_params(spec: ModelSpec) -> int:
    """embedding: V·h (the token embedding matrix, `embed_tokens`)."""
    return spec.vocab_size * spec.hidden_size


def attention_biases(spec: ModelSpec) -> tuple[bool, bool]:
    """(q/k/v biased, output biased): as the spec says, or always both where the architecture
    hard-codes them (PhiAttention)."""
    if architecture(spec.model_type).attention_bias == "all":
        return True, True
    return spec.attention_bias, spec.attention_out_bias


def attention_params_per_layer(spec: ModelSpec) -> int:
    """attention: h·a·d + 2·h·k·d + a·d·h weights, plus a·d + 2·k·d qkv biases and h o-bias where
    the model has them (Qwen2: qkv bias, no o bias; Llama `attention_bias`, Phi: all four),
    plus a sink logits where the model has them (GptOssAttention `sinks`)."""
    h, q, kv = spec.hidden_size, q_width(spec), kv_width(spec)
    weights = h * q + 2 * h * kv + q * h
    qkv_bias, out_bias = attention_biases(spec)
    biases = (q + 2 * kv if qkv_bias else 0) + (h if out_bias else 0)
    sinks = spec.num_heads if architecture(spec.model_type).attention_sinks else 0
    return weights + biases + sinks


def dense_mlp_params(spec: ModelSpec) -> int:
    """gated MLP (SwiGLU / GeGLU): 3·h·I (gate, up, down), plus 2·I + h with `mlp_bias`;
    plain MLP (Phi's fc1, fc2): 2·h·I + I + h, always biased."""
    h, i = spec.hidden_size, spec.intermediate_size
    if not architecture(spec.model_type).gated_mlp:
        return 2 * h * i + i + h
    return 3 * h * i + ((2 * i + h) if spec.mlp_bias else 0)


def expert_width(spec: ModelSpec) -> int:
    """One expert's intermediate width I_e: the config's `moe_intermediate_size` where the
    architecture has one (Qwen3-MoE), else I (Mixtral, GPT-OSS)."""
    traits = architecture(spec.model_type)
    if traits.expert_width_key is None:
        return spec.intermediate_size
    return int(spec.hf_config.get(traits.expert_width_key) or traits.default_expert_width)


def moe_layer_count(spec: ModelSpec) -> int:
    """Decoder layers whose MLP is sparse: every layer of a MoE model, except (Qwen3-MoE)
    those in `mlp_only_layers` and those where (i + 1) % `decoder_sparse_step` != 0
    (Qwen3MoeDecoderLayer); 0 for a dense model."""
    if not spec.is_moe:
        return 0
    traits = architecture(spec.model_type)
    step = 1
    if traits.sparse_step_key is not None:
        step = int(spec.hf_config.get(traits.sparse_step_key) or 1)
    dense: set[int] = set()
    if traits.dense_layers_key is not None:
        dense = set(spec.hf_config.get(traits.dense_layers_key) or [])
    return sum(1 for i in range(spec.num_layers) if i not in dense and (i + 1) % step == 0)


def expert_params(spec: ModelSpec) -> int:
    """one expert: 3·h·I_e (gate and up fused in `gate_up_proj`, down), plus 2·I_e + h biases
    where the experts have them (GptOssExperts `gate_up_proj_bias`, `down_proj_bias`)."""
    h, i = spec.hidden_size, expert_width(spec)
    biases = 2 * i + h if architecture(spec.model_type).moe_biases else 0
    return 3 * h * i + biases


def router_params(spec: ModelSpec) -> int:
    """MoE router: h·E (Mixtral's and Qwen3-MoE's `mlp.gate`), + E with a bias (GPT-OSS's
    `mlp.router`); 0 for a dense model."""
    if not spec.is_moe:
        return 0
    bias = spec.num_experts if architecture(spec.model_type).moe_biases else 0
    return spec.hidden_size * spec.num_experts + bias


def mlp_params_per_layer(spec: ModelSpec) -> int:
    """MLP of a sparse layer where the model has one: E experts + router (Fedus et al. 2021);
    else the dense MLP (3·h·I)."""
    if spec.is_moe:
        return spec.num_experts * expert_params(spec) + router_params(spec)
    return dense_mlp_params(spec)


def mlp_params(spec: ModelSpec) -> int:
    """every layer's MLP: the sparse layers' experts and routers and the dense layers' MLPs
    (Qwen3-MoE's `mlp_only_layers` keep a dense MLP of `intermediate_size`)."""
    sparse = moe_layer_count(spec)
    dense = spec.num_layers - sparse
    return sparse * mlp_params_per_layer(spec) + dense * dense_mlp_params(spec)


def norm_has_bias(spec: ModelSpec) -> bool:
    """The norms carry a bias as well as a weight (nn.LayerNorm: Phi)."""
    return spec.norm_has_bias or architecture(spec.model_type).norm == "layernorm"


def norm_params_per_layer(spec: ModelSpec) -> int:
    """norms: n·h (n = 1 for Phi, 2 for Llama/Qwen2/Phi-3, 4 for Gemma-2), ×2 with biases,
    plus 2·d for Qwen3's q_norm and k_norm (4·d for Phi's optional biased q/k LayerNorms;
    a·d + k·d for OLMo-2's, which span the whole projections)."""
    traits = architecture(spec.model_type)
    per_norm = spec.hidden_size * (2 if norm_has_bias(spec) else 1)
    qk = traits.qk_norm or bool(traits.qk_norm_key and spec.hf_config.get(traits.qk_norm_key))
    if not qk:
        qk_norm = 0
    elif traits.qk_norm_over_projection:
        qk_norm = q_width(spec) + kv_width(spec)
    else:
        qk_norm = 2 * spec.head_dim * (2 if norm_has_bias(spec) else 1)
    return spec.norms_per_layer * per_norm + qk_norm


def decoder_layer_params(spec: ModelSpec) -> int:
    """one decoder layer: attention + MLP + norms (the unit FSDP wraps and gathers; a sparse
    layer where the model has one)."""
    return (
        attention_params_per_layer(spec) + mlp_params_per_layer(spec) + norm_params_per_layer(spec)
    )


def decoder_params(spec: ModelSpec) -> int:
    """all decoder layers: L·(attention + norms) + every layer's MLP (`mlp_params`)."""
    per_layer = attention_params_per_layer(spec) + norm_params_per_layer(spec)
    return spec.num_layers * per_layer + mlp_params(spec)


def final_norm_params(spec: ModelSpec) -> int:
    """final norm: h (×2 with a bias), after the last layer."""
    return spec.hidden_size * (2 if norm_has_bias(spec) else 1)


def lm_head_params(spec: ModelSpec) -> int:
    """lm_head: V·h (+ V with a bias: Phi), or 0 when tied to the embedding
    (`tie_word_embeddings`)."""
    if spec.tie_word_embeddings:
        return 0
    bias = spec.vocab_size if architecture(spec.model_type).lm_head_bias else 0
    return spec.vocab_size * spec.hidden_size + bias


def count_params(spec: ModelSpec) -> int:
    """causal LM: V·h + L·(attention + MLP + norms) + final norm + lm_head, exact; a general-path
    spec (no architecture record) carries the count of the real model class (planner.general)."""
    if spec.estimate_path == "traced":
        return spec.params
    return (
        embedding_params(spec)
        + decoder_params(spec)
        + final_norm_params(spec)
        + lm_head_params(spec)
    )


def active_mlp_width(spec: ModelSpec) -> int:
    """MLP width a token runs through in a sparse layer: top-k·I_e (each token runs through
    its top-k experts, Shazeer et al. 2017); I in a dense one."""
    if spec.is_moe:
        return expert_width(spec) * spec.num_experts_per_tok
    return spec.intermediate_size


def active_params(spec: ModelSpec) -> int:
    """active per token: total − (sparse layers)·(E − top-k)·(one expert) for MoE (only the
    top-k experts run; the router and the dense layers run whole); total if dense. A
    general-path spec carries the count made on the real model class (planner.general)."""
    if spec.estimate_path == "traced":
        return spec.active_params if spec.active_params is not None else spec.params
    if not spec.is_moe:
        return count_params(spec)
    idle = spec.num_experts - spec.num_experts_per_tok
    return count_params(spec) - moe_layer_count(spec) * idle * expert_params(spec)


def linear_shapes(spec: ModelSpec) -> list[tuple[str, int, int]]:
    """The weight matrices of one decoder layer as (name, in, out), named as in transformers.

    Phi-3's fused `qkv_proj` and `gate_up_proj` appear fused; Phi's output projection is
    `self_attn.dense` and its plain MLP `mlp.fc1`, `mlp.fc2`. For MoE each expert's gate, up and
    down matrices are listed (`mlp.experts.{e}.gate_proj`, ...), and the router as `mlp.gate`;
    transformers 5.24 stores them as stacked 3-D parameters, not nn.Linear modules.
    """
    h, q, kv = spec.hidden_size, q_width(spec), kv_width(spec)
    i = expert_width(spec) if spec.is_moe else spec.intermediate_size
    traits = architecture(spec.model_type)
    out = (f"self_attn.{traits.attention_out}", q, h)
    if traits.fused_projections:
        attention = [("self_attn.qkv_proj", h, q + 2 * kv), out]
    else:
        attention = [
            ("self_attn.q_proj", h, q),
            ("self_attn.k_proj", h, kv),
            ("self_attn.v_proj", h, kv),
            out,
        ]
    if spec.is_moe:
        mlp = [(traits.moe_router, h, spec.num_experts)]
        for e in range(spec.num_experts):
            mlp += [
                (f"{traits.moe_experts}.{e}.gate_proj", h, i),
                (f"{traits.moe_experts}.{e}.up_proj", h, i),
                (f"{traits.moe_experts}.{e}.down_proj", i, h),
            ]
    elif traits.fused_projections:
        mlp = [("mlp.gate_up_proj", h, 2 * i), ("mlp.down_proj", i, h)]
    elif not traits.gated_mlp:
        mlp = [("mlp.fc1", h, i), ("mlp.fc2", i, h)]
    else:
        mlp = [("mlp.gate_proj", h, i), ("mlp.up_proj", h, i), ("mlp.down_proj", i, h)]
    return attention + mlp


def decoder_linear_params(spec: ModelSpec) -> int:
    """quantizable weights: L × the nn.Linear weights of a layer (what bitsandbytes 4-bit replaces).

    lm_head, embeddings, norms and biases stay in the compute dtype. In transformers 5.24 the
    MoE experts and router are 3-D parameters, not nn.Linear, so bitsandbytes leaves them too.
    """
    shapes = linear_shapes(spec)
    if not spec.is_moe:
        return spec.num_layers * sum(n_in * n_out for _, n_in, n_out in shapes)
    attention = sum(n_in * n_out for name, n_in, n_out in shapes if not name.startswith("mlp."))
    dense_layers = spec.num_layers - moe_layer_count(spec)  # Qwen3-MoE's nn.Linear MLPs
    return (
        spec.num_layers * attention + dense_layers * 3 * spec.hidden_size * spec.intermediate_size
    )


def largest_layer_params(spec: ModelSpec) -> int:
    """largest module: max over modules of their own parameters (DeepSpeed's "largest layer"
    in estimate_zero3_model_states_mem_needs_all_live) — usually V·h, for MoE E·3·h·I."""
    candidates = [embedding_params(spec), lm_head_params(spec), final_norm_params(spec)]
    candidates += [n_in * n_out for _, n_in, n_out in linear_shapes(spec)]
    if spec.is_moe:
        candidates.append(spec.num_experts * expert_params(spec))  # one module holds all E
    return max(candidates)


def sequence_classifier_params(spec: ModelSpec, num_labels: int = 1) -> int:
    """sequence classification: the causal LM without lm_head + h·num_labels (`score`, no bias)."""
    return count_params(spec) - lm_head_params(spec) + spec.hidden_size * num_labels


def reward_model_params(spec: ModelSpec) -> int:
    """reward model: base without lm_head + h·1 score (AutoModelForSequenceClassification, num_labels=1)."""
    return sequence_classifier_params(spec, num_labels=1)


def value_model_params(spec: ModelSpec) -> int:
    """value model (PPO critic): the same shape as the reward model, base + h·1 score head."""
    return sequence_classifier_params(spec, num_labels=1)


def model_params(spec: ModelSpec, request: PlanRequest) -> int:
    """the model the run trains, frozen base included: the causal LM, or for reward training
    the sequence classifier (`reward_model_params`: no lm_head, a 1-output score head)."""
    if request.method is Method.reward:
        return reward_model_params(spec)
    return count_params(spec)


def trainable_params(spec: ModelSpec, request: PlanRequest) -> int:
    """what the optimizer updates: the LoRA adapters (`lora_params`), or under full tuning the
    whole model the run trains (`model_params`: for reward training the sequence classifier,
    whose 1-output score head replaces the lm_head)."""
    if request.tuning is Tuning.full:
        return model_params(spec, request)
    return lora_params(spec, request.lora_rank, request.lora_targets.value)


def lora_target_modules(spec: ModelSpec, targets: str) -> str | list[str]:
    """The peft `target_modules` for a target set: module names, or peft's "all-linear" shorthand.

    Phi-3 fuses q, k and v into `qkv_proj`, so "qv" there adapts the whole fused projection
    (peft's own default target for phi3).
    """
    return lora_modules(architecture(spec.model_type), targets)


def lora_modules(traits: ArchitectureTraits, targets: str) -> str | list[str]:
    """`lora_target_modules` from an architecture's traits alone (the trace builds model types
    that have no spec)."""
    target = _targets(targets)
    if target is LoraTargets.all_linear:
        return "all-linear"
    fused, out = traits.fused_projections, traits.attention_out
    if target is LoraTargets.qv:
        return ["qkv_proj"] if fused else ["q_proj", "v_proj"]
    return ["qkv_proj", out] if fused else ["q_proj", "k_proj", "v_proj", out]


def lora_linear_params(n_in: int, n_out: int, rank: int) -> int:
    """LoRA on one linear map: r·(in + out) (A: r×in, B: out×r; Hu et al. 2021)."""
    return rank * (n_in + n_out)


def lora_moe_params(spec: ModelSpec, rank: int) -> int:
    """LoRA on one MoE block as peft 0.21 wraps transformers 5.24's fused experts under "all-linear".

    peft maps the v4 targets (Mixtral's w1, w3, w2, gate; Qwen3-MoE's gate_proj, up_proj,
    down_proj, gate) onto the 3-D parameters: `gate_up_proj` gets rank 2r per expert,
    E·2r·(h + 2I_e); `down_proj` rank r, E·r·(I_e + h); the router r·(h + E). 0 where peft has no
    such mapping (GPT-OSS: its experts and router are no nn.Linear, so nothing is adapted).
    """
    if not architecture(spec.model_type).lora_adapts_experts:
        return 0
    h, i, e = spec.hidden_size, expert_width(spec), spec.num_experts
    gate_up = e * 2 * rank * (h + 2 * i)
    down = e * rank * (i + h)
    return gate_up + down + lora_linear_params(h, e, rank)


def lora_params(spec: ModelSpec, rank: int, targets: str) -> int:
    """LoRA trainable params: L × Σ r·(in + out) over the targeted linears of a decoder layer.

    "qv": q_proj and v_proj; "attention": q, k, v, o; "all-linear": every nn.Linear in the decoder
    layers, not lm_head (peft's rule), and for MoE the experts and router as peft really wraps them.
    """
    if rank <= 0:
        raise InputError(f"LoRA rank must be a positive integer, got {rank}")
    target = _targets(targets)
    shapes = [s for s in linear_shapes(spec) if not s[0].startswith("mlp.")]
    if target is LoraTargets.qv:
        keep = {"self_attn.q_proj", "self_attn.v_proj", "self_attn.qkv_proj"}
        shapes = [s for s in shapes if s[0] in keep]
    per_layer = sum(lora_linear_params(n_in, n_out, rank) for _, n_in, n_out in shapes)
    total = spec.num_layers * per_layer
    if target is LoraTargets.all_linear:
        if spec.is_moe:
            # peft's MoE mapping takes the MLP names for the experts: dense layers get none.
            total += moe_layer_count(spec) * lora_moe_params(spec, rank)
        else:
            mlp = [s for s in linear_shapes(spec) if s[0].startswith("mlp.")]
            mlp_params = sum(lora_linear_params(n_in, n_out, rank) for _, n_in, n_out in mlp)
            total += spec.num_layers * mlp_params
    return total


def _targets(targets: str) -> LoraTargets:
    try:
        return LoraTargets(str(targets).lower())
    except ValueError:
        choices = ", ".join(t.value for t in LoraTargets)
        raise InputError(f"unknown LoRA targets {targets!r}; choose one of {choices}") from None

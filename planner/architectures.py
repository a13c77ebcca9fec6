"""What each supported architecture does differently, one record per Hugging Face `model_type`.

Every switch on `model_type` in the planner reads this table: the config defaults a
config.json may leave out (planner.models), the parameter layout (planner.parameters), the
saved activations (planner.memory) and how a step is traced (planner.trace). Each record
describes the transformers 5.24 implementation of that model type (its `configuration_*.py`
defaults and `modeling_*.py` modules).

Adding an architecture is one record here, plus a tiny config in tests/tiny_architectures.py
for the traced checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ArchitectureTraits:
    """One decoder-only architecture as transformers 5.24 builds it."""

    model_type: str
    max_position_embeddings: int
    """The config class's default for `max_position_embeddings`."""
    num_key_value_heads: int | None = None
    """The config class's default for `num_key_value_heads`; None: one per query head."""
    head_dim: int | None = None
    """The config class's default for `head_dim`; None: hidden_size // num_attention_heads."""
    tie_word_embeddings: bool = False
    """The config class's default for `tie_word_embeddings`."""
    hidden_act: str = "silu"
    """The config class's default activation (`hidden_activation` / `hidden_act`)."""
    attention_bias: Literal["config", "qkv", "all", "none"] = "config"
    """Biases of the attention projections: 'config' (q, k, v and o all follow the config's
    `attention_bias`), 'qkv' (always on q, k, v, never on o: Qwen2Attention), 'all' (always on
    all four: PhiAttention) or 'none'."""
    attention_out: str = "o_proj"
    """The attention output projection's module name in `self_attn` (Phi: `dense`)."""
    mlp_bias_from_config: bool = False
    """The MLP's projections follow the config's `mlp_bias` (LlamaMLP); else never biased."""
    gated_mlp: bool = True
    """A gated MLP (gate, up, down: SwiGLU / GeGLU); False: two biased linears `fc1`, act,
    `fc2` (PhiMLP)."""
    norm: Literal["llama", "gemma", "olmo2", "layernorm"] = "llama"
    """Norm style: 'llama' (LlamaRMSNorm: fp32 variance, normalised value cast back before
    the weight), 'gemma' (GemmaRMSNorm: computed and scaled by (1 + weight) in fp32), 'olmo2'
    (Olmo2RMSNorm: scaled by the weight in fp32, then cast back) or 'layernorm' (nn.LayerNorm:
    a weight and a bias, fp32 mean and rstd per token: Phi)."""
    post_norm: bool = False
    """The layer's norms sit on the attention and MLP outputs, before the residual add, and the
    projections read the raw residual stream (Olmo2DecoderLayer); else pre-norm."""
    parallel_block: bool = False
    """Attention and MLP both read one norm's output and add to the residual together
    (PhiDecoderLayer, GPT-J style)."""
    residual_dropout_key: str | None = None
    """The config key of a dropout on the attention and MLP outputs (Phi's `resid_pdrop`),
    live only where TRL leaves dropout on (SFT)."""
    lm_head_bias: bool = False
    """The lm_head carries a bias of V (PhiForCausalLM)."""
    norms_per_layer: int = 2
    """RMSNorms in one decoder layer (Gemma-2 adds a norm after attention and after the MLP)."""
    qk_norm: bool = False
    """An RMSNorm over the head dim on queries and keys (Qwen3Attention)."""
    qk_norm_key: str | None = None
    """The config key that switches such norms on, when optional (Phi's `qk_layernorm`)."""
    qk_norm_over_projection: bool = False
    """The q/k norms span the whole projection, a·d and k·d wide, not one head (Olmo2)."""
    fused_projections: bool = False
    """q/k/v fused into `qkv_proj` and gate/up into `gate_up_proj` (Phi-3)."""
    experts_key: str | None = None
    """The config key holding the number of experts of a mixture-of-experts MLP; None: dense."""
    experts_per_token_key: str = "num_experts_per_tok"
    """The config key holding how many experts each token runs through."""
    default_experts: int = 0
    default_experts_per_token: int = 0
    """The config class's defaults for the two keys above."""
    moe_router: str = "mlp.gate"
    """The router's module name in a decoder layer (a linear h -> experts)."""
    moe_experts: str = "mlp.experts"
    """The experts' module name in a decoder layer (stacked 3-D parameters in transformers 5.24)."""
    moe_biases: bool = False
    """The router and the experts carry biases: E on the router, 2·I per expert on the fused
    gate_up and h on down (GptOssTopKRouter, GptOssExperts)."""
    expert_width_key: str | None = None
    """The config key of one expert's intermediate width (Qwen3-MoE's `moe_intermediate_size`);
    None: the experts are `intermediate_size` wide."""
    default_expert_width: int = 0
    """The config class's default for `expert_width_key`."""
    sparse_step_key: str | None = None
    """The config key of the MoE layer frequency (Qwen3-MoE's `decoder_sparse_step`: layer i is
    sparse when (i + 1) % step == 0); None: every layer is sparse."""
    dense_layers_key: str | None = None
    """The config key listing layers that keep a dense MLP of `intermediate_size`
    (Qwen3-MoE's `mlp_only_layers`)."""
    router_softmax_all: bool = True
    """The router takes an fp32 softmax over all E logits before its top-k (Mixtral, Qwen3-MoE);
    False: top-k over the logits, then a softmax over the k chosen (GptOssTopKRouter)."""
    attention_sinks: bool = False
    """Each attention layer holds a learned sink logit per query head (`self_attn.sinks`, a
    parameter of a) that joins the softmax (GptOssAttention); eager attention then keeps one
    w-dtype softmax per head instead of an fp32 one and its cast."""
    sdpa: bool = True
    """transformers 5.24 runs the model with sdpa by default; False: with eager attention,
    which is what a run gets without a hub flash kernel (GPT-OSS: `_supports_sdpa = False`)."""
    lora_adapts_experts: bool = True
    """peft 0.21's "all-linear" adapts a MoE model's experts and router (its transformers-v5
    mapping of the v4 expert names onto the stacked parameters: Mixtral, Qwen3-MoE) and then
    leaves the dense layers' MLPs out; False: peft has no mapping for the model type and
    "all-linear" adapts the attention alone (GPT-OSS: experts and router are no nn.Linear)."""
    sequence_classifier: bool = True
    """transformers 5.24 has a `<Model>ForSequenceClassification` for it, which a reward model,
    and PPO's value model, are built as (AutoModelForSequenceClassification); False: Granite."""
    attention_bias_default: bool = False
    """The config class's default for `attention_bias` (GptOssConfig: True)."""
    attention_softcapping: bool = False
    """Eager attention tanh-softcaps its scores (`attn_logit_softcapping`), keeping one more
    s x s tensor per head."""
    final_logit_softcapping: str | None = None
    """The config key of the final logit softcapping (tanh on the logits), when the model has one."""
    eager_only: bool = False
    """Traced with eager attention whatever is asked: Gemma-2 with sdpa raises in transformers
    5.24 (softcapping), and eager is what its model card asks for; GPT-OSS has no sdpa
    (`_supports_sdpa = False`: its sinks need eager or a hub flash kernel)."""

    @property
    def is_moe(self) -> bool:
        return self.experts_key is not None


ARCHITECTURES: dict[str, ArchitectureTraits] = {
    t.model_type: t
    for t in (
        ArchitectureTraits("llama", max_position_embeddings=2048, mlp_bias_from_config=True),
        ArchitectureTraits(
            "mistral", max_position_embeddings=131072, num_key_value_heads=8, attention_bias="none"
        ),
        ArchitectureTraits(
            "mixtral",
            max_position_embeddings=131072,
            num_key_value_heads=8,
            attention_bias="none",
            experts_key="num_local_experts",
            default_experts=8,
            default_experts_per_token=2,
        ),
        ArchitectureTraits("qwen2", max_position_embeddings=32768, attention_bias="qkv"),
        ArchitectureTraits("qwen3", max_position_embeddings=32768, head_dim=128, qk_norm=True),
        # Qwen3's attention with a sparse MoE MLP: experts `moe_intermediate_size` wide, no
        # shared expert, some layers dense (`mlp_only_layers`, `decoder_sparse_step`).
        ArchitectureTraits(
            "qwen3_moe",
            max_position_embeddings=32768,
            num_key_value_heads=4,
            qk_norm=True,
            experts_key="num_experts",
            default_experts=128,
            default_experts_per_token=8,
            expert_width_key="moe_intermediate_size",
            default_expert_width=768,
            sparse_step_key="decoder_sparse_step",
            dense_layers_key="mlp_only_layers",
        ),
        # Attention sinks and biases, sliding windows on every other layer, biased experts and
        # router; its RMSNorms scale in fp32 and stay fp32 (`_keep_in_fp32_modules`); no sdpa.
        ArchitectureTraits(
            "gpt_oss",
            max_position_embeddings=131072,
            num_key_value_heads=8,
            head_dim=64,
            norm="olmo2",
            attention_bias_default=True,
            attention_sinks=True,
            experts_key="num_local_experts",
            default_experts=128,
            default_experts_per_token=4,
            moe_router="mlp.router",
            moe_biases=True,
            router_softmax_all=False,
            lora_adapts_experts=False,
            sdpa=False,
            eager_only=True,
        ),
        ArchitectureTraits(
            "gemma",
            max_position_embeddings=8192,
            head_dim=256,
            tie_word_embeddings=True,
            hidden_act="gelu_pytorch_tanh",
            norm="gemma",
        ),
        ArchitectureTraits(
            "gemma2",
            max_position_embeddings=8192,
            num_key_value_heads=4,
            head_dim=256,
            tie_word_embeddings=True,
            hidden_act="gelu_pytorch_tanh",
            norm="gemma",
            norms_per_layer=4,
            attention_softcapping=True,
            final_logit_softcapping="final_logit_softcapping",
            eager_only=True,
        ),
        ArchitectureTraits(
            "gemma3_text",
            max_position_embeddings=131072,
            num_key_value_heads=4,
            head_dim=256,
            tie_word_embeddings=True,
            hidden_act="gelu_pytorch_tanh",
            norm="gemma",
            norms_per_layer=4,
            qk_norm=True,
        ),
        ArchitectureTraits(
            "phi3", max_position_embeddings=4096, attention_bias="none", fused_projections=True
        ),
        # Llama with scalar multipliers (embedding, residual, attention, logits): no new tensors.
        ArchitectureTraits(
            "granite",
            max_position_embeddings=2048,
            mlp_bias_from_config=True,
            sequence_classifier=False,
        ),
        ArchitectureTraits(
            "olmo2",
            max_position_embeddings=2048,
            norm="olmo2",
            post_norm=True,
            qk_norm=True,
            qk_norm_over_projection=True,
        ),
        ArchitectureTraits(
            "phi",
            max_position_embeddings=2048,
            hidden_act="gelu_new",
            attention_bias="all",
            attention_out="dense",
            gated_mlp=False,
            norm="layernorm",
            norms_per_layer=1,
            parallel_block=True,
            residual_dropout_key="resid_pdrop",
            lm_head_bias=True,
            qk_norm_key="qk_layernorm",
        ),
    )
}
"""The supported architectures, by `model_type`."""

SUPPORTED_TYPES = tuple(ARCHITECTURES)
"""Decoder-only architectures whose parameter layout planner.parameters models exactly."""

OTHER = ArchitectureTraits("other", max_position_embeddings=2048)
"""What the trace assumes of a model type transformers knows but this table does not
(separate q/k/v projections, llama-style norms, sdpa)."""


def architecture(model_type: str | None) -> ArchitectureTraits:
    """The traits of `model_type`; `OTHER` for a type outside the table (the trace builds any
    architecture transformers knows; the analytic plan refuses them in planner.models)."""
    return ARCHITECTURES.get(model_type or "", OTHER)

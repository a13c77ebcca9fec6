"""Scaled-down config.json dicts of three real architectures, for traced and analytic memory checks.

Each dict is a valid ``config.json`` for transformers 5.x (``AutoConfig.for_model(**d)`` or
``CONFIG_MAPPING[d["model_type"]].from_dict(d)``). They keep the features that change the memory
of a training step (grouped-query attention, biases, tied embeddings, softcapping, norms per
layer, a vocabulary large against the hidden size, eager attention for Gemma2) and shrink the
sizes so that a traced step takes about a second. ``max_position_embeddings`` covers seq 1024.
"""

from __future__ import annotations

# Llama-style, scaled from Llama-3-8B (hidden 4096, 32 layers, 32 heads / 8 KV heads,
# intermediate 14336 = 3.5 x hidden, vocab 128256 = 31 x hidden, untied, no biases):
# hidden / 16, 4 layers, same 4:1 GQA, same intermediate ratio, vocab ~ 32 x hidden.
LLAMA_TINY: dict = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 256,
    "intermediate_size": 896,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "vocab_size": 8192,
    "max_position_embeddings": 2048,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "attention_bias": False,
    "mlp_bias": False,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "torch_dtype": "bfloat16",
}

# Qwen2-style, scaled from Qwen2.5-0.5B (hidden 896, 24 layers, 14 heads / 2 KV heads, head_dim 64,
# intermediate 4864 = 5.4 x hidden, vocab 151936 = 170 x hidden, biases on q/k/v only, tied
# embeddings): hidden 256, 4 layers, 4 heads / 2 KV heads of 64, intermediate 1376, vocab 9472.
QWEN2_TINY: dict = {
    "model_type": "qwen2",
    "architectures": ["Qwen2ForCausalLM"],
    "hidden_size": 256,
    "intermediate_size": 1376,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 9472,
    "max_position_embeddings": 4096,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "use_sliding_window": False,
    "sliding_window": 4096,
    "max_window_layers": 4,
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "torch_dtype": "bfloat16",
}

# Gemma2-style, scaled from Gemma-2-2B (hidden 2304, 26 layers, 8 heads / 4 KV heads, head_dim 256,
# intermediate 9216 = 4 x hidden, vocab 256000, tied, 4 RMSNorms per layer, attention softcap 50,
# final logit softcap 30, sliding window 4096 on every other layer; traced with eager attention):
# hidden 256, 4 layers, 4 heads / 2 KV heads of 64, intermediate 1024, vocab 16384, window 512.
GEMMA2_TINY: dict = {
    "model_type": "gemma2",
    "architectures": ["Gemma2ForCausalLM"],
    "hidden_size": 256,
    "intermediate_size": 1024,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "vocab_size": 16384,
    "max_position_embeddings": 8192,
    "hidden_activation": "gelu_pytorch_tanh",
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "attention_bias": False,
    "query_pre_attn_scalar": 64,
    "sliding_window": 512,
    "attn_logit_softcapping": 50.0,
    "final_logit_softcapping": 30.0,
    "tie_word_embeddings": True,
    "bos_token_id": 2,
    "eos_token_id": 1,
    "pad_token_id": 0,
    "torch_dtype": "bfloat16",
}

TINY_ARCHITECTURES: dict[str, dict] = {
    "llama": LLAMA_TINY,
    "qwen2": QWEN2_TINY,
    "gemma2": GEMMA2_TINY,
}
"""The three scaled-down configs by short name, in the order the trace matrix lists them."""


def _variant(base: dict, model_type: str, architecture: str, **fields) -> dict:
    config = {**base, "model_type": model_type, "architectures": [architecture], **fields}
    return {k: v for k, v in config.items() if v is not None}


# The other architectures of planner/architectures.py, each the Llama-style tiny config with
# the keys its own config class reads (fewer layers: they are only built, counted and traced
# once each).
MISTRAL_TINY = _variant(LLAMA_TINY, "mistral", "MistralForCausalLM", sliding_window=None)
MIXTRAL_TINY = _variant(
    LLAMA_TINY, "mixtral", "MixtralForCausalLM", num_local_experts=4, num_experts_per_tok=2
)
QWEN3_TINY = _variant(QWEN2_TINY, "qwen3", "Qwen3ForCausalLM", head_dim=64)
GEMMA_TINY = _variant(
    GEMMA2_TINY,
    "gemma",
    "GemmaForCausalLM",
    query_pre_attn_scalar=None,
    sliding_window=None,
    attn_logit_softcapping=None,
    final_logit_softcapping=None,
)
PHI3_TINY = _variant(LLAMA_TINY, "phi3", "Phi3ForCausalLM", head_dim=None)

# Phi-style, scaled from Phi-2 (hidden 2560, 32 layers, 32 heads of 80, no GQA, intermediate
# 10240 = 4 x hidden, vocab 51200 = 20 x hidden, parallel attention + MLP under one biased
# LayerNorm, gelu_new fc1/fc2, 40% rotary, resid_pdrop 0.1, biased lm_head): hidden 256,
# 2 layers, 8 heads of 32, intermediate 1024, vocab 5120.
PHI_TINY: dict = {
    "model_type": "phi",
    "architectures": ["PhiForCausalLM"],
    "hidden_size": 256,
    "intermediate_size": 1024,
    "num_hidden_layers": 2,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "vocab_size": 5120,
    "max_position_embeddings": 2048,
    "hidden_act": "gelu_new",
    "layer_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "partial_rotary_factor": 0.4,
    "resid_pdrop": 0.1,
    "embd_pdrop": 0.0,
    "attention_dropout": 0.0,
    "qk_layernorm": False,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "torch_dtype": "bfloat16",
}

# OLMo-2-style (post-norm, q/k RMSNorms over the whole projections), the Llama-style config
# with OLMo-2-7B's 1:1 heads (32 of 128, no GQA) scaled to 8 of 32.
OLMO2_TINY = _variant(
    LLAMA_TINY, "olmo2", "Olmo2ForCausalLM", num_key_value_heads=8, head_dim=None, mlp_bias=None
)

# Granite-style: Granite-3.1-8B's multipliers and tied embeddings on the Llama-style config.
GRANITE_TINY = _variant(
    LLAMA_TINY,
    "granite",
    "GraniteForCausalLM",
    embedding_multiplier=12.0,
    residual_multiplier=0.22,
    attention_multiplier=0.0078125,
    logits_scaling=16.0,
    tie_word_embeddings=True,
)

# Gemma-3-style: Gemma-2's layout with per-head q/k RMSNorms and no softcapping, sliding
# windows on five layers in six (traced with sdpa).
GEMMA3_TEXT_TINY = _variant(
    GEMMA2_TINY,
    "gemma3_text",
    "Gemma3ForCausalLM",
    attn_logit_softcapping=None,
    final_logit_softcapping=None,
)

# Qwen3-MoE-style, scaled from Qwen3-30B-A3B (hidden 2048, 48 layers, 32 heads of 128 / 4 KV
# heads, 128 experts of moe_intermediate_size 768 = 0.375 x hidden, top-8 with norm_topk_prob,
# vocab 151936, untied): the Qwen3-style config with 8 experts of 96, top-2, and layer 0 dense
# (`mlp_only_layers`, intermediate_size 1376) to keep the dense-layer rule in view.
QWEN3_MOE_TINY = _variant(
    QWEN3_TINY,
    "qwen3_moe",
    "Qwen3MoeForCausalLM",
    num_experts=8,
    num_experts_per_tok=2,
    moe_intermediate_size=96,
    norm_topk_prob=True,
    decoder_sparse_step=1,
    mlp_only_layers=[0],
    tie_word_embeddings=False,
)

# GPT-OSS-style, scaled from gpt-oss-20b (hidden 2880, 24 layers, 64 heads of 64 / 8 KV heads,
# 32 experts of 2880, top-4, biased attention, experts and router, attention sinks, sliding
# window 128 on every other layer, vocab 201088 = 70 x hidden, untied; traced with eager
# attention): hidden 256, 4 layers, 8 heads of 32 / 2 KV heads, 8 experts of 256, top-2.
GPT_OSS_TINY: dict = {
    "model_type": "gpt_oss",
    "architectures": ["GptOssForCausalLM"],
    "hidden_size": 256,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "vocab_size": 16384,
    "max_position_embeddings": 4096,
    "sliding_window": 128,
    "attention_bias": True,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-5,
    "rope_theta": 150000.0,
    "swiglu_limit": 7.0,
    "router_aux_loss_coef": 0.9,
    "output_router_logits": False,
    "tie_word_embeddings": False,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "torch_dtype": "bfloat16",
}

ARCHITECTURE_CONFIGS: dict[str, dict] = {
    "llama": LLAMA_TINY,
    "mistral": MISTRAL_TINY,
    "mixtral": MIXTRAL_TINY,
    "qwen2": QWEN2_TINY,
    "qwen3": QWEN3_TINY,
    "gemma": GEMMA_TINY,
    "gemma2": GEMMA2_TINY,
    "phi3": PHI3_TINY,
    "phi": PHI_TINY,
    "olmo2": OLMO2_TINY,
    "granite": GRANITE_TINY,
    "gemma3_text": GEMMA3_TEXT_TINY,
    "qwen3_moe": QWEN3_MOE_TINY,
    "gpt_oss": GPT_OSS_TINY,
}
"""One tiny config per record of planner/architectures.py, by model_type (a new architecture
adds its own here; tests/test_models.py and tests/test_trace.py check each)."""

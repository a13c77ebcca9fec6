"""Reading an integer field of a model's config.json: present (or defaulted), positive, and
below a ceiling that keeps the estimate's arithmetic finite. Shared by the fast path
(planner.models) and the general path (planner.general)."""

from __future__ import annotations

from typing import Any

from planner.errors import InputError
from planner.files import short

CONFIG_CEILINGS = {
    "hidden_size": 262_144,
    "num_hidden_layers": 4_096,
    "num_attention_heads": 16_384,
    "num_key_value_heads": 16_384,
    "head_dim": 65_536,
    "intermediate_size": 1_048_576,
    "vocab_size": 16_777_216,
    "max_position_embeddings": 1_073_741_824,
    "num_local_experts": 4_096,
    "num_experts": 4_096,
    "moe_intermediate_size": 1_048_576,
    "decoder_sparse_step": 4_096,
    "num_experts_per_tok": 4_096,
}
"""Largest value accepted for each config.json integer: about 10x past the largest released
model (hidden 16,384 and 126 layers in Llama-3.1-405B, 262k vocabularies, 10M-token contexts),
so the estimate's arithmetic stays finite."""


def positive_int(config: dict[str, Any], field: str, where: str, default: int | None = None) -> int:
    value = config.get(field)
    if value is None:
        if default is None:
            raise InputError(f"{where}: the config has no '{field}'")
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InputError(f"{where}: '{field}' must be a positive integer, got {short(value)}")
    ceiling = CONFIG_CEILINGS[field]
    if value > ceiling:
        raise InputError(f"{where}: '{field}' must be at most {ceiling:,}, got {short(value)}")
    return value

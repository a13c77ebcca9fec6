"""TRL config defaults that a `PlanRequest` fills in while it is validated.

They sit apart from `planner.recipes` (whose GRPO and RLOO recipes read them from here) because
`planner.specs` must not import the recipes, which import the request. Keyed by method name,
as TRL 1.12 sets them.
"""

from __future__ import annotations

NUM_GENERATIONS: dict[str, int] = {
    "grpo": 8,  # trl/trainer/grpo_config.py: GRPOConfig.num_generations = 8
    "rloo": 2,  # trl/trainer/rloo_config.py: RLOOConfig.num_generations = 2
}
"""Completions per prompt when `--num-generations` is not given."""

VLLM_GPU_MEMORY_UTILIZATION = 0.3
"""The share of each training GPU a colocated vLLM engine takes when `--vllm-memory` is not
given (trl/trainer/grpo_config.py and rloo_config.py: `vllm_gpu_memory_utilization = 0.3`)."""

VLLM_SERVE_GPU_MEMORY_UTILIZATION = 0.9
"""The share of each of its GPUs a `trl vllm-serve` server takes (trl/scripts/vllm_serve.py:
`gpu_memory_utilization = 0.9`)."""

VLLM_SERVER_HOST = "0.0.0.0"
VLLM_SERVER_PORT = 8000
"""Where the trainer reaches a vLLM server, and where `trl vllm-serve` listens (GRPOConfig /
RLOOConfig `vllm_server_host` / `vllm_server_port`; vllm_serve.py `host` / `port`)."""

VLLM_METHODS = ("grpo", "rloo")
"""Methods whose TRL trainer can generate with vLLM (`use_vllm` in GRPOConfig / RLOOConfig;
TRL 1.12's PPO has no vLLM path)."""

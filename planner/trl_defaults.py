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

"""The demo run: any method on a tiny random-weight model built here, with demo data written
for the method, on CPU, in about a minute. `advisor launch --demo` and the wizard's demo
launch both take their settings from `demo()`, so the two runs are the same."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.recipes import recipe
from planner.specs import Method, Tuning

DEMO_LEARNING_RATE = 5e-4
"""A tiny random-weight model moves visibly in a few steps only at a high rate."""
DEMO_STEPS = 8
DEMO_SAVE_STEPS = 4


def tiny_model_dir() -> Path:
    """Where the demo's tiny model is built once and kept (the user's cache folder)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "alignment-advisor" / "tiny-llama"


@dataclass(frozen=True)
class Demo:
    """What a demo run of one method trains: plan settings and launch options."""

    request: dict[str, Any]
    """`PlanRequest` fields: the tiny model and its demo data, LoRA, short sequences."""
    options: dict[str, Any]
    """`LaunchOptions` fields: CPU, a few steps, the demo's learning rate and why."""


def demo(
    method: Method,
    data_dir: Path,
    *,
    max_steps: int | None = None,
    save_steps: int | None = None,
    learning_rate: float | None = None,
) -> Demo:
    """Build the tiny model (once) and write `method`'s demo data under `data_dir`."""
    from runners.tiny import ensure_model, write_demo_dataset

    request: dict[str, Any] = {
        "model": str(ensure_model(tiny_model_dir())),
        "dataset": str(write_demo_dataset(method, data_dir)),
        "method": method,
        "tuning": Tuning.lora,
        "seq_len": 64,
        "prompt_len": None,  # the demo's short sequence splits itself
        "completion_len": None,
        "batch_size": 2,
        "grad_accum": 1,
        "grad_checkpointing": False,
        "samples": None,
    }
    if method in (Method.grpo, Method.rloo):
        request["num_generations"] = 2  # divides the demo's batch of 2
    if method is Method.ppo:
        request["ppo_epochs"] = 1
    options: dict[str, Any] = {
        "device": "cpu",
        "max_steps": max_steps or DEMO_STEPS,
        "save_steps": save_steps or DEMO_SAVE_STEPS,
    }
    if learning_rate is None:
        usual = recipe(method).learning_rate_for(Tuning.lora).value
        options["learning_rate"] = DEMO_LEARNING_RATE
        options["learning_rate_reason"] = (
            f"demo: a tiny random-weight model learns visibly at {DEMO_LEARNING_RATE:g}; a real "
            f"{method.value} LoRA run starts at {usual:g}"
        )
    else:
        options["learning_rate"] = learning_rate
    return Demo(request=request, options=options)

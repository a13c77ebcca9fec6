"""The loss steps of the traced methods, one module per method or family; each takes a
``Step`` and returns the loss its trainer back-propagates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from planner.specs import Method
from planner.trace.steps.common import Step
from planner.trace.steps.dpo_kto import dpo_step, kto_step
from planner.trace.steps.orpo_simpo import orpo_step, simpo_step
from planner.trace.steps.reward import reward_step
from planner.trace.steps.sft import SFT_CHUNK_SIZE, sft_step

__all__ = ["SFT_CHUNK_SIZE", "STEPS"]

STEPS: dict[Method, Callable[[Step], Any]] = {
    Method.sft: sft_step,
    Method.dpo: dpo_step,
    Method.kto: kto_step,
    Method.orpo: orpo_step,
    Method.simpo: simpo_step,
    Method.reward: reward_step,
}
"""The loss step of each traced method; ``TRACED_METHODS`` is its keys."""

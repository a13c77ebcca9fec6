"""Methods and tuning setups as people write them (SimPO, not simpo; LoRA, not lora)."""

from __future__ import annotations

from planner.specs import Method, Tuning

METHOD_NAMES = {
    Method.sft: "SFT",
    Method.dpo: "DPO",
    Method.ppo: "PPO",
    Method.grpo: "GRPO",
    Method.rloo: "RLOO",
    Method.kto: "KTO",
    Method.orpo: "ORPO",
    Method.simpo: "SimPO",
}

TUNING_NAMES = {Tuning.full: "full tuning", Tuning.lora: "LoRA", Tuning.qlora: "QLoRA"}


def label(method: Method) -> str:
    """A method's name as people write it (SimPO, not simpo)."""
    return METHOD_NAMES.get(method, method.value.upper())


def tuning_label(tuning: Tuning) -> str:
    """A tuning setup's name as people write it: full tuning, LoRA or QLoRA."""
    return TUNING_NAMES[tuning]

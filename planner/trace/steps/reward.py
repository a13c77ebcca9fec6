"""The traced loss of reward-model training (TRL 1.12's RewardTrainer)."""

from __future__ import annotations

from typing import Any

from planner.trace.steps.common import Step


def reward_step(step: Step) -> Any:
    """RewardTrainer.compute_loss: a sequence-classification model on chosen+rejected
    (the collator concatenates them), loss -logsigmoid(r_chosen - r_rejected)."""
    import torch.nn.functional as F

    with step.phase("forward"):
        _, logits = step.policy(
            input_ids=step.inputs["input_ids"], attention_mask=step.inputs["attention_mask"]
        )
    with step.phase("loss"):
        rewards_chosen, rewards_rejected = logits.squeeze(-1).chunk(2)
        loss = -F.logsigmoid(rewards_chosen - rewards_rejected).mean()
    return loss

"""The traced losses of the methods with a reference: DPO and KTO (TRL 1.12)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from planner.trace.steps.common import Step, entropy_from_logits, masked_rows, selective_log_softmax


def dpo_step(step: Step) -> Any:
    """DPOTrainer._compute_loss (sigmoid loss): the policy forward on chosen+rejected first,
    its log-probs, then the reference forward (its logits stay referenced to the end), the
    loss, then no-grad metrics on the full logits (entropy, mean logits, token accuracy)."""
    import torch
    import torch.nn.functional as F

    inputs, beta = step.inputs, 0.1
    input_ids, completion_mask = inputs["input_ids"], inputs["completion_mask"]
    with step.phase("forward"):
        _, logits = step.policy(input_ids=input_ids, attention_mask=inputs["attention_mask"])
    with step.phase("loss"):
        shift_logits = logits[..., :-1, :]
        shift_labels = input_ids[..., 1:]
        shift_completion_mask = completion_mask[..., 1:]
        per_token_logps = selective_log_softmax(shift_logits, shift_labels)
        per_token_logps[shift_completion_mask == 0] = 0.0
        logps = per_token_logps.sum(dim=1)
        chosen_logps, rejected_logps = logps.chunk(2, dim=0)

    ref_logits = None
    if step.setup.loop.reference == "none":  # precomputed reference log-probs
        ref_chosen_logps, ref_rejected_logps = (
            inputs["ref_chosen_logps"],
            inputs["ref_rejected_logps"],
        )
    else:
        with step.phase("reference_forward"):
            _, ref_logits = step.reference(
                input_ids=input_ids, attention_mask=inputs["attention_mask"]
            )
            ref_per_token_logps = selective_log_softmax(ref_logits[..., :-1, :], shift_labels)
            ref_per_token_logps[shift_completion_mask == 0] = 0.0
            ref_chosen_logps, ref_rejected_logps = ref_per_token_logps.sum(dim=1).chunk(2, dim=0)

    with step.phase("loss"):
        chosen_logratios = chosen_logps - ref_chosen_logps
        rejected_logratios = rejected_logps - ref_rejected_logps
        delta_score = chosen_logratios - rejected_logratios
        loss = 0.0 + (-F.logsigmoid(beta * delta_score)).mean() * 1.0

        per_token_entropy = entropy_from_logits(shift_logits.detach())
        entropy_sum = (per_token_entropy * shift_completion_mask).sum()
        chosen_logits, rejected_logits = shift_logits.detach().chunk(2, dim=0)
        total_chosen_logits = masked_rows(step, chosen_logits).mean(-1).sum()
        total_rejected_logits = masked_rows(step, rejected_logits).mean(-1).sum()
        predictions = chosen_logits.argmax(dim=-1)
        chosen_mask = shift_completion_mask[: len(shift_completion_mask) // 2].bool()
        correct = ((predictions == shift_labels[: len(shift_labels) // 2]) & chosen_mask).sum()
        with torch.no_grad():
            margins = beta * chosen_logratios.detach() - beta * rejected_logratios.detach()
        del entropy_sum, total_chosen_logits, total_rejected_logits, correct, margins
    del ref_logits  # TRL's ref_outputs lives until _compute_loss returns
    return loss


def kto_step(step: Step) -> Any:
    """KTOTrainer._compute_loss: the KL batch through the policy under no_grad first, the
    policy forward, the reference on the KL batch and on the batch, the KTO loss, then no-grad
    metrics (entropy; chosen/rejected logits copied out with index_select)."""
    import torch
    import torch.nn.functional as F

    inputs, beta = step.inputs, 0.1
    input_ids = inputs["input_ids"]
    chosen_idx, rejected_idx = inputs["chosen_idx"], inputs["rejected_idx"]

    def kl_logps(forward: Callable[..., Any]) -> Any:
        _, kl_logits = forward(
            input_ids=inputs["KL_input_ids"], attention_mask=inputs["KL_attention_mask"]
        )
        per_token = selective_log_softmax(kl_logits[:, :-1, :], inputs["KL_input_ids"][:, 1:])
        per_token[inputs["KL_completion_mask"][:, 1:] == 0] = 0.0
        return per_token.sum(-1)

    def policy_no_grad(**kwargs: Any) -> Any:
        with torch.no_grad():
            return step.policy(**kwargs)

    with step.phase("kl_forward"):
        kl_policy_logps = kl_logps(policy_no_grad)
    with step.phase("forward"):
        _, logits = step.policy(input_ids=input_ids, attention_mask=inputs["attention_mask"])
    with step.phase("loss"):
        shift_logits = logits[:, :-1, :]
        per_token_logps = selective_log_softmax(shift_logits, input_ids[:, 1:])
        per_token_logps[inputs["completion_mask"][:, 1:] == 0] = 0.0
        completion_logps = per_token_logps.sum(-1)
        chosen_logps = completion_logps.index_select(0, chosen_idx)
        rejected_logps = completion_logps.index_select(0, rejected_idx)

    ref_logits = None
    if step.setup.loop.reference == "none":  # precomputed reference log-probs
        ref_chosen_logps = inputs["ref_logps"].index_select(0, chosen_idx)
        ref_rejected_logps = inputs["ref_logps"].index_select(0, rejected_idx)
        ref_kl_logps = inputs["ref_KL_logps"]
    else:
        with step.phase("reference_forward"):
            ref_kl_logps = kl_logps(step.reference)
            _, ref_logits = step.reference(
                input_ids=input_ids, attention_mask=inputs["attention_mask"]
            )
            ref_per_token = selective_log_softmax(ref_logits[:, :-1, :], input_ids[:, 1:])
            ref_per_token[inputs["completion_mask"][:, 1:] == 0] = 0.0
            ref_completion_logps = ref_per_token.sum(-1)
            ref_chosen_logps = ref_completion_logps.index_select(0, chosen_idx)
            ref_rejected_logps = ref_completion_logps.index_select(0, rejected_idx)

    with step.phase("loss"):
        kl = (kl_policy_logps - ref_kl_logps).mean().detach().clamp(min=0)
        chosen_losses = 1 - F.sigmoid(beta * (chosen_logps - ref_chosen_logps - kl))
        rejected_losses = 1 - F.sigmoid(beta * (kl - (rejected_logps - ref_rejected_logps)))
        losses = torch.cat((1.0 * chosen_losses, 1.0 * rejected_losses), 0)

        per_token_entropy = entropy_from_logits(shift_logits.detach())
        shift_completion_mask = inputs["completion_mask"][:, 1:]
        entropy_sum = (per_token_entropy * shift_completion_mask).sum()
        chosen_logits = shift_logits.detach().index_select(0, chosen_idx)
        rejected_logits = shift_logits.detach().index_select(0, rejected_idx)
        total_chosen_logits = masked_rows(step, chosen_logits).mean(-1).sum()
        total_rejected_logits = masked_rows(step, rejected_logits).mean(-1).sum()
        loss = losses.nanmean()
        del entropy_sum, total_chosen_logits, total_rejected_logits, chosen_logits, rejected_logits
    del ref_logits
    return loss

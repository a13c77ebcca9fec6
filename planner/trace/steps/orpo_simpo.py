"""The traced losses of the reference-free preference methods: ORPO and SimPO (TRL 1.12's
ORPOTrainer and CPOTrainer)."""

from __future__ import annotations

from typing import Any

from planner.trace.steps.common import Step, selective_log_softmax


def _batch_logps(logits: Any, labels: Any, average: bool) -> Any:
    """ORPOTrainer / CPOTrainer.get_batch_logps (decoder-only)."""
    import torch

    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    loss_mask = labels != -100
    labels = torch.where(labels == -100, 0, labels)
    per_token_logps = selective_log_softmax(logits, labels)
    if average:
        return (per_token_logps * loss_mask).sum(-1) / loss_mask.sum(-1)
    return (per_token_logps * loss_mask).sum(-1)


def _nll(logits: Any, labels: Any) -> Any:
    """The ``cross_entropy_loss`` of ORPO/CPO's concatenated_forward: a contiguous shifted copy."""
    import torch.nn as nn

    logits = logits[..., :-1, :].contiguous()
    labels = labels[..., 1:].contiguous()
    return nn.CrossEntropyLoss()(logits.view(-1, logits.shape[-1]), labels.view(-1))


def orpo_step(step: Step, simpo: bool = False) -> Any:
    """ORPOTrainer (NLL on the chosen half + odds ratio) or CPOTrainer with loss_type="simpo"
    and cpo_alpha=0 (no NLL): one forward on chosen+rejected, no reference."""
    import torch
    import torch.nn.functional as F

    inputs, b, beta = step.inputs, step.b, 0.1

    def joined(key: str) -> Any:
        return torch.cat((inputs[f"chosen_{key}"], inputs[f"rejected_{key}"]), dim=0)

    def log1mexp(x: Any) -> Any:
        return torch.where(
            x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x))
        )

    input_ids, attention_mask = joined("input_ids"), joined("attention_mask")
    concatenated_labels = joined("labels")
    with step.phase("forward"):
        _, all_logits = step.policy(input_ids=input_ids, attention_mask=attention_mask)
    with step.phase("loss"):
        if simpo:
            labels = concatenated_labels.clone()
            nll_loss = torch.tensor(0.0)
        else:
            labels = torch.where(attention_mask == 1, input_ids.clone(), -100)
            nll_loss = _nll(all_logits[:b], labels[:b])
        all_logps = _batch_logps(all_logits, concatenated_labels, average=True)
        chosen_logps, rejected_logps = all_logps[:b], all_logps[b:]
        if simpo:
            logits = chosen_logps - rejected_logps - 0.5 / beta
            loss = (-F.logsigmoid(beta * logits)).mean() + 0.0 * nll_loss
            chosen_logits, rejected_logits = all_logits[:b], all_logits[b:]
        else:
            chosen_logps, rejected_logps = chosen_logps.float(), rejected_logps.float()
            log_odds = (chosen_logps - rejected_logps) - (
                log1mexp(chosen_logps) - log1mexp(rejected_logps)
            )
            loss = nll_loss - (beta * F.logsigmoid(log_odds)).mean()
            chosen_logits, rejected_logits = all_logits[:b, :-1, :], all_logits[b:, :-1, :]
        means = (chosen_logits.detach().mean(), rejected_logits.detach().mean())
        del means
    return loss


def simpo_step(step: Step) -> Any:
    return orpo_step(step, simpo=True)

"""The shape of one method's step for a given request, as the memory and time models read it.

Every fact comes from the method's recipe (`planner.recipes`); this module only applies it to
a request (tuning, `--beta`, precomputed reference).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from planner.recipes import recipe
from planner.specs import Method, PlanRequest


@dataclass(frozen=True)
class Loop:
    """The shape of one method's step."""

    method: Method
    rows_per_sample: int = 1
    """Sequences the policy runs with gradients per micro-batch sample (DPO: chosen + rejected)."""
    no_grad_rows_per_sample: int = 0
    """Extra sequences the policy runs without gradients (KTO's mismatched KL batch)."""
    reference: str = "none"
    """'none', 'copy' (a second frozen model) or 'adapter-disabled' (LoRA base, no copy)."""
    reward_model: bool = False
    value_model: bool = False
    generates: bool = False
    generates_in_process: bool = False
    """Rollouts run through transformers' generate in the training process (not vLLM)."""
    sequence_classifier: bool = False
    """The trained model scores sequences (reward training): no vocabulary logits."""
    beta: float | None = None
    logit_copies_16bit: float | None = None
    """16-bit logit-sized tensors live at the loss's high point when the logits stay 16-bit
    (the recipe's count, plus the reference's logits, which TRL keeps until the loss returns);
    None when the method's loss was not traced."""
    entropy_metric: bool = False
    notes: tuple[str, ...] = ()


def loop(request: PlanRequest) -> Loop:
    """The loop of `request.method` with the request's tuning and reference settings, read from
    the method's recipe."""
    r = recipe(request.method)
    return Loop(
        request.method,
        rows_per_sample=r.rows_per_sample,
        no_grad_rows_per_sample=r.no_grad_rows_per_sample,
        reference=r.reference_kind(request),
        reward_model=r.reward_model,
        value_model=r.value_model,
        generates=r.generates,
        generates_in_process=r.generates_in_process(request),
        sequence_classifier=r.sequence_classifier,
        beta=r.kl_value(request),
        logit_copies_16bit=_logit_copies(r.logit_copies_16bit, request, r.reference_kind(request)),
        entropy_metric=r.entropy_metric,
        notes=tuple(r.loop_notes(request)),
    )


def sequence_tokens(request: PlanRequest, lp: Loop | None = None) -> tuple[int, int]:
    """(tokens per row run through the model, tokens per row that need logits): prompt +
    completion and the completion alone for a method that generates, else `seq_len` for both."""
    lp = lp or loop(request)
    if lp.generates:
        prompt, completion = request.prompt_and_completion()
        return prompt + completion, completion
    return request.seq_len, request.seq_len


def _logit_copies(
    own: float | Callable[[PlanRequest], float] | None, request: PlanRequest, reference: str
) -> float | None:
    if own is None:
        return None
    count = own(request) if callable(own) else own
    return count + (1 if reference != "none" else 0)

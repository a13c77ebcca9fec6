"""The shape of one method's step for a given request, as the memory and time models read it.

Every fact comes from the method's recipe (`planner.recipes`); this module only applies it to
a request (tuning, `--beta`, precomputed reference).
"""

from __future__ import annotations

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
    sequence_classifier: bool = False
    """The trained model scores sequences (reward training): no vocabulary logits."""
    beta: float | None = None
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
        sequence_classifier=r.sequence_classifier,
        beta=r.kl_value(request),
        notes=tuple(r.loop_notes(request)),
    )

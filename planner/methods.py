"""What each method's training loop keeps resident and runs, as TRL 1.12 runs it.

One place that says, per method: how many sequences the policy runs with gradients per sample,
whether a frozen reference, a reward model or a value model is loaded, and whether the loop
generates rollouts. The memory and time models read only this.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.constants import default
from planner.specs import Method, PlanRequest, Tuning


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


def _beta(request: PlanRequest, key: str) -> float:
    return request.beta if request.beta is not None else default(key)


def _reference(request: PlanRequest, needed: bool) -> str:
    """TRL's reference: none if not needed or precomputed (DPO/KTO only: on-policy methods
    score fresh rollouts); the adapter-disabled base under PEFT."""
    offline = request.method in (Method.dpo, Method.kto)
    if not needed or (offline and request.precompute_ref_log_probs):
        return "none"
    if request.tuning in (Tuning.lora, Tuning.qlora):
        return "adapter-disabled"
    return "copy"


def loop(request: PlanRequest) -> Loop:
    """The loop of `request.method` with the request's tuning and reference settings."""
    m = request.method
    if m is Method.sft:
        return Loop(m)
    if m is Method.dpo:
        notes = ("chosen and rejected run as one doubled batch (TRL concatenated_forward)",)
        if request.precompute_ref_log_probs:
            notes += ("reference log-probs precomputed before training: no reference at step time",)
        return Loop(
            m,
            rows_per_sample=2,
            reference=_reference(request, True),
            beta=_beta(request, "dpo_beta"),
            notes=notes,
        )
    if m is Method.kto:
        return Loop(
            m,
            no_grad_rows_per_sample=1,
            reference=_reference(request, True),
            beta=_beta(request, "dpo_beta"),
            notes=(
                "KTO's KL term runs a mismatched batch through policy and reference without grad",
            ),
        )
    if m is Method.orpo:
        notes = ("ORPO: chosen + rejected in one batch, odds-ratio term, no reference model",)
        return Loop(m, rows_per_sample=2, notes=notes)
    if m is Method.simpo:
        notes = ("SimPO (CPO loss_type=simpo): length-normalised margin, no reference model",)
        return Loop(m, rows_per_sample=2, notes=notes)
    if m is Method.reward:
        notes = ("reward model: sequence classifier scoring chosen + rejected in one batch",)
        return Loop(m, rows_per_sample=2, sequence_classifier=True, notes=notes)
    if m is Method.ppo:
        return Loop(
            m,
            reference=_reference(request, True),
            reward_model=True,
            value_model=True,
            generates=True,
            beta=_beta(request, "ppo_kl_coef"),
            notes=(
                "PPO (trl.experimental.ppo, trl<=1.12): policy + value model trained together; "
                "frozen reference and reward model; rollouts generated with a KV cache",
                "TRL's PPO wraps only the policy in PEFT: the value model trains in full",
            ),
        )
    if m in (Method.grpo, Method.rloo):
        beta = _beta(request, "grpo_beta" if m is Method.grpo else "rloo_beta")
        return Loop(
            m,
            reference=_reference(request, beta > 0),
            generates=True,
            beta=beta,
            notes=(
                f"{m.value.upper()}: {request.num_generations} completions per prompt; "
                "batch size counts completions",
                "reference model loaded only when beta > 0"
                + (f" (beta = {beta:g}: loaded)" if beta > 0 else " (beta = 0: none)"),
            ),
        )
    raise AssertionError(f"unhandled method {m}")  # pragma: no cover - Method is closed

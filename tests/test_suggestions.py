"""What the plan suggests, and how each view names the fit search."""

from __future__ import annotations

from rich.console import Console

from advisor.views.estimate_view import estimate_renderable
from planner.constants import suggestion
from planner.plan import FIT_SUGGESTION, estimate
from planner.specs import PlanRequest


def _text(renderable) -> str:
    console = Console(width=200, record=True)
    console.print(renderable)
    return console.export_text()


def test_a_plan_that_does_not_fit_ends_with_the_fit_search_named_per_view():
    plan = estimate(PlanRequest(model="70b", tuning="full", gpu="rtx-4090"))
    assert not plan.fits and plan.suggestions[-1] == FIT_SUGGESTION
    assert "advisor plan ... --fit" in _text(estimate_renderable(plan))
    wizard = _text(estimate_renderable(plan, fit_key="^f (Fit it)"))
    assert "press ^f (Fit it) to search" in wizard and "--fit" not in wizard


def test_a_tight_plan_that_fits_says_so_before_offering_more_room():
    """Memory savers for a plan that fits are offered as headroom, not as a cure."""
    for batch in range(1, 33):
        plan = estimate(PlanRequest(model="7b", gpu="rtx-4090", batch_size=batch))
        share = plan.memory.per_gpu_peak_gib / plan.memory.capacity_gib
        if plan.fits and share > suggestion("tight_share"):
            break
    else:
        raise AssertionError("no micro-batch gives a tight 7B LoRA plan on a 24 GB card")
    assert plan.suggestions[0] == f"it fits with {1 - share:.0%} headroom; for more room:"
    assert FIT_SUGGESTION not in plan.suggestions


def test_a_roomy_plan_offers_speed_not_a_larger_micro_batch():
    plan = estimate(PlanRequest(model="0.5b", gpu="h100"))
    assert plan.fits and plan.suggestions
    assert not any("--batch-size" in s for s in plan.suggestions)


def test_parameter_counts_read_as_people_say_them():
    from advisor.views.plan_view import headline, param_count

    assert [param_count(n) for n in (6_738_415_616, 494_032_768, 1_234_567, 40_960)] == [
        "6.74B",
        "494.0M",
        "1.2M",
        "40,960",
    ]
    assert "494.0M params" in headline(estimate(PlanRequest(model="qwen2.5-0.5b")))

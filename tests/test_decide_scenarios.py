"""Every example interview in profiles/scenarios/ gives its expected outcome."""

from __future__ import annotations

import pytest
import yaml

from advisor.decision.answers import load_answers
from advisor.decision.decide import decide
from planner.paths import profiles_dir
from planner.specs import Method, Tuning

SCENARIOS = sorted((profiles_dir() / "scenarios").glob("*.yaml"))


def expected(path) -> dict:
    return yaml.safe_load(path.read_text())["expected"]


def test_there_are_at_least_eight_scenarios_covering_the_main_methods():
    assert len(SCENARIOS) >= 8
    methods = {expected(path)["method"] for path in SCENARIOS}
    assert {"dpo", "ppo", "grpo", "kto", "orpo", "sft", "simpo", "rloo"} <= methods


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_gives_its_expected_method(path):
    want = expected(path)
    recommendation = decide(load_answers(path))
    assert recommendation.method is Method(want["method"]), recommendation.ranking[:2]
    if "hybrid" in want:
        assert (recommendation.hybrid_path is not None) is want["hybrid"]


@pytest.mark.parametrize(
    "path", [p for p in SCENARIOS if "model" in yaml.safe_load(p.read_text())], ids=lambda p: p.stem
)
def test_scenario_compute_check_gives_its_expected_setups(path):
    want = expected(path)
    checks = {c.method: c for c in decide(load_answers(path)).compute}
    assert set(checks) == set(Method) - {Method.reward}
    for method in want.get("does_not_fit", []):
        assert not checks[Method(method)].fits, checks[Method(method)].summary
        assert checks[Method(method)].would_take, "a method that does not fit says what would"
    for method, tuning in want.get("setup", {}).items():
        assert checks[Method(method)].setup is Tuning(tuning), checks[Method(method)].summary

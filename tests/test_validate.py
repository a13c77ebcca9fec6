"""`advisor validate`: a short real run, then estimated against measured."""

from __future__ import annotations

import json

from advisor.cli import main


def test_validate_runs_a_short_demo_and_compares_with_the_plan(tmp_path, capsys):
    assert main(["validate", "--demo", "--max-steps", "2", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Estimated vs measured" in out and "seconds per step" in out
    (run,) = [p.parent for p in tmp_path.glob("*/validation.json")]
    record = json.loads((run / "validation.json").read_text())
    assert record["steps"] == 2
    assert record["estimated_step_seconds"] > 0 and record["measured_step_seconds"] > 0


def test_validate_refuses_a_dry_run(capsys):
    assert main(["validate", "--demo", "--dry-run"]) == 2
    assert "drop --dry-run" in capsys.readouterr().err

"""The measured alignment runs (benchmarks/alignment_runs.yaml) and the script that scores them.

Checks the data's form and that the script runs; never the accuracy threshold, which moves as
the estimate changes (run `python benchmarks/alignment_accuracy.py --check` for that).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import alignment_accuracy as bench  # noqa: E402

ROWS = bench.load_rows()
EXPRESSIBLE = [row for row in ROWS if row.get("expressible") and not row.get("contradicted_by")]


def test_the_file_holds_rows_of_both_kinds():
    kinds = {row.get("kind") for row in ROWS}
    assert kinds == {"memory", "fit"}
    assert len(EXPRESSIBLE) >= 10


def test_ids_are_unique():
    ids = [row.get("id") for row in ROWS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("row", ROWS, ids=[str(row.get("id")) for row in ROWS])
def test_every_row_has_the_required_fields(row):
    assert bench.row_problems(row) == []
    assert row["source"].startswith("https://")


@pytest.mark.parametrize("row", EXPRESSIBLE, ids=[str(row["id"]) for row in EXPRESSIBLE])
def test_expressible_flags_parse_into_a_valid_request(row):
    request, _note = bench.request_for(row)
    assert request.method.value == row["method"]


def test_the_script_runs_and_prints_the_summary_as_json():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "alignment_accuracy.py"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    for key in (
        "median_abs_error_pct",
        "within_15pct",
        "memory_rows_scored",
        "fit_statements_right",
        "fit_statements_total",
        "excluded",
        "errors",
        "results",
    ):
        assert key in summary
    assert summary["fit_statements_total"] == sum(1 for row in EXPRESSIBLE if row["kind"] == "fit")
    assert {row["id"] for row in summary["excluded"]} == {
        row["id"] for row in ROWS if not row.get("expressible") or row.get("contradicted_by")
    }


def test_a_contradicted_row_names_a_scored_row_of_the_same_method():
    by_id = {row["id"]: row for row in ROWS}
    for row in ROWS:
        other = row.get("contradicted_by")
        if other:
            assert other in by_id and by_id[other].get("expressible")
            assert not by_id[other].get("contradicted_by")
            assert by_id[other]["method"] == row["method"]

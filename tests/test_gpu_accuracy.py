"""scripts/gpu_accuracy.py, run as CI can: `--dry-run` on CPU with a budget that fits one row.

One invocation (about 25 s of CPU: the tiny model, one launch); the second row is skipped by
the budget, which is what a tiny `--max-minutes` must do. The datasets of every GPU row are
then written with the tokenizer that run built, so no row's data shape goes unexercised.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_accuracy.py"


def _script():
    spec = importlib.util.spec_from_file_location("gpu_accuracy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_accuracy", module)
    spec.loader.exec_module(module)
    return module


def dry_run(output: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--max-minutes", "0.1", "--output", str(output)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


# One test, so that the one dry run is not repeated by each pytest-xdist worker.
@pytest.mark.slow
def test_dry_run_tabulates_a_row_names_those_past_a_tiny_budget_and_fills_every_rows_data(
    tmp_path,
):
    output = tmp_path
    stdout = dry_run(output)
    table = (output / "gpu_accuracy.md").read_text()
    assert table in stdout
    first, second = _script().DRY_RUN_ROWS
    header = next(line for line in table.splitlines() if line.startswith("| row |"))
    for column in ("tensors (CPU)", "allocated", "reserved", "NVML"):
        assert f"| {column} |" in header
    assert any(
        line.startswith(f"| {first} |") and line.endswith("| ok |") for line in table.splitlines()
    )
    assert f"Skipped (past the 0.1-minute budget): {second}" in table
    for layer in ("allocated", "reserved", "NVML"):
        assert any(line.startswith(f"| {layer} | 0 |") for line in table.splitlines())

    report = json.loads((output / "gpu_accuracy.json").read_text())
    assert report["skipped"] == [second]
    (row,) = report["results"]
    run_dir = Path(row["run_dir"])
    assert (run_dir / "validation.json").is_file() and (run_dir / "manifest.json").is_file()
    assert not (run_dir / "final").exists()  # weights are removed; the records stay
    # CPU runs measured no GPU peak, which `advisor calibrate import` refuses to learn from.
    assert report["calibrate_command"] is None
    assert "Nothing to import into calibration: no run measured a GPU peak." in table
    assert set(row["layers"]) == {"tensors", "allocated", "reserved", "nvml"}
    assert row["layers"]["nvml"]["estimated_gib"] > 0
    assert row["layers"]["nvml"]["measured_gib"] is None  # CPU: no card to read

    # On a GPU, the command names the run folders that measured a peak, and only those.
    script = _script()
    measured = script.Result.model_validate(row).model_copy(
        update={"layers": {"nvml": script.Layer(estimated_gib=20.0, measured_gib=19.5)}}
    )
    assert measured.layers["nvml"].error_gib == 0.5
    assert script.calibrate_command([measured, script.Result.model_validate(row)]) == (
        f"advisor calibrate import {run_dir}"
    )

    # Every GPU row's data, with the tokenizer the run built: its trainer truncates the rows
    # to exactly the row's length, and the prompts of methods that generate fit their plan.
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(output / "models" / "tiny" / "tokenizer.json"))
    for row in script.MATRIX:
        seq = row.seq_len // script.DRY_RUN_SCALE
        prompt_len = row.prompt_len // script.DRY_RUN_SCALE if row.prompt_len else None
        path = script.write_dataset(row, seq, prompt_len, tokenizer, output / f"{row.name}.jsonl")
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert len(rows) >= row.batch_size * script.STEPS, row.name
        for data in rows:
            prompt = len(tokenizer.encode(data["prompt"]).ids)
            assert prompt <= (prompt_len if row.generates else seq // 2), row.name
            for answer in ("chosen", "rejected", "completion"):
                if answer in data:
                    assert prompt + len(tokenizer.encode(data[answer]).ids) > seq, row.name

"""`trl <method> --config trl_<method>.yaml`, from a run folder written for a GPU, loads the
weights in the dtype the plan states: the real TRL CLI runs one step on CPU in the run folder
with only what CPU needs overridden (never `dtype`), trains into the folder's checkpoints, and
tests/dtype_probe/sitecustomize.py records the dtypes of the model its Trainer was built with.
(Users can leave this tool at any time: this is the run they would start.)"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from advisor.cli import main
from runners.run_folder import read_manifest
from runners.tiny import write_demo_dataset

PROBE = Path(__file__).parent / "dtype_probe"
CPU_ONLY = {
    "use_cpu": True, "bf16": False, "fp16": False, "max_steps": 1, "save_steps": 1,
    "report_to": "none",
}  # fmt: skip


def _dry_run_for_a100(model: Path, method: str, tuning: str, tmp: Path, *extra: str) -> Path:
    dataset = write_demo_dataset(method, tmp / "data")
    flags = [
        "--method", method, "--model", str(model), "--dataset", str(dataset),
        "--tuning", tuning, "--seq-len", "64", "--batch-size", "2", "--grad-accum", "1",
        "--no-grad-checkpointing", "--max-steps", "1", "--output", str(tmp / "runs"),
        "--device", "cuda", "--gpu", "a100-80gb", "--dry-run", "--quiet", *extra,
    ]  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["launch", *flags]) == 0, err.getvalue()
    return Path(out.getvalue().strip().splitlines()[-1])


def _trl_cli_on_cpu(run: Path, method: str, tmp: Path) -> dict[str, list[str]]:
    config = yaml.safe_load((run / f"trl_{method}.yaml").read_text(encoding="utf-8"))
    config.pop("deepspeed", None)
    config.update(CPU_ONLY)  # output_dir stays as written: the run folder's checkpoints
    cpu_yaml = run / f"cpu_{method}.yaml"
    cpu_yaml.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    probe = tmp / "dtypes.json"
    path = os.pathsep.join(filter(None, [str(PROBE), os.environ.get("PYTHONPATH")]))
    env = dict(
        os.environ, PYTHONPATH=path, ADVISOR_DTYPE_PROBE=str(probe), HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", CUDA_VISIBLE_DEVICES="",
        WANDB_DISABLED="true", TOKENIZERS_PARALLELISM="false",
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "trl.cli.main", method, "--config", cpu_yaml.name],
        cwd=run, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Run in the run folder, as command.sh says, TRL's CLI trains into its checkpoints.
    assert (run / "checkpoints" / "checkpoint-1").is_dir()
    return json.loads(probe.read_text(encoding="utf-8"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "tuning", "extra", "load_dtype"),
    [
        ("sft", "full", (), "float32"),  # bf16-mixed: fp32 master weights
        ("sft", "full", ("--precision", "bf16-true"), "bfloat16"),
        ("dpo", "lora", (), "bfloat16"),  # frozen bf16 base, fp32 adapters
    ],
    ids=["sft-full-bf16-mixed", "sft-full-bf16-true", "dpo-lora"],
)
def test_trl_cli_loads_the_weights_in_the_planned_dtype(
    tiny_model, tmp_path, method, tuning, extra, load_dtype
):
    run = _dry_run_for_a100(tiny_model, method, tuning, tmp_path, *extra)
    precision = read_manifest(run).spec.precision
    assert precision is not None and precision.load_dtype == load_dtype
    written = yaml.safe_load((run / f"trl_{method}.yaml").read_text(encoding="utf-8"))
    assert written["dtype"] == load_dtype and written["bf16"] is True

    dtypes = _trl_cli_on_cpu(run, method, tmp_path)

    if tuning == "lora":
        assert dtypes == {"frozen": [load_dtype], "trainable": ["float32"]}
    else:
        assert dtypes == {"frozen": [], "trainable": [load_dtype]}

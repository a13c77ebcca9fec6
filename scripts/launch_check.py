"""Launch every method for a few steps through `advisor launch` and tabulate what happened.

On a GPU machine: `python scripts/launch_check.py` (tiny local model, bf16/fp16 as the card
allows, NVML peak in each run's validation.json). On CPU: `--device cpu`. Pass `--model DIR`
for a real model, `--processes 2` for DDP. Writes launch_check.json beside the run folders.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from planner.specs import Method  # noqa: E402
from runners.monitor import KEY_METRICS  # noqa: E402
from runners.run_folder import read_metrics  # noqa: E402
from runners.tiny import ensure_model, write_demo_dataset  # noqa: E402


def check(method: str, model: Path, output: Path, args: argparse.Namespace) -> dict:
    dataset = write_demo_dataset(method, output / "data")
    runs = output / method
    command = [
        sys.executable, "-m", "advisor.cli", "launch", "--method", method,
        "--model", str(model), "--dataset", str(dataset), "--output", str(runs),
        "--tuning", args.tuning, "--seq-len", "64", "--batch-size", "2", "--grad-accum", "1",
        "--num-generations", "2", "--ppo-epochs", "1", "--max-steps", str(args.steps),
        "--device", args.device, "--processes", str(args.processes), "--quiet",
    ]  # fmt: skip
    start = time.time()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    row = {"method": method, "rc": result.returncode, "seconds": round(time.time() - start, 1)}
    folders = sorted(runs.glob(f"{method}-*"))
    if folders:
        run = folders[-1]
        logged = set().union(*read_metrics(run)) if read_metrics(run) else set()
        row["run"] = str(run)
        row["missing_metrics"] = sorted(set(KEY_METRICS[Method(method)]) - logged)
        validation = run / "validation.json"
        if validation.is_file():
            row["validation"] = json.loads(validation.read_text())
    if result.returncode:
        row["stderr_tail"] = result.stderr[-1500:]
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--methods", default=",".join(m.value for m in Method))
    parser.add_argument("--model", help="a model folder (default: the tiny local model)")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu", "auto"))
    parser.add_argument("--tuning", default="lora", choices=("full", "lora", "qlora"))
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--output", default="runs/launch-check")
    args = parser.parse_args()
    output = Path(args.output).resolve()
    model = Path(args.model) if args.model else ensure_model(output / "tiny-llama")
    rows = [check(m, model, output, args) for m in args.methods.split(",")]
    for row in rows:
        peak = (row.get("validation") or {}).get("measured_peak_gib")
        status = "ok" if row["rc"] == 0 and not row.get("missing_metrics") else "FAILED"
        print(f"{row['method']:7} {status:7} {row['seconds']:6.1f} s  peak {peak} GiB")
    (output / "launch_check.json").write_text(json.dumps(rows, indent=2))
    return 0 if all(r["rc"] == 0 and not r.get("missing_metrics") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

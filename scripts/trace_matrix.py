"""Traced memory of one training step over the acceptance matrix: a table, or JSON with --json.

Methods sft, dpo, dpo+lora, kto, orpo, reward x the three scaled-down architectures of
tests/tiny_architectures.py x seq 256 and 1024 x checkpointing off/on, batch 2, bf16. Each row
is ``planner.trace.trace_step`` of that PlanRequest: the tensor bytes at the step's peak, where
it falls, and what is live there. ``planner.memory`` must agree with these within 5%.

    python scripts/trace_matrix.py            # the table
    python scripts/trace_matrix.py --json     # a list of {case..., result...}
    python scripts/trace_matrix.py --arch llama --method dpo+lora
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from planner.specs import PlanRequest  # noqa: E402
from planner.trace import trace_step  # noqa: E402
from tests.tiny_architectures import TINY_ARCHITECTURES  # noqa: E402

METHODS: dict[str, dict] = {
    "sft": {"method": "sft", "tuning": "full"},
    "dpo": {"method": "dpo", "tuning": "full"},
    "dpo+lora": {"method": "dpo", "tuning": "lora"},
    "kto": {"method": "kto", "tuning": "full"},
    "orpo": {"method": "orpo", "tuning": "full"},
    "reward": {"method": "reward", "tuning": "full"},
}
SEQ_LENS = (256, 1024)
CHECKPOINTING = (False, True)
BATCH_SIZE = 2
PRECISION = "bf16"
GRAD_ACCUM = 1  # as tests/test_trace_agreement.py: no gradients from earlier micro-batches

SHOWN = ("params", "reference_model", "grads", "optimizer", "activations", "temporaries")
SHORT = {
    "reference_model": "ref",
    "activations": "acts",
    "temporaries": "temps",
    "optimizer": "opt",
}
PHASE_SHORT = {
    "kl_forward": "kl_fwd",
    "forward": "fwd",
    "loss": "loss",
    "reference_forward": "ref_fwd",
    "backward": "bwd",
    "optimizer_step": "opt_step",
}


def cases(archs: list[str], methods: list[str]) -> list[dict]:
    """The matrix's cases, each a dict of its labels and its PlanRequest fields."""
    out = []
    for arch in archs:
        for name in methods:
            for seq in SEQ_LENS:
                for ckpt in CHECKPOINTING:
                    request = {
                        **METHODS[name],
                        "seq_len": seq,
                        "batch_size": BATCH_SIZE,
                        "precision": PRECISION,
                        "grad_checkpointing": ckpt,
                        "grad_accum": GRAD_ACCUM,
                        "attention": "eager" if arch == "gemma2" else "sdpa",
                    }
                    out.append({"arch": arch, "case": name, "request": request})
    return out


def run(archs: list[str], methods: list[str]) -> tuple[list[dict], float]:
    rows = []
    start = time.perf_counter()
    for case in cases(archs, methods):
        result = trace_step(PlanRequest(**case["request"]), TINY_ARCHITECTURES[case["arch"]])
        rows.append({**case, "result": result.model_dump()})
    return rows, time.perf_counter() - start


def mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def table(rows: list[dict], seconds: float) -> str:
    head = ["arch", "method", "seq", "ckpt", "peak MiB", "phase"]
    head += [SHORT.get(c, c) for c in SHOWN] + ["s"]
    lines = [head]
    for row in rows:
        r, q = row["result"], row["request"]
        at = r["at_peak_bytes"]
        line = [
            row["arch"],
            row["case"],
            str(q["seq_len"]),
            "on" if q["grad_checkpointing"] else "off",
            mib(r["peak_bytes"]),
            PHASE_SHORT.get(r["peak_phase"], r["peak_phase"]),
        ]
        line += [mib(at[c]) for c in SHOWN] + [f"{r['seconds']:.1f}"]
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = [
        "  ".join(
            cell.rjust(w) if i >= 2 else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    text.insert(1, "-" * len(text[0]))
    text.append(
        f"{len(rows)} traces in {seconds:.1f} s; batch {BATCH_SIZE}, {PRECISION}, grad_accum "
        f"{GRAD_ACCUM}; MiB at the peak "
        "(params = the trained model's weights, ref = a separate reference model's)"
    )
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--arch", action="append", choices=sorted(TINY_ARCHITECTURES))
    parser.add_argument("--method", action="append", choices=list(METHODS))
    args = parser.parse_args(argv)
    archs = args.arch or list(TINY_ARCHITECTURES)
    methods = args.method or list(METHODS)
    rows, seconds = run(archs, methods)
    if args.json:
        print(json.dumps({"seconds": round(seconds, 2), "rows": rows}, indent=1))
    else:
        print(table(rows, seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

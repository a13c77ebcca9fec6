"""`advisor check-data`: check a dataset against a method's format before training on it."""

from __future__ import annotations

import argparse
import sys

from planner.errors import InputError
from planner.specs import Method, PlanRequest


def register(parser: argparse.ArgumentParser) -> None:
    planned = PlanRequest()  # the defaults `advisor plan` assumes
    parser.add_argument(
        "--dataset",
        required=True,
        help="a local JSONL/JSON/CSV/Parquet file (.gz too) or a folder saved with save_to_disk",
    )
    parser.add_argument(
        "--method",
        default=planned.method.value,
        choices=[m.value for m in Method],
        help="the method whose TRL trainer will read the data (its columns and checks)",
    )
    parser.add_argument("--model", help="a model folder: its tokenizer adds length/template checks")
    parser.add_argument(
        "--seq-len",
        type=int,
        default=planned.seq_len,
        help="planned max tokens per row (for ppo/grpo/rloo: per prompt)",
    )
    parser.add_argument(
        "--convert-to",
        nargs=2,
        metavar=("FORMAT", "OUT"),
        help="write the rows in TRL's standard shape for --method to OUT (a new .jsonl file; "
        "FORMAT is trl): ShareGPT from/value turns and LLaMA-Factory's preference and KTO "
        "files become role/content messages; then check OUT",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    """0 when the data has no errors, 1 when it has (warnings alone pass); with --convert-to,
    the converted file is the one checked."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # datasets and tokenizers from local files only
    from rich.console import Console

    from runners.preflight import check_dataset, print_report

    if args.seq_len < 1:
        raise InputError(f"--seq-len {args.seq_len}: give the planned tokens per row (at least 1)")
    dataset = args.dataset
    if args.convert_to:
        from runners.data_shapes import write_converted

        target, out = args.convert_to
        if target != "trl":
            raise InputError(f"--convert-to {target}: the one format written is trl")
        written = write_converted(dataset, out, args.method)
        note = f"wrote {written} rows to {out} (TRL's shape for {args.method})\n"
        (sys.stderr if args.json else sys.stdout).write(note)  # --json: stdout is the report
        dataset = out
    report = check_dataset(dataset, args.method, tokenizer_path=args.model, max_length=args.seq_len)
    if args.json:
        sys.stdout.write(report.model_dump_json() + "\n")
    else:
        print_report(report, Console(highlight=False))
    return 1 if report.errors else 0

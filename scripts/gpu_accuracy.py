"""The GPU accuracy matrix: estimated against measured peak memory, run by run, on one GPU.

Made for one H100-class GPU and about 8 minutes, as one command:

    python scripts/gpu_accuracy.py                    # the matrix, on the GPU
    python scripts/gpu_accuracy.py --max-minutes 5    # fewer rows: those that fit 5 minutes
    python scripts/gpu_accuracy.py --dry-run          # two rows on CPU at tiny sizes (CI)

What it assumes: no downloads. Each model is built here with random weights from its profile's
config (profiles/models/) and a tokenizer trained locally (runners.tiny). The config keeps
its real vocabulary size: the tokenizer's 512 ids are a subset, as a real tokenizer's are of
its padded embedding, so the embedding and the logits (b·s·V, the largest tensor of a step at
V = 128k-152k) are as large as the real model's. Rows are filled with text to the row's
length, so the trainers truncate them to exactly `--seq-len` (methods that generate get
prompts of `--prompt-len` and generate `--completion-len` tokens: random weights rarely stop).

What it does: each row is `advisor launch` (a subprocess, as a user would run it) for a few
steps; each run folder's validation.json (and manifest.json) is read back, and the estimate
is compared with the measurement at three layers: tensors (torch's max_memory_allocated),
the caching allocator (max_memory_reserved) and NVML (what the card shows). It prints and
writes a Markdown table and JSON, the median absolute error per layer, and the command that
feeds the run folders to the calibration store. Rows that would run past `--max-minutes`
are not started; the first row always runs, so every invocation measures something.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pydantic import BaseModel, computed_field  # noqa: E402

from planner.calibration import STORE_ENV  # noqa: E402
from planner.constants import runtime  # noqa: E402
from planner.paths import profiles_dir  # noqa: E402
from planner.recipes import recipe  # noqa: E402
from planner.specs import Method  # noqa: E402

STEPS = 3
"""Optimizer steps per row: the first warms the allocator, NVML is sampled about once a second."""

PROMPT_MARGIN = 4
"""Tokens a generated prompt stays under its planned length: BPE may merge differently once cut."""

NO_CHECKPOINTS = 1_000_000
"""--save-steps past the run's end: a few steps need no checkpoint (a full 1.5B one is ~18 GB)."""


@dataclass(frozen=True)
class Row:
    """One run of the matrix: what `advisor launch` is given, and about how long it takes."""

    name: str
    model: str
    """A profile under profiles/models/ (its config.json), or "tiny" in a dry run."""
    method: str
    tuning: str
    seq_len: int
    checkpointing: bool
    batch_size: int = 2
    prompt_len: int | None = None
    """Methods that generate: the prompt's tokens (the rest of seq_len is generated)."""
    num_generations: int | None = None
    seconds: float = 30.0
    """About how long the launch takes on an H100, model loading included (for the budget)."""

    @property
    def generates(self) -> bool:
        return recipe(Method(self.method)).generates


# Each axis is covered early, so a short budget still spans it: rows 1-2 and 10 change only
# checkpointing and the sequence on one model and method, rows 3 and 11 the same for LoRA.
MATRIX = [
    Row("q05-sft-full-512-nockpt", "qwen2.5-0.5b", "sft", "full", 512, False, seconds=25),
    Row("q05-dpo-full-512-ckpt", "qwen2.5-0.5b", "dpo", "full", 512, True, seconds=25),
    Row("l8-dpo-lora-2048-ckpt", "llama-3.1-8b", "dpo", "lora", 2048, True, seconds=50),
    Row("q15-sft-full-2048-ckpt", "qwen2.5-1.5b", "sft", "full", 2048, True, seconds=30),
    Row("q05-kto-full-512-nockpt", "qwen2.5-0.5b", "kto", "full", 512, False, seconds=30),
    Row(
        "q05-grpo-full-512-ckpt", "qwen2.5-0.5b", "grpo", "full", 512, True,
        batch_size=4, prompt_len=384, num_generations=4, seconds=45,
    ),
    Row(
        "q05-ppo-full-512-ckpt", "qwen2.5-0.5b", "ppo", "full", 512, True,
        prompt_len=384, seconds=45,
    ),
    # Batch 1: at 2048 without checkpointing, batch 2 of pairs would not fit 80 GB.
    Row("q15-dpo-full-2048-nockpt", "qwen2.5-1.5b", "dpo", "full", 2048, False, 1, seconds=35),
    Row("l8-sft-lora-512-nockpt", "llama-3.1-8b", "sft", "lora", 512, False, seconds=40),
    Row("q05-dpo-full-2048-ckpt", "qwen2.5-0.5b", "dpo", "full", 2048, True, seconds=25),
    Row("l8-dpo-lora-512-nockpt", "llama-3.1-8b", "dpo", "lora", 512, False, seconds=40),
]  # fmt: skip
"""The GPU rows, in the order they run (and are cut by the budget)."""

BUILD_SECONDS = {"qwen2.5-0.5b": 15.0, "qwen2.5-1.5b": 25.0, "llama-3.1-8b": 75.0, "tiny": 15.0}
"""About how long building and saving each model takes, the first time a row needs it."""

DRY_RUN_ROWS = ("l8-dpo-lora-2048-ckpt", "q05-grpo-full-512-ckpt")
"""The dry run's rows: pairs, LoRA and checkpointing first; then a prompt-only method that
generates, without LoRA. Every other row differs from these only in its flags."""

DRY_RUN_SCALE = 16
"""A dry run's sequences are the row's divided by this (512 -> 32, 2048 -> 128)."""

DRY_RUN_SECONDS = 25.0
"""About how long one tiny CPU launch takes on two busy cores."""

TINY_CONFIG = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
    "vocab_size": 1024,
    "torch_dtype": "float32",
}
"""runners.tiny's model shape, with a vocabulary larger than the tokenizer as the real rows have."""


class Layer(BaseModel):
    """One memory layer of one run: the plan's estimate and the measurement, GiB."""

    estimated_gib: float | None = None
    measured_gib: float | None = None

    @computed_field
    @property
    def error_gib(self) -> float | None:
        """Estimate minus measurement (positive: the plan over-estimated); None if one is missing."""
        if self.estimated_gib is None or self.measured_gib is None:
            return None
        return round(self.estimated_gib - self.measured_gib, 4)


class Result(BaseModel):
    """One row as it ran: its settings, its run folder, and estimate against measurement."""

    row: str
    model: str
    method: str
    tuning: str
    seq_len: int
    checkpointing: bool
    batch_size: int
    status: str
    """"ok", "failed (rc N)", "timed out", or "no validation.json"."""
    seconds: float
    run_dir: str | None = None
    command: list[str]
    device: str | None = None
    comparable: bool | None = None
    calibrated: bool = False
    """Whether the plan was already corrected by a calibration store."""
    layers: dict[str, Layer] = {}
    """Per layer (LAYERS), the estimate and the measurement."""
    stderr_tail: str | None = None


class LayerError(BaseModel):
    """The median absolute error of one layer over the rows that measured it."""

    layer: str
    rows: int
    median_abs_gib: float | None
    median_abs_percent: float | None


class Report(BaseModel):
    """What the matrix ran, what it skipped, and how far the estimates were off."""

    dry_run: bool
    device: str
    max_minutes: float
    seconds: float
    results: list[Result]
    skipped: list[str]
    layers: list[LayerError]
    calibrate_command: str | None


LAYERS = {
    "tensors": ("estimated_tensor_peak_gib", "measured_tensor_peak_gib"),
    "allocated": ("estimated_tensor_peak_gib", "allocated_peak_gib"),
    "reserved": (None, "reserved_peak_gib"),
    "nvml": ("estimated_peak_gib", "measured_peak_gib"),
}
"""Each layer's estimate and measurement as validation.json fields, for a record that has no
`memory_layers`: tensors (a CPU run's counted step), allocated and reserved (torch's peaks),
nvml (the card). The reserved estimate is the tensor peak plus the allocator's share."""

SHOWN_LAYERS = {
    "tensors": "tensors (CPU)",
    "allocated": "allocated",
    "reserved": "reserved",
    "nvml": "NVML",
}
"""Table headings; a GPU run measures no counted step, so its table leaves `tensors` out."""


# ----------------------------------------------------------------------------- models


def model_config(name: str) -> dict:
    """The config a row's model is built from: its profile's config.json, or TINY_CONFIG."""
    if name == "tiny":
        return dict(TINY_CONFIG)
    config = json.loads((profiles_dir() / "models" / f"{name}.json").read_text())
    config.pop("_advisor", None)
    return config


def build_model(name: str, folder: Path, device: str, max_length: int) -> Path:
    """A random-weight model from `model_config(name)` with runners.tiny's tokenizer, built on
    `device` and saved to folder (TRL reloads reference models from the folder)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from runners.tiny import SEED, build_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder)
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(folder)
    settings = model_config(name)
    config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    # The vocabulary stays the model's (see the module docstring); the special ids are ours.
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    dtype = getattr(torch, str(settings.get("torch_dtype", "bfloat16")))
    torch.manual_seed(SEED)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()  # the launch, not this process, is what NVML should see
    return folder


# ----------------------------------------------------------------------------- datasets


def filled_text(tokenizer, seed_text: str, tokens: int, offset: int) -> str:
    """`seed_text` followed by the demo corpus (from `offset`), cut to at most `tokens` tokens."""
    from runners.tiny import corpus

    lines = corpus()
    text = seed_text
    start = offset % len(lines)
    while len(tokenizer.encode(text).ids) < tokens:
        block = lines[start:] + lines[:start]
        text = " ".join([text, *block])
    ids = tokenizer.encode(text).ids[:tokens]
    return tokenizer.decode(ids)


def write_dataset(row: Row, seq_len: int, prompt_len: int | None, tokenizer, path: Path) -> Path:
    """The demo rows for the row's method (runners.tiny.demo_rows), filled to length: prompts of
    `prompt_len` tokens where the method generates, else of half the sequence, and answers of a
    whole sequence, so that the trainer truncates every row to exactly `seq_len`."""
    from runners.tiny import demo_rows, write_jsonl

    prompt_tokens = (prompt_len if row.generates else seq_len // 2) - PROMPT_MARGIN
    rows = []
    for number, demo in enumerate(demo_rows(row.method)):
        filled = dict(demo)
        for key, value in demo.items():
            if key == "prompt":
                filled[key] = filled_text(tokenizer, value, prompt_tokens, number)
            elif key in ("chosen", "rejected", "completion", "text"):
                # Chosen and rejected start apart in the corpus, so they differ past the answer.
                offset = number * 7 + (3 if key == "rejected" else 0)
                filled[key] = " " + filled_text(tokenizer, value.strip(), seq_len, offset)
        rows.append(filled)
    return write_jsonl(rows, path)


# ----------------------------------------------------------------------------- runs


def launch_command(
    row: Row, model: Path, dataset: Path, runs: Path, device: str, scale: int
) -> list[str]:
    """The `advisor launch` command line for row (sequences divided by `scale`)."""
    command = [
        sys.executable, "-m", "advisor.cli", "launch", "--method", row.method,
        "--model", str(model), "--dataset", str(dataset), "--output", str(runs),
        "--tuning", row.tuning, "--batch-size", str(row.batch_size), "--grad-accum", "1",
        "--max-steps", str(STEPS), "--save-steps", str(NO_CHECKPOINTS),
        "--grad-checkpointing" if row.checkpointing else "--no-grad-checkpointing",
        "--device", device, "--quiet",
    ]  # fmt: skip
    seq_len = row.seq_len // scale
    if row.generates and row.prompt_len is not None:
        prompt = row.prompt_len // scale
        command += ["--prompt-len", str(prompt), "--completion-len", str(seq_len - prompt)]
    else:
        command += ["--seq-len", str(seq_len)]
    if row.num_generations:
        command += ["--num-generations", str(row.num_generations)]
    if row.method == "ppo":
        command += ["--ppo-epochs", "1"]
    return command


def launch_env(device: str, store: Path) -> dict[str, str]:
    """The launch's environment: a calibration store of the row's own (empty before it runs),
    so that no row's estimate is corrected by the rows before it or by the user's store, and
    the user's store gains nothing until `advisor calibrate import`; on CPU, the run asked to
    count one step's tensors (the `tensors` layer)."""
    from runners.rank_memory import MEASURE_TENSORS

    env = dict(os.environ)
    env[STORE_ENV] = str(store)
    if device == "cpu":
        env[MEASURE_TENSORS] = "1"
    return env


def run_command(command: list[str], timeout: float, env: dict[str, str]) -> tuple[int | None, str]:
    """Run command in its own process group; (exit status or None on timeout, stderr's tail).
    On timeout the whole group is ended: the launcher's training process with it."""
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            _, stderr = process.communicate()
        return None, (stderr or "")[-1500:]
    return process.returncode, (stderr or "")[-1500:]


def record_layers(validation: dict, manifest: dict) -> dict[str, Layer]:
    """Each layer's estimate and measurement from a validation.json (its `memory_layers` where
    it has them, else its fields) and the manifest's plan (an older record's tensor estimate)."""
    given = {
        layer["layer"]: Layer(
            estimated_gib=layer["estimated_gib"], measured_gib=layer["measured_gib"]
        )
        for layer in validation.get("memory_layers") or []
        if isinstance(layer, dict) and layer.get("layer") in LAYERS
    }
    memory = (manifest.get("plan") or {}).get("memory") or {}
    tensors = validation.get("estimated_tensor_peak_gib", memory.get("tensor_peak_gib"))
    estimates = {
        "estimated_tensor_peak_gib": tensors,
        "estimated_peak_gib": validation.get("estimated_peak_gib"),
        None: None if tensors is None else tensors * (1 + runtime("allocator_fragmentation")),
    }
    out = {}
    for name, (estimate, measurement) in LAYERS.items():
        out[name] = given.get(name) or Layer(
            estimated_gib=estimates[estimate], measured_gib=validation.get(measurement)
        )
    return out


def measured(result: Result, run_dir: Path) -> Result:
    """result with what run_dir's validation.json (and its manifest's plan) holds; layers that
    the record does not measure stay None."""
    validation = json.loads((run_dir / "validation.json").read_text())
    manifest_file = run_dir / "manifest.json"
    manifest = json.loads(manifest_file.read_text()) if manifest_file.is_file() else {}
    memory = (manifest.get("plan") or {}).get("memory") or {}
    update = {
        "device": validation.get("device"),
        "comparable": validation.get("comparable"),
        "calibrated": bool(memory.get("calibration")),
        "layers": record_layers(validation, manifest),
    }
    return result.model_copy(update=update)


def layer_errors(results: list[Result]) -> list[LayerError]:
    """The median absolute error of each layer over the rows that measured it."""
    out = []
    for layer in LAYERS:
        pairs = [
            (abs(r.layers[layer].error_gib), r.layers[layer].measured_gib)
            for r in results
            if layer in r.layers and r.layers[layer].error_gib is not None
        ]
        percents = [100 * error / got for error, got in pairs if got]
        out.append(
            LayerError(
                layer=layer,
                rows=len(pairs),
                median_abs_gib=round(statistics.median(e for e, _ in pairs), 4) if pairs else None,
                median_abs_percent=round(statistics.median(percents), 1) if percents else None,
            )
        )
    return out


def calibrate_command(results: list[Result]) -> str | None:
    """`advisor calibrate import` with every run folder that measured a GPU peak (the store
    learns nothing from the others), or None when none did."""
    folders = [
        r.run_dir
        for r in results
        if r.run_dir and r.status == "ok" and "nvml" in r.layers
        if r.layers["nvml"].measured_gib is not None
    ]
    return "advisor calibrate import " + " ".join(folders) if folders else None


# ----------------------------------------------------------------------------- output


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"


def _cell(layer: Layer | None) -> str:
    layer = layer or Layer()
    return f"{_number(layer.estimated_gib)} / {_number(layer.measured_gib)}"


def markdown(report: Report) -> str:
    """The report as Markdown: a row per run (estimate / measured, GiB, per layer), the
    median absolute error per layer, skipped rows, and the calibrate command."""
    shown = {k: v for k, v in SHOWN_LAYERS.items() if report.dry_run or k != "tensors"}
    lines = [
        f"# GPU accuracy matrix ({report.device}{', dry run' if report.dry_run else ''})",
        "",
        "Estimate / measured peak memory per GPU, GiB. tensors (CPU): one counted step against "
        "the plan's tensor peak; allocated: torch max_memory_allocated against the tensor peak; "
        "reserved: max_memory_reserved against the tensor peak plus allocator fragmentation; "
        "NVML: what the card showed against the plan's peak.",
        "",
        "| row | method | tuning | seq | ckpt | "
        + " | ".join(shown.values())
        + " | seconds | status |",
        "|---|---|---|---|---|" + "---|" * len(shown) + "---|---|",
    ]
    for r in report.results:
        cells = " | ".join(_cell(r.layers.get(layer)) for layer in shown)
        lines.append(
            f"| {r.row} | {r.method} | {r.tuning} | {r.seq_len} | "
            f"{'on' if r.checkpointing else 'off'} | {cells} | {r.seconds:.0f} | {r.status} |"
        )
    lines += [
        "",
        "Median absolute error per layer (estimate − measured, over the rows that measured it):",
        "",
        "| layer | rows | median abs error GiB | median abs error % |",
        "|---|---|---|---|",
    ]
    for layer in report.layers:
        if layer.layer in shown:
            percent = "—" if layer.median_abs_percent is None else f"{layer.median_abs_percent:.1f}"
            lines.append(
                f"| {shown[layer.layer]} | {layer.rows} | {_number(layer.median_abs_gib)} "
                f"| {percent} |"
            )
    lines.append("")
    if report.skipped:
        lines.append(
            f"Skipped (past the {report.max_minutes:g}-minute budget): " + ", ".join(report.skipped)
        )
    else:
        lines.append("Skipped: none")
    if report.calibrate_command:
        lines += [
            "",
            "Feed the run folders to the calibration store:",
            "",
            report.calibrate_command,
        ]
    else:
        lines += ["", "Nothing to import into calibration: no run measured a GPU peak."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the matrix


def cuda_device() -> str:
    """The GPU's name, or exit 2 with what to do when there is none."""
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU here: run this on a GPU machine, or pass --dry-run", file=sys.stderr)
        sys.exit(2)
    return torch.cuda.get_device_name(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", default="runs/gpu-accuracy", help="models, data, run folders")
    parser.add_argument("--max-minutes", type=float, default=8.0, help="start no row past this")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny model, two rows")
    parser.add_argument("--rows", help="comma-separated row names (default: the whole matrix)")
    args = parser.parse_args(argv)
    if args.max_minutes <= 0:
        parser.error("--max-minutes must be more than 0")
    start = time.monotonic()
    output = Path(args.output).resolve()
    chosen = args.rows.split(",") if args.rows else DRY_RUN_ROWS if args.dry_run else None
    rows = [row for row in MATRIX if chosen is None or row.name in chosen]
    unknown = set(chosen or ()) - {row.name for row in MATRIX}
    if unknown:
        parser.error(f"no such row: {', '.join(sorted(unknown))} (rows: see MATRIX)")
    device, scale = ("cpu", DRY_RUN_SCALE) if args.dry_run else ("cuda", 1)
    device_name = "cpu" if args.dry_run else cuda_device()
    budget = args.max_minutes * 60

    from tokenizers import Tokenizer

    results: list[Result] = []
    skipped: list[str] = []
    spent, planned = 0.0, 0.0  # for the pace: measured seconds against the rows' guesses
    for number, row in enumerate(rows):
        model_name = "tiny" if args.dry_run else row.model
        model = output / "models" / model_name
        built = (model / "config.json").is_file()
        guess = (DRY_RUN_SECONDS if args.dry_run else row.seconds) + (
            0 if built else BUILD_SECONDS.get(model_name, 60.0)
        )
        pace = spent / planned if planned else 1.0
        elapsed = time.monotonic() - start
        if number and elapsed + guess * pace > budget:
            skipped.append(row.name)
            print(f"{row.name}: skipped, ~{guess * pace:.0f} s would pass the budget", flush=True)
            continue
        began = time.monotonic()
        if not built:
            print(f"building {model_name} on {device} in {model}", flush=True)
            build_model(model_name, model, device, max(r.seq_len for r in MATRIX))
        tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
        prompt_len = row.prompt_len // scale if row.prompt_len else None
        dataset = write_dataset(
            row, row.seq_len // scale, prompt_len, tokenizer, output / "data" / f"{row.name}.jsonl"
        )
        runs = output / "runs" / row.name
        command = launch_command(row, model, dataset, runs, device, scale)
        timeout = max(120.0, 3 * guess * pace)
        store = output / "calibration" / f"{row.name}.jsonl"
        store.parent.mkdir(parents=True, exist_ok=True)
        rc, stderr = run_command(command, timeout, launch_env(device, store))
        folders = sorted(runs.glob(f"{row.method}-*"))
        result = Result(
            row=row.name,
            model=model_name,
            method=row.method,
            tuning=row.tuning,
            seq_len=row.seq_len // scale,
            checkpointing=row.checkpointing,
            batch_size=row.batch_size,
            status="timed out" if rc is None else "ok" if rc == 0 else f"failed (rc {rc})",
            seconds=round(time.monotonic() - began, 1),
            run_dir=str(folders[-1]) if folders else None,
            command=command,
            stderr_tail=stderr if rc else None,
        )
        if folders and (folders[-1] / "validation.json").is_file():
            result = measured(result, folders[-1])
            for heavy in (
                "final",
                "checkpoints",
            ):  # weights: gigabytes that calibration never reads
                subprocess.run(["rm", "-rf", str(folders[-1] / heavy)], check=False)
        elif rc == 0:
            result = result.model_copy(update={"status": "no validation.json"})
        results.append(result)
        spent += result.seconds
        planned += guess
        print(
            f"{row.name}: {result.status} in {result.seconds:.0f} s; NVML "
            f"{_cell(result.layers.get('nvml'))} GiB",
            flush=True,
        )

    report = Report(
        dry_run=args.dry_run,
        device=device_name,
        max_minutes=args.max_minutes,
        seconds=round(time.monotonic() - start, 1),
        results=results,
        skipped=skipped,
        layers=layer_errors(results),
        calibrate_command=calibrate_command(results),
    )
    output.mkdir(parents=True, exist_ok=True)
    (output / "gpu_accuracy.json").write_text(report.model_dump_json(indent=2) + "\n")
    table = markdown(report)
    (output / "gpu_accuracy.md").write_text(table)
    print()
    print(table)
    print(f"written: {output / 'gpu_accuracy.md'} and {output / 'gpu_accuracy.json'}")
    return 0 if results and all(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""`advisor launch`: write the run folder (manifest, configs, command), then train and show it live."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from advisor.commands.plan import add_plan_flags, request_from_args
from planner.errors import PlanError
from planner.specs import Method, Plan, PlanRequest


def _number(kind: type, low: float, high: float, unit: str = ""):
    """An argparse type: a finite `kind` in [low, high]; otherwise one line naming the range."""

    def parse(text: str):
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"not a number: {text[:40]!r}") from None
        if not math.isfinite(value) or not low <= value <= high:
            shown = (f"{low:,}", f"{high:,}") if kind is int else (f"{low:g}", f"{high:g}")
            raise argparse.ArgumentTypeError(
                f"must be between {shown[0]} and {shown[1]}{unit}, got {text[:40]}"
            )
        return value

    return parse


def register(parser: argparse.ArgumentParser) -> None:
    add_plan_flags(parser)
    parser.add_argument("--plan", help="a plan.json from `advisor plan --json` (its settings)")
    parser.add_argument(
        "--recommendation", help="a recommendation JSON (`advisor recommend --json`) to record"
    )
    parser.add_argument("--output", default="runs", help="folder for run folders (runs/)")
    parser.add_argument("--dry-run", action="store_true", help="write the run folder only")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its checkpoint")
    parser.add_argument(
        "--demo", action="store_true", help="DPO on a tiny local model, on CPU, in under a minute"
    )
    parser.add_argument("--force", action="store_true", help="launch despite data errors")
    steps = _number(int, 1, 10**9, " steps")
    parser.add_argument("--max-steps", type=steps, help="stop after this many optimizer steps")
    parser.add_argument("--save-steps", type=steps, help="checkpoint every N steps")
    parser.add_argument(
        "--learning-rate", type=_number(float, 1e-12, 10.0), help="override the starting value"
    )
    parser.add_argument(
        "--reward",
        action="append",
        metavar="R",
        help="GRPO/RLOO: built-in (length, distinct_words), module:function (imports and runs "
        "that Python code, from the working folder first), or a reward-model folder; PPO: the "
        "reward-model folder. Repeatable.",
    )
    parser.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to train"
    )
    parser.add_argument(
        "--processes",
        type=_number(int, 1, 65536),
        help="processes to start (default GPUs × nodes; CPU: gloo DDP)",
    )
    parser.add_argument("--quiet", action="store_true", help="no live progress view")
    parser.add_argument(
        "--json", action="store_true", help="print the run's manifest as JSON, not its folder"
    )


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _tiny_model_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "alignment-advisor" / "tiny-llama"


def _demo_args(args: argparse.Namespace, output: Path) -> None:
    """Fill args for the demo: tiny model, DPO, LoRA, short sequences, a few CPU steps."""
    from runners.tiny import ensure_model, write_demo_dataset

    args.model = str(ensure_model(_tiny_model_dir()))
    args.dataset = str(write_demo_dataset(Method.dpo, output / "demo-data"))
    args.method = "dpo"
    args.tuning = "lora"
    args.seq_len = 64
    args.batch_size = 2
    args.grad_accum = 1
    args.grad_checkpointing = False
    args.device = "cpu"
    args.max_steps = args.max_steps or 8
    args.save_steps = args.save_steps or 4
    # A random tiny model moves visibly only at a high rate; real runs keep the planned value.
    args.learning_rate = args.learning_rate or 5e-4


def _request(args: argparse.Namespace) -> PlanRequest:
    if args.plan:
        from planner.files import read_text

        text = read_text(args.plan, "--plan")
        try:
            plan = Plan.model_validate_json(text)
        except ValueError:
            raise PlanError(
                f"--plan {args.plan}: not a plan JSON (`advisor plan ... --json` writes one)"
            ) from None
        update = {}
        if args.model != PlanRequest().model:
            update["model"] = args.model
        if args.dataset:
            update["dataset"] = args.dataset
        return plan.request.model_copy(update=update)
    return request_from_args(args)


def _recommendation(args: argparse.Namespace) -> dict | None:
    if not args.recommendation:
        return None
    from planner.files import parse_json, read_text

    what = f"--recommendation {args.recommendation}"
    found = parse_json(read_text(args.recommendation, "--recommendation"), what)
    if not isinstance(found, dict):
        raise PlanError(f"{what}: not a recommendation (`advisor recommend --json` writes one)")
    return found


def _device(choice: str, request: PlanRequest, dry_run: bool) -> tuple[str, bool]:
    """('cpu' | 'cuda', whether the GPU runs bf16). auto: cuda when torch sees one. A dry run
    for cuda on a machine without one writes settings for the plan's GPU (--gpu)."""
    if choice == "cpu":
        return "cpu", False
    if choice == "cuda" and dry_run:
        from planner.gpus import resolve_gpu

        return "cuda", resolve_gpu(request.gpu).supports_bf16
    import torch

    if torch.cuda.is_available():
        return "cuda", bool(torch.cuda.is_bf16_supported())
    if choice == "cuda":
        raise PlanError(
            "--device cuda: torch sees no CUDA GPU here (use --device cpu, or --dry-run to "
            "write the settings for --gpu)"
        )
    return "cpu", False


def _detected_gpu():
    """The GpuSpec of CUDA device 0: its profile when known, else its memory with A100 speeds."""
    import torch

    from planner.gpus import custom_gpu, resolve_gpu

    name = torch.cuda.get_device_name(0)
    try:
        return resolve_gpu(name)
    except PlanError:
        return custom_gpu(torch.cuda.get_device_properties(0).total_memory, name)


def _plan(request: PlanRequest, gpu) -> Plan:
    """The planner's estimate for request, on gpu when one was detected."""
    from planner.models import resolve_model
    from planner.plan import estimate, estimate_for

    if not Path(request.dataset).is_file():
        request = request.model_copy(update={"dataset": None})  # the planner counts files only
    if gpu is None:
        return estimate(request)
    return estimate_for(resolve_model(request.model), gpu, request)


def _save_steps(plan: Plan, max_steps: int | None) -> int | None:
    """About ten checkpoints per run (at least 50 steps apart), when the run's length is known."""
    total = max_steps or plan.time.total_steps
    if not total:
        return None
    return max(50, total // 10) if total > 50 else total


def _check_runnable_here(spec) -> None:
    """Refuse launches that need what this machine lacks, or that would import a user's file
    in place of a library, before anything starts."""
    import importlib.util

    from runners.monitor import shadowed_libraries

    shadowed = shadowed_libraries(Path.cwd())
    if shadowed:
        raise PlanError(
            f"{shadowed[0]} in the working folder would be imported in place of the library "
            "of that name by the training process; rename it or launch from another folder"
        )
    if spec.accelerate.get("distributed_type") == "DEEPSPEED" and not importlib.util.find_spec(
        "deepspeed"
    ):
        raise PlanError(
            "DeepSpeed sharding needs the deepspeed package: pip install deepspeed "
            "(or --sharding fsdp / ddp)"
        )


def _absolute(text: str, flag: str) -> Path:
    """`text` as an absolute path (the child runs elsewhere), or PlanError for a path that has
    none: `~nosuchuser/x`, a symlink loop, a NUL byte, a name too long."""
    try:
        return Path(text).expanduser().resolve()
    except (RuntimeError, OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or "no such user's home folder or a symlink loop"
        raise PlanError(f"{flag} {text[:80]!r}: not a usable path ({reason})") from None


def _local_model(text: str) -> str:
    """A model folder with config.json: a path, or a repo id already in the local HF cache."""
    path = _absolute(text, "--model")
    if (path / "config.json").is_file():
        return str(path)
    if not path.exists() and text.count("/") == 1:
        try:
            from huggingface_hub import snapshot_download

            cached = Path(snapshot_download(text, local_files_only=True))
        except Exception:  # not cached (or no hub library): the message below says what to do
            cached = None
        if cached is not None and (cached / "config.json").is_file():
            return str(cached)
    raise PlanError(
        f"--model {text}: launch needs a model folder with config.json and weights, or a repo "
        "id already in the local Hugging Face cache (try --demo for a tiny local one)"
    )


def _check_launchable(request: PlanRequest) -> None:
    if not request.dataset:
        raise PlanError("--dataset PATH is required to launch (a JSONL/JSON/CSV/Parquet file)")


def run(args: argparse.Namespace) -> int:
    if args.resume:
        return _resume(args)
    from runners.settings import shell_safe

    output = _absolute(shell_safe(args.output, "--output"), "--output")
    if args.demo:
        _demo_args(args, output)
    request = _request(args)
    _check_launchable(request)
    from runners.lifecycle import CHECKPOINTS
    from runners.run_folder import new_run_dir, write_run_folder
    from runners.settings import RewardSource, build_run_spec

    model_path = _local_model(request.model)
    dataset = str(_absolute(request.dataset, "--dataset"))
    request = request.model_copy(update={"model": model_path, "dataset": dataset})
    device, bf16 = _device(args.device, request, args.dry_run)
    detected = _detected_gpu() if device == "cuda" and not args.dry_run else None
    if detected is not None and args.gpu == PlanRequest().gpu and not args.plan:
        request = request.model_copy(update={"gpu": detected.name})  # plan for this card
    plan = _plan(request, detected)
    console = _console()
    report = _preflight(request, console)
    if report.errors and not args.force:
        raise PlanError(
            f"the dataset has {len(report.errors)} error(s) (listed above); fix them, or "
            "launch anyway with --force"
        )
    labels = report.labels
    run_dir = new_run_dir(output, request.method.value)
    spec = build_run_spec(
        request,
        model_path=model_path,
        dataset=dataset,
        output_dir=CHECKPOINTS,  # relative to the run folder, which may move
        device=device,
        supports_bf16=bf16,
        max_steps=args.max_steps,
        save_steps=args.save_steps or _save_steps(plan, args.max_steps),
        learning_rate=args.learning_rate,
        rewards=[RewardSource.parse(r) for r in args.reward or []],
        num_processes=args.processes,
        plan=plan,
        kto_label_counts=(labels["desirable"], labels["undesirable"]) if labels else None,
    )
    if not args.dry_run and spec.nodes == 1:
        _check_runnable_here(spec)
    if device == "cuda" and not plan.fits:
        console.print(
            f"[yellow]warning[/yellow] the planner expects {plan.memory.per_gpu_peak_gib:.1f} GiB "
            f"per GPU, more than {plan.gpu.name}'s {plan.gpu.memory_gib:.0f} GiB: it may run "
            "out of memory (`advisor plan ... --fit` finds setups that fit)"
        )
    manifest = write_run_folder(run_dir, spec, request, plan, _recommendation(args))
    (run_dir / "preflight.json").write_text(report.model_dump_json(indent=2), encoding="utf-8")
    _print_settings(spec, run_dir, console)
    if args.dry_run:
        console.print(f"dry run: wrote {run_dir} and launched nothing")
        return _emit(run_dir, args.json)
    if spec.nodes > 1:
        console.print(
            f"{spec.nodes} nodes: submit the job from a login node with "
            f"`sbatch {run_dir / 'slurm.sbatch'}` (it starts one accelerate launch per node)"
        )
        return _emit(run_dir, args.json)
    rc = _train(manifest.spec, run_dir, manifest.command, plan, request, console, args.quiet)
    return _emit(run_dir, args.json) if rc == 0 else rc


def _emit(run_dir: Path, as_json: bool) -> int:
    """stdout: the run folder (for scripts), or with --json its manifest."""
    if as_json:
        sys.stdout.write((run_dir / "manifest.json").read_text(encoding="utf-8").strip() + "\n")
    else:
        print(run_dir)
    return 0


def _preflight(request: PlanRequest, console):
    from runners.preflight import check_dataset, print_report

    # PPO/GRPO/RLOO rows are prompts: they get the prompt's share of the sequence.
    prompt_only = request.method in (Method.ppo, Method.grpo, Method.rloo)
    limit = request.prompt_and_completion()[0] if prompt_only else request.seq_len
    report = check_dataset(
        request.dataset, request.method, tokenizer_path=request.model, max_length=limit
    )
    print_report(report, console)
    return report


def _print_settings(spec, run_dir: Path, console) -> None:
    console.print(f"[bold]run folder[/bold] {run_dir}")
    for value in spec.starting_values:
        console.print(f"  {value.name} = {value.value:g}  ({value.reason})")
    for warning in spec.warnings:
        console.print(f"  [yellow]note[/yellow] {warning}")


def _train(spec, run_dir: Path, command, plan, request, console, quiet: bool) -> int:
    from rich.markup import escape

    from runners.lifecycle import EXIT_STOPPED, lock_holder, read_error, read_progress
    from runners.monitor import child_env, run_child, summary_table
    from runners.run_folder import read_metrics
    from runners.validation import GpuSampler, nvml_reader, process_tree, validation_record

    reader = nvml_reader() if spec.device == "cuda" else None
    sampler = GpuSampler(run_dir / "gpu.jsonl", reader, pids=process_tree)
    sampler.take_baseline()  # memory in use before the run: not the run's
    rc = run_child(
        command,
        run_dir,
        spec.method,
        env=child_env(),
        console=console,
        show=not quiet,
        on_tick=sampler.sample,
        status=sampler.status,
    )
    records = read_metrics(run_dir)
    record = validation_record(
        spec.device,
        plan,
        records,
        sampler.peak_bytes,
        measured_by=sampler.measured_by,
        memory_note=sampler.memory_note,
    )
    try:
        (run_dir / "validation.json").write_text(record.model_dump_json(indent=2), encoding="utf-8")
    except OSError as error:
        console.print(f"[yellow]note[/yellow] cannot write validation.json: {error.strerror}")
    progress, error = read_progress(run_dir), read_error(run_dir)
    if rc == 0 and progress.get("state") == "done":
        console.print(summary_table(spec.method, records))
        if record.measured_peak_gib is not None:
            console.print(
                f"peak GPU memory {record.measured_peak_gib:.1f} GiB "
                f"(planned {record.estimated_peak_gib:.1f} GiB)"
            )
        console.print(f"[green]done[/green] at step {record.steps}: {run_dir}")
        return 0
    if error.get("kind") == "oom":
        _explain_oom(run_dir, plan, request, console)
        return 1
    if error.get("kind") in ("disk_full", "checkpoint"):
        console.print(f"[red]stopped[/red]: {escape(error.get('message', ''))}", soft_wrap=True)
        return 1
    if rc == EXIT_STOPPED:
        saved = progress.get("checkpoint") if progress.get("state") == "stopped" else None
        where = f"{saved} saved" if saved else "no new checkpoint was saved"
        console.print(
            f"stopped at step {progress.get('step', 0)} ({where}); continue with: "
            f"advisor launch --resume {escape(str(run_dir))}",
            soft_wrap=True,
        )
        return EXIT_STOPPED
    holder = lock_holder(run_dir)
    if holder is not None:
        console.print(
            f"[red]not started[/red]: {escape(str(run_dir))} is being trained by {holder}",
            soft_wrap=True,
        )
        return 1
    log = run_dir / "train.log"
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
    console.print("\n".join(lines), markup=False)
    if rc == 0:  # the process ended well but never trained: not a finished run
        console.print(f"[red]training did not run[/red]: no step was trained; full log: {log}")
        return 1
    console.print(f"[red]training failed[/red] (exit {rc}); full log: {log}")
    return rc or 1


def _explain_oom(run_dir: Path, plan, request: PlanRequest, console) -> None:
    """Name the planner's estimate and a plan that fits."""
    lines = [f"[red]CUDA out of memory[/red] (log: {run_dir / 'train.log'})."]
    if plan is not None:
        lines.append(
            f"The planner estimated {plan.memory.per_gpu_peak_gib:.1f} GiB per GPU on "
            f"{plan.gpu.name} ({plan.gpu.memory_gib:.0f} GiB)."
        )
        try:
            from planner.fit import search

            fits = search(request)
        except PlanError:
            fits = []
        if fits:
            best = fits[0].request
            lines.append(
                f"A plan that fits: --tuning {best.tuning.value} --batch-size {best.batch_size} "
                f"--grad-accum {best.grad_accum} --sharding {best.sharding.value} "
                f"--offload {best.offload.value} ({fits[0].memory.per_gpu_peak_gib:.1f} GiB)."
            )
        else:
            lines.append("See `advisor plan ... --fit` for setups that fit.")
    console.print("\n".join(lines))


def _finished_step(checkpoint: Path) -> int | None:
    """The checkpoint's step when it is the run's last one (max_steps reached), else None."""
    import json

    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    step, total = state.get("global_step", 0), state.get("max_steps") or 0
    return step if total and step >= total else None


def _resume(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from runners.checkpoints import checkpoints, last_good_checkpoint
    from runners.lifecycle import checkpoints_dir, lock_holder
    from runners.run_folder import child_command, read_manifest, read_run_spec, resume_problems

    run_dir = _absolute(args.resume, "--resume")
    manifest = read_manifest(run_dir)
    spec = read_run_spec(run_dir)
    holder = lock_holder(run_dir)
    if holder is not None:
        raise PlanError(
            f"cannot resume {run_dir}: it is training now ({holder}); stop that run first "
            "(Ctrl-C where it runs) or let it finish"
        )
    problems = resume_problems(manifest, spec)
    given = {"--model": args.model, "--dataset": args.dataset, "--method": args.method}
    recorded = {"--model": spec.model, "--dataset": spec.dataset, "--method": spec.method.value}
    for flag, value in given.items():
        if flag == "--model" and value == PlanRequest().model:
            continue
        if flag == "--method" and value == PlanRequest().method.value:
            continue
        if value and flag != "--method" and str(_absolute(value, flag)) != recorded[flag]:
            problems.append(f"{flag} {value} is not the run's {recorded[flag]}")
        elif value and flag == "--method" and value != recorded[flag]:
            problems.append(f"--method {value} is not the run's {recorded[flag]}")
    if problems:
        raise PlanError(
            f"cannot resume {run_dir}: " + "; ".join(problems) + ". Start a new run instead."
        )
    folder = checkpoints_dir(run_dir, spec.trl_config["output_dir"])  # as runners.train does
    checkpoint, skipped = last_good_checkpoint(folder)
    console = _console()
    for message in skipped:
        console.print(f"[yellow]note[/yellow] {escape(message)}", soft_wrap=True)
    if checkpoint is None and spec.method is not Method.ppo:
        why = "no readable checkpoint" if checkpoints(folder) else "no checkpoint saved yet"
        raise PlanError(f"cannot resume {run_dir}: {why}; start a new run")
    finished = _finished_step(checkpoint) if checkpoint else None
    if finished is None:
        _check_runnable_here(spec)  # a resume starts the same training process as a launch
    if finished is not None:
        console.print(f"{run_dir} already finished at step {finished}; nothing to resume")
        return _emit(run_dir, args.json)
    start = checkpoint.name if checkpoint else "the start"
    console.print(f"resuming {escape(str(run_dir))} from {start}", soft_wrap=True)
    (run_dir / "error.json").unlink(missing_ok=True)
    command = child_command(spec, run_dir, resume=True)
    rc = _train(spec, run_dir, command, manifest.plan, manifest.request, console, args.quiet)
    return _emit(run_dir, args.json) if rc == 0 else rc

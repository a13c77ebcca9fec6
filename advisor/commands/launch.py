"""`advisor launch`: flags -> a PlanRequest and LaunchOptions -> `runners.launch.launch()`, which
writes the run folder (manifest, configs, command), then trains and shows it live; stdout gets the
run folder (or with --json its manifest)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from advisor.commands.plan import add_plan_flags, request_from_args
from planner.errors import InputError
from planner.specs import Method, Plan, PlanRequest

if TYPE_CHECKING:
    from runners.launch import LaunchOptions, Run


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


def _recording(base: type) -> type:
    """`base` (an argparse action class) that also adds its dest to the namespace's
    `given_flags`: which flags were typed, whatever their values (a default typed again too)."""

    def __call__(self, parser, namespace, values, option_string=None):
        base.__call__(self, parser, namespace, values, option_string)
        namespace.given_flags = frozenset(getattr(namespace, "given_flags", ())) | {self.dest}

    return type(f"Recorded{base.__name__}", (base,), {"__call__": __call__})


def _record_given_flags(parser: argparse.ArgumentParser) -> None:
    """Make every flag of `parser` record that it was given (for --from's overrides)."""
    parser.set_defaults(given_flags=frozenset())
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            action.__class__ = _recording(type(action))


def register(parser: argparse.ArgumentParser) -> None:
    add_plan_flags(parser)
    parser.add_argument(
        "--from",
        dest="from_run",
        metavar="RUN_DIR",
        help="a new run folder beside RUN_DIR with the same settings (its manifest); flags "
        "given here override them; RUN_DIR is left untouched",
    )
    parser.add_argument(
        "--plan",
        help="a plan.json from `advisor plan --json` (its settings), or the list that "
        "`advisor plan --fit --json` prints (its first plan)",
    )
    parser.add_argument(
        "--recommendation", help="a recommendation JSON (`advisor recommend --json`) to record"
    )
    parser.add_argument("--output", default="runs", help="folder for run folders (runs/)")
    parser.add_argument("--dry-run", action="store_true", help="write the run folder only")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its checkpoint")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="the --method (DPO unless given) on a tiny local model and demo data, on CPU, in "
        "about a minute",
    )
    parser.add_argument("--force", action="store_true", help="launch despite data errors")
    parser.add_argument(
        "--drop-long-prompts",
        action="store_true",
        help="PPO/GRPO/RLOO: leave out prompts longer than the planned prompt length (TRL "
        "generates from whole prompts; without this the plan is sized for the longest)",
    )
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
        "--report-to",
        default="none",
        choices=("none", "wandb", "trackio", "tensorboard", "mlflow"),
        help="send the training logs to this experiment tracker too (its package must be "
        "installed), the run named after its run folder",
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
    _record_given_flags(parser)


def _demo_args(args: argparse.Namespace, output: Path) -> None:
    """Fill args for the demo (`runners.demo`): tiny model, the method asked for (DPO unless
    given) with its demo data, LoRA, short sequences, a few CPU steps."""
    from runners.demo import demo

    d = demo(
        Method(args.method),
        output / "demo-data",
        max_steps=args.max_steps,
        save_steps=args.save_steps,
        learning_rate=args.learning_rate,
    )
    for name, value in {**d.request, **d.options}.items():
        setattr(args, name, value)


def _setup(plan: Plan) -> str:
    """A plan's setup in a few words: tuning, batch, GPUs, sharding, offload, peak per GPU."""
    r = plan.request
    parts = [r.tuning.value, f"batch {r.batch_size} × grad-accum {r.grad_accum}"]
    parts.append(f"{plan.gpu.count}× {plan.gpu.name}")
    if plan.gpu.count > 1:
        parts.append(r.sharding.value)
    if r.offload.value != "none":
        parts.append(f"offload {r.offload.value}")
    return ", ".join(parts) + f": {plan.memory.per_gpu_peak_gib:.1f} GiB per GPU"


def saved_plan(path: str) -> Plan:
    """The plan in `path`: one plan (`advisor plan --json`), or the first of the list that
    `advisor plan --fit --json` prints, said on stderr; anything else is a InputError."""
    from planner.files import parse_json, read_text

    what = f"--plan {path}"
    found = parse_json(read_text(path, "--plan"), what)
    if isinstance(found, list):
        if not found:
            raise InputError(
                f"{what}: an empty list of plans (`advisor plan --fit` found no setup that "
                "fits); pick a setup with `advisor plan` and save it with --json"
            )
        first = found[0]
    else:
        first = found
    try:
        plan = Plan.model_validate(first)
    except ValueError:
        raise InputError(
            f"{what}: not a plan JSON (`advisor plan ... --json` writes one, `--fit --json` "
            "a list of them)"
        ) from None
    if isinstance(found, list):
        count = f"{len(found)} plans" if len(found) > 1 else "1 plan"
        which = "the first" if len(found) > 1 else "it"
        print(
            f"{what} holds {count} from --fit: launching {which} ({_setup(plan)})", file=sys.stderr
        )
    return plan


def _request(args: argparse.Namespace) -> PlanRequest:
    if args.plan:
        plan = saved_plan(args.plan)
        update = {}
        if args.model != PlanRequest().model:
            update["model"] = args.model
        if args.dataset:
            update["dataset"] = args.dataset
        if args.calibration:
            update["calibration"] = args.calibration
        return plan.request.model_copy(update=update)
    return request_from_args(args)


def _recommendation(args: argparse.Namespace) -> dict | None:
    if not args.recommendation:
        return None
    from planner.files import parse_json, read_text

    what = f"--recommendation {args.recommendation}"
    found = parse_json(read_text(args.recommendation, "--recommendation"), what)
    if not isinstance(found, dict):
        raise InputError(f"{what}: not a recommendation (`advisor recommend --json` writes one)")
    return found


def _is_manifest(path: str) -> bool:
    """Whether `path` holds a run folder's manifest.json (not a plan)."""
    import json

    try:
        found = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(found, dict) and {"spec", "hashes", "command"} <= set(found)


def _copy_of_run(args: argparse.Namespace) -> tuple[PlanRequest, LaunchOptions]:
    """--from RUN_DIR: its request and launch options, with the flags given here on top."""
    from pydantic import ValidationError

    from planner.specs import request_problem
    from runners.launch import settings_of

    for flag, used in (("--resume", args.resume), ("--plan", args.plan), ("--demo", args.demo)):
        if used:
            raise InputError(
                f"--from starts a fresh copy of a run from its own settings: drop {flag}"
            )
    request, reused = settings_of(args.from_run)
    given = args.given_flags
    fields = {
        name: getattr(args, name)
        for name in PlanRequest.model_fields
        if name in given and getattr(args, name, None) is not None
    }
    try:
        request = PlanRequest.model_validate({**request.model_dump(), **fields})
    except ValidationError as error:
        field, message = request_problem(error)
        flag = "--" + field.replace("_", "-") if field else "settings"
        raise InputError(f"{flag}: {message}") from None
    mine = options(args, Path(args.output) if "output" in given else reused.output)
    update = {
        name: getattr(mine, name)
        for name in ("output", "dry_run", "force", "quiet", "drop_long_prompts")
        if name != "output" or "output" in given
    }
    for dest in ("max_steps", "save_steps", "processes", "reward", "report_to", "device"):
        # No default in `launch`: a value there is typed, or a command's own (validate's 10 steps).
        if dest in given or (dest not in ("report_to", "device") and getattr(args, dest)):
            name = "rewards" if dest == "reward" else dest
            update[name] = getattr(mine, name)
    if "learning_rate" in given:
        update.update(learning_rate=mine.learning_rate, learning_rate_reason="given by flag")
    if "recommendation" in given:
        update["recommendation"] = mine.recommendation
    return request, reused.model_copy(update=update)


def options(args: argparse.Namespace, output: Path | None = None) -> LaunchOptions:
    """The launch options that `advisor launch`'s flags set."""
    from runners.launch import LaunchOptions

    return LaunchOptions(
        output=output or Path(args.output),
        dry_run=args.dry_run,
        force=args.force,
        drop_long_prompts=args.drop_long_prompts,
        max_steps=args.max_steps,
        save_steps=args.save_steps,
        learning_rate=args.learning_rate,
        learning_rate_reason=getattr(args, "learning_rate_reason", "given by flag"),
        rewards=args.reward or [],
        device=args.device,
        report_to=args.report_to,
        processes=args.processes,
        quiet=args.quiet,
        recommendation=_recommendation(args),
        plan_for_this_gpu=not args.plan,  # a saved plan keeps its GPU
    )


def launched(args: argparse.Namespace) -> Run:
    """Launch (or with --resume, continue) what the flags say; the Run as it ended."""
    from runners.launch import LaunchOptions, launch, output_folder, resume

    if args.plan and args.from_run is None and not args.resume and _is_manifest(args.plan):
        args.from_run, args.plan = str(Path(args.plan).parent), None
        print(
            f"a run folder's manifest: launching a fresh copy of {args.from_run} "
            f"(advisor launch --from {args.from_run})",
            file=sys.stderr,
        )
    if args.from_run is not None:
        request, copied = _copy_of_run(args)
        return launch(request, copied)
    if args.resume:
        given = args.given_flags  # typed flags, even with their default values
        return resume(
            args.resume,
            LaunchOptions(quiet=args.quiet),  # the run keeps the settings it was written with
            model=args.model if "model" in given else None,
            dataset=args.dataset,
            method=args.method if "method" in given else None,
        )
    output = output_folder(args.output)
    if args.demo:
        from runners.settings import tracker_problem

        problem = None if args.dry_run else tracker_problem(args.report_to)
        if problem:  # before the demo writes its data
            raise InputError(problem)
        _demo_args(args, output)
    request = _request(args)
    return launch(request, options(args, output))


def run(args: argparse.Namespace) -> int:
    return emit(launched(args), args.json)


def emit(run: Run, as_json: bool) -> int:
    """stdout: the run folder (for scripts), or with --json its manifest; returns the exit
    status (a run that failed or stopped prints nothing here: the console said why)."""
    if run.exit_status != 0:
        return run.exit_status
    if as_json:
        sys.stdout.write((run.run_dir / "manifest.json").read_text(encoding="utf-8").strip() + "\n")
    else:
        print(run.run_dir)
    return 0


def _save_steps(plan: Plan, max_steps: int | None) -> int | None:
    """`runners.launch.default_save_steps`, where tests/test_runners_settings.py reads it."""
    from runners.launch import default_save_steps

    return default_save_steps(plan, max_steps)

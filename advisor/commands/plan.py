"""`advisor plan`: peak GPU memory and time for a training setup (its --json is a public contract)."""

from __future__ import annotations

import argparse
import json
import sys

from planner.errors import InputError
from planner.specs import (
    PRECISION_ALIASES,
    Attention,
    Generation,
    LoraTargets,
    Method,
    Offload,
    Optimizer,
    PlanRequest,
    Precision,
    Sharding,
    Tuning,
    request_problem,
)


def _values(enum) -> list[str]:
    return [member.value for member in enum]


def register(parser: argparse.ArgumentParser) -> None:
    add_plan_flags(parser)
    parser.add_argument(
        "--fit",
        action="store_true",
        help="search the settings that fit, within the GPUs given (--num-gpus, --nodes) or seen",
    )
    parser.add_argument(
        "--objective",
        choices=["time", "gpus", "gpu-hours"],
        help="with --fit: rank by shortest step (time, the default), fewest GPUs, or GPU-hours",
    )
    parser.add_argument(
        "--trace", action="store_true", help="also trace one step on fake tensors (needs torch)"
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--list-models", action="store_true", help="list model profiles and exit")
    parser.add_argument("--list-gpus", action="store_true", help="list GPU profiles and exit")


def add_plan_flags(parser: argparse.ArgumentParser) -> None:
    """The planning flags, shared by `plan`, `validate` and `launch`. Defaults are read from
    PlanRequest (the help shows them); a flag whose default depends on others says so."""
    from planner.gpu_counts import GPUS_PER_NODE, MAX_SEARCH_NODES
    from planner.trl_defaults import NUM_GENERATIONS, VLLM_GPU_MEMORY_UTILIZATION

    d = PlanRequest()
    parser.add_argument(
        "--model", default=d.model, help="7b-style size, profile, config.json or dir"
    )
    parser.add_argument(
        "--method",
        default=d.method.value,
        choices=_values(Method),
        help="the alignment method, as its TRL trainer runs it",
    )
    parser.add_argument(
        "--tuning",
        default=d.tuning.value,
        choices=_values(Tuning),
        help="train every weight (full), LoRA adapters, or LoRA on a 4-bit base (qlora)",
    )
    parser.add_argument(
        "--lora-rank", type=int, default=d.lora_rank, help="LoRA / QLoRA: the adapters' rank r"
    )
    parser.add_argument(
        "--lora-targets",
        default=d.lora_targets.value,
        choices=_values(LoraTargets),
        help="LoRA / QLoRA: adapt the q and v projections, every attention projection, or "
        "every linear layer",
    )
    parser.add_argument(
        "--seq-len",
        type=int,
        help=f"tokens per sequence, prompt + completion (default: {d.seq_len}); when "
        "--prompt-len and --completion-len are both given their sum is the sequence, and a "
        "--seq-len that differs is refused",
    )
    parser.add_argument(
        "--prompt-len",
        type=int,
        help="prompt tokens (default: half the sequence; with --seq-len alone, the "
        "completion is the rest)",
    )
    parser.add_argument(
        "--completion-len",
        type=int,
        help="completion tokens (default: half the sequence; with --seq-len alone, the "
        "prompt is the rest)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=d.batch_size,
        help="micro-batch per GPU (rows; GRPO / RLOO: completions)",
    )
    parser.add_argument(
        "--grad-accum",
        type=int,
        default=d.grad_accum,
        help="micro-batches accumulated into one optimizer step",
    )
    parser.add_argument(
        "--precision",
        default=d.precision.value,
        choices=[*_values(Precision), *PRECISION_ALIASES],
        help="bf16-mixed (TRL's default: fp32 master weights), bf16-true (all bf16), "
        "fp16-mixed, fp32; bf16 / fp16 mean the mixed forms",
    )
    parser.add_argument(
        "--optimizer",
        default=d.optimizer.value,
        choices=_values(Optimizer),
        help="AdamW, 8-bit AdamW (bitsandbytes), its paged form, or SGD (no optimizer states)",
    )
    parser.add_argument(
        "--grad-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=d.grad_checkpointing,
        help="recompute activations in backward: less memory, about a third more compute",
    )
    parser.add_argument(
        "--attention",
        default=d.attention.value,
        choices=_values(Attention),
        help="attention kernel: sdpa and flash keep no sequence × sequence scores, eager does",
    )
    parser.add_argument(
        "--gpu", default=d.gpu, help="GPU profile name or alias (--list-gpus shows them)"
    )
    parser.add_argument(
        "--num-gpus",
        type=int,
        default=None,
        help=f"GPUs per node (default: {d.num_gpus}; --fit searches up to this many, or up "
        f"to the GPUs seen here, else {GPUS_PER_NODE})",
    )
    parser.add_argument(
        "--nodes",
        type=int,
        default=None,
        help=f"nodes (default: {d.nodes}; --fit searches up to this many, else up to "
        f"{MAX_SEARCH_NODES} when no GPU count is given or seen)",
    )
    parser.add_argument(
        "--sharding",
        default=d.sharding.value,
        choices=_values(Sharding),
        help="how several GPUs share the model: DDP copies, DeepSpeed ZeRO stage 1/2/3, FSDP",
    )
    parser.add_argument(
        "--offload",
        default=d.offload.value,
        choices=_values(Offload),
        help="DeepSpeed: keep optimizer states (and parameters) in CPU memory",
    )
    generations = ", ".join(f"{n} for {m}" for m, n in NUM_GENERATIONS.items())
    parser.add_argument(
        "--num-generations",
        type=int,
        help=f"GRPO / RLOO completions per prompt (default: TRL's, {generations})",
    )
    parser.add_argument(
        "--generation",
        default=d.generation.value,
        choices=_values(Generation),
        help="GRPO / RLOO: generate with transformers (hf), a vLLM engine inside each training "
        "process (vllm-colocate), or a vLLM server on GPUs of its own (vllm-server)",
    )
    parser.add_argument(
        "--vllm-memory",
        type=float,
        metavar="FRACTION",
        help=f"vllm-colocate: the share of each GPU the vLLM engine takes (default: TRL's, "
        f"{VLLM_GPU_MEMORY_UTILIZATION:g})",
    )
    parser.add_argument(
        "--vllm-server-gpus",
        type=int,
        metavar="N",
        help="vllm-server: GPUs the server takes beside --num-gpus, the model split over them "
        "(default: 1)",
    )
    parser.add_argument(
        "--precompute-ref-log-probs", action="store_true", help="DPO/KTO: no reference at step time"
    )
    parser.add_argument(
        "--beta",
        type=float,
        help="KL weight (default: the method's TRL default; GRPO/RLOO: > 0 loads a reference)",
    )
    parser.add_argument(
        "--ppo-epochs",
        type=int,
        default=d.ppo_epochs,
        help="PPO: optimisation passes over each batch of rollouts",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--samples", type=int, help="training rows in the run")
    group.add_argument(
        "--dataset",
        help="a local JSONL/JSON/CSV/Parquet file (.gz too) or save_to_disk folder to count "
        "rows of",
    )
    parser.add_argument(
        "--epochs",
        type=float,
        default=d.epochs,
        help="passes over the rows (with --samples or --dataset: the run's total time)",
    )
    parser.add_argument(
        "--calibration",
        metavar="FILE",
        help="the calibration store (.jsonl) of measured runs to learn from and add to, e.g. "
        "a team's shared file (default: $ADVISOR_CALIBRATION, else "
        "~/.cache/alignment-advisor/calibration.jsonl)",
    )


def request_from_args(args: argparse.Namespace) -> PlanRequest:
    """A validated PlanRequest from parsed flags; bad values raise InputError naming the flag."""
    from pydantic import ValidationError

    lengths = [getattr(args, name, None) for name in ("seq_len", "prompt_len", "completion_len")]
    seq, prompt, completion = lengths
    if None not in lengths and prompt + completion != seq:
        raise InputError(
            f"--seq-len {seq} is not --prompt-len {prompt} + --completion-len {completion} "
            f"(= {prompt + completion}): give --seq-len, or the two lengths, not three that differ"
        )
    fields = {
        name: getattr(args, name)
        for name in PlanRequest.model_fields
        if getattr(args, name, None) is not None
    }
    try:
        return PlanRequest(**fields)
    except ValidationError as error:
        field, message = request_problem(error)
        flag = "--" + field.replace("_", "-") if field else "settings"
        raise InputError(f"{flag}: {message}") from None


def _fit(args: argparse.Namespace, request: PlanRequest) -> int:
    """`--fit`: the setups that fit within the user's GPUs, best first by the objective."""
    from planner.fit import Objective, search, search_space

    objective = Objective(args.objective or "time")
    space = search_space(args.num_gpus, args.nodes)
    plans = search(request, objective=objective, space=space)
    if args.json:
        # Still a plain list of plans (`advisor launch --plan` takes the first); each says how
        # it was ranked among its assumptions.
        ranked = f"ranked by --objective {objective.value} ({objective.description}); "
        ranked += space.describe()
        payload = ",".join(
            p.model_copy(update={"assumptions": [*p.assumptions, ranked]}).model_dump_json()
            for p in plans
        )
        sys.stdout.write("[" + payload + "]\n")
    else:
        from advisor.views.plan_view import print_fit

        print_fit(request, plans, objective=objective, space=space)
    return 0 if plans else 1


def run(args: argparse.Namespace) -> int:
    if args.list_models or args.list_gpus:
        from advisor.views import plan_view

        if args.json:
            rows = plan_view.model_rows() if args.list_models else plan_view.gpu_rows()
            sys.stdout.write(json.dumps(rows) + "\n")
        elif args.list_models:
            plan_view.print_models()
        else:
            plan_view.print_gpus()
        return 0
    if args.objective is not None and not args.fit:
        raise InputError("--objective ranks the setups that --fit finds: add --fit")
    request = request_from_args(args)
    if args.fit:
        return _fit(args, request)
    from planner.gpus import resolve_gpu
    from planner.models import resolve_model
    from planner.plan import estimate_for

    spec = resolve_model(request.model)
    # A trace takes seconds (torch import, then the step): say so on stderr, never stdout.
    if spec.estimate_path == "traced":
        print(
            f"general path: {spec.model_type} has no analytic model; tracing one step on fake "
            "tensors…",
            file=sys.stderr,
            flush=True,
        )
    plan = estimate_for(spec, resolve_gpu(request.gpu), request)
    trace = None
    if args.trace and spec.estimate_path == "traced":
        print("--trace: the plan above is the traced step already", file=sys.stderr)
    elif args.trace:
        from planner.trace import trace_step

        print("tracing one step on fake tensors…", file=sys.stderr, flush=True)
        trace = trace_step(plan.request, spec.hf_config)
    if args.json:
        if trace is None:
            sys.stdout.write(plan.model_dump_json() + "\n")
        else:
            payload = plan.model_dump(mode="json")
            payload["trace"] = trace.model_dump(mode="json")
            sys.stdout.write(json.dumps(payload) + "\n")
        return 0
    from advisor.views.plan_view import print_plan, print_trace

    print_plan(plan)
    if trace is not None:
        print_trace(plan, trace)
    return 0

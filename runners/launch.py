"""Launching a plan: `launch(request, options) -> Run` and `resume(run_dir, options) -> Run`.

Everything between "a validated PlanRequest and the launch options" and "the run ended": the
checks that refuse a launch (each a one-line InputError), the plan, the data pre-flight, the run
folder written before anything starts, the training process followed live, and the outcome read
from progress.json and error.json. `advisor launch`, `advisor validate` and the wizard all call
these functions. torch is imported only inside the functions that need it (device detection),
never at import: a dry run stays fast.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from planner.dataset_file import dataset_location, looks_like_path
from planner.errors import InputError
from planner.recipes import recipe
from planner.specs import Method, Plan, PlanRequest
from runners.lifecycle import EXIT_STOPPED
from runners.run_folder import Manifest
from runners.settings import RunSpec, Tracker
from runners.validation import Validation

Device = Literal["auto", "cpu", "cuda"]

Outcome = Literal["dry_run", "submitted", "done", "stopped", "oom", "disk_full", "locked", "failed"]
"""How a launch ended: only written (dry_run), written for a multi-node job to submit
(submitted), trained to the end (done), stopped on request with a checkpoint (stopped), out
of GPU memory (oom), out of disk (disk_full), refused by the live run holding the folder's
lock (locked), or anything else that went wrong (failed)."""


class LaunchOptions(BaseModel):
    """How to launch a plan, beyond the plan itself: what `advisor launch`'s own flags set."""

    model_config = ConfigDict(extra="forbid")

    output: Path = Field(default=Path("runs"), description="the folder for run folders")
    dry_run: bool = Field(default=False, description="write the run folder, start nothing")
    force: bool = Field(default=False, description="launch despite data errors")
    max_steps: int | None = Field(default=None, ge=1, le=10**9)
    save_steps: int | None = Field(
        default=None, ge=1, le=10**9, description="default: about ten checkpoints per run"
    )
    learning_rate: float | None = Field(default=None, ge=1e-12, le=10.0, allow_inf_nan=False)
    learning_rate_reason: str = Field(
        default="given by flag", description="why `learning_rate` replaces the recipe's value"
    )
    rewards: list[str] = Field(
        default_factory=list, description="GRPO/RLOO/PPO rewards, as --reward takes them"
    )
    device: Device = "auto"
    report_to: Tracker = Field(
        default="none", description="the experiment tracker TRL sends the logs to"
    )
    processes: int | None = Field(
        default=None, ge=1, le=65536, description="default: GPUs × nodes; CPU: gloo DDP"
    )
    quiet: bool = Field(default=False, description="no live progress view on the console")
    recommendation: dict[str, Any] | None = Field(
        default=None, description="a recommendation (`advisor recommend --json`) to record"
    )
    from_run: Path | None = Field(
        default=None, description="the run folder whose settings these are (`launch --from`)"
    )
    drop_long_prompts: bool = Field(
        default=False,
        description="PPO/GRPO/RLOO: leave out prompts longer than the planned prompt length "
        "instead of sizing the plan for the longest",
    )
    plan_for_this_gpu: bool = Field(
        default=True,
        description="training on CUDA, plan for the card found here when the request names the "
        "default GPU (a saved plan keeps its own)",
    )


REUSED_OPTIONS = (
    "max_steps",
    "save_steps",
    "learning_rate",
    "rewards",
    "device",
    "processes",
    "report_to",
    "drop_long_prompts",
)
"""The launch options that a fresh copy of a run (`advisor launch --from`) takes from it; the
others (dry run, force, quiet, output) belong to each launch."""


class Run(BaseModel):
    """A run folder that `launch()` or `resume()` wrote, its training process and how it ended."""

    run_dir: Path
    manifest: Manifest = Field(description="what was written before anything started")
    spec: RunSpec = Field(description="the settings it trained with (runspec.json)")
    outcome: Outcome
    message: str = Field(default="", description="what went wrong, in one line ('' if nothing)")
    pid: int | None = Field(
        default=None, description="the training launcher's process (accelerate or torchrun)"
    )
    returncode: int | None = Field(
        default=None, description="its exit status (130: stopped); None when none started"
    )
    step: int = Field(default=0, description="the last step progress.json reported")
    checkpoint: str | None = Field(default=None, description="the checkpoint a stop saved")
    validation: Validation | None = Field(
        default=None, description="estimated vs measured, when training ran"
    )
    exit_status: int = Field(
        description="what `advisor launch` exits with: 0 (written, done), 130 (stopped), "
        "otherwise the failure's status"
    )


class StopRequest:
    """A stop asked for from another thread (the wizard's Stop): the launch treats it as a
    Ctrl-C in its terminal. The first asks the training ranks to save a checkpoint and stop;
    a second kills them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._asked = 0
        self._delivered = 0

    def ask(self) -> None:
        """Ask the run to stop (safe from any thread)."""
        with self._lock:
            self._asked += 1

    @property
    def asked(self) -> bool:
        return self._asked > 0

    def deliver(self) -> None:
        """On the thread that follows the run: raise KeyboardInterrupt once per stop asked,
        which `runners.monitor.run_child` answers as it answers Ctrl-C."""
        with self._lock:
            due = self._asked > self._delivered
            self._delivered += due
        if due:
            raise KeyboardInterrupt


# --- the checks that refuse a launch ---------------------------------------------------------


def absolute(text: str, flag: str) -> Path:
    """`text` as an absolute path (the child runs elsewhere), or InputError for a path that has
    none: `~nosuchuser/x`, a symlink loop, a NUL byte, a name too long."""
    try:
        return Path(text).expanduser().resolve()
    except (RuntimeError, OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or "no such user's home folder or a symlink loop"
        raise InputError(f"{flag} {text[:80]!r}: not a usable path ({reason})") from None


def output_folder(output: str | Path) -> Path:
    """The folder for run folders as an absolute path that a script can name safely."""
    from runners.settings import shell_safe

    return absolute(shell_safe(str(output), "--output"), "--output")


def local_model(text: str) -> str:
    """A model folder with config.json: a path, or a repo id already in the local HF cache."""
    path = absolute(text, "--model")
    if (path / "config.json").is_file():
        return str(path)
    if not path.exists() and text.count("/") == 1:
        try:
            from huggingface_hub import snapshot_download

            cached = Path(snapshot_download(text, local_files_only=True))
        except Exception:  # not cached (or no hub library): the message below says what to do
            cached = None
        if cached is not None and (cached / "config.json").is_file():
            if has_weights(cached):
                return str(cached)
            raise InputError(
                f"--model {text}: only its config.json is in the local Hugging Face cache, "
                f"enough to plan but not to launch; download the weights first (`hf download "
                f"{text} --local-dir models/{text.split('/')[-1]}`) and pass that folder"
            )
    raise InputError(
        f"--model {text}: launch needs a model folder with config.json and weights, or a repo "
        "id downloaded into the local Hugging Face cache; a Hub id alone plans but cannot be "
        "launched (`hf download ORG/NAME --local-dir models/NAME`, or --demo for a tiny local one)"
    )


WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")
"""The files a model's weights come in: safetensors, or torch's pickles (pytorch_model.bin)."""


def has_weights(folder: Path) -> bool:
    """Whether `folder` holds any weight file (a plan caches a repo's config.json alone)."""
    return any(next(folder.glob(pattern), None) is not None for pattern in WEIGHT_PATTERNS)


def launchable(request: PlanRequest) -> PlanRequest:
    """`request` with its model folder and dataset as absolute paths, or the InputError that
    refuses it: no dataset, no local model folder."""
    if not request.dataset:
        raise InputError("--dataset PATH is required to launch (a JSONL/JSON/CSV/Parquet file)")
    model_path = local_model(request.model)
    if not looks_like_path(request.dataset):  # a Hub id is refused as check-data refuses it
        dataset_location(request.dataset)
    dataset = str(absolute(request.dataset, "--dataset"))
    return request.model_copy(update={"model": model_path, "dataset": dataset})


def resolve_device(choice: Device, request: PlanRequest, dry_run: bool) -> tuple[str, bool]:
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
        raise InputError(
            "--device cuda: torch sees no CUDA GPU here (use --device cpu, or --dry-run to "
            "write the settings for --gpu)"
        )
    return "cpu", False


def detected_gpu():
    """The GpuSpec of CUDA device 0: its profile when known, else its memory with A100 speeds."""
    import torch

    from planner.gpus import custom_gpu, resolve_gpu

    name = torch.cuda.get_device_name(0)
    try:
        return resolve_gpu(name)
    except InputError:
        return custom_gpu(torch.cuda.get_device_properties(0).total_memory, name)


def plan_for(request: PlanRequest, gpu=None) -> Plan:
    """The planner's estimate for request, on `gpu` (a GpuSpec) when one was detected."""
    from planner.models import resolve_model
    from planner.plan import estimate, estimate_for

    if not Path(request.dataset).is_file():
        request = request.model_copy(update={"dataset": None})  # the planner counts files only
    if gpu is None:
        return estimate(request)
    return estimate_for(resolve_model(request.model), gpu, request)


def default_save_steps(plan: Plan, max_steps: int | None) -> int | None:
    """About ten checkpoints per run (at least 50 steps apart), when the run's length is known."""
    total = max_steps or plan.time.total_steps
    if not total:
        return None
    return max(50, total // 10) if total > 50 else total


def check_runnable_here(spec: RunSpec) -> None:
    """Refuse launches that need what this machine lacks, or that would import a user's file
    in place of a library, before anything starts."""

    from planner.deepspeed import deepspeed_installed
    from runners.monitor import shadowed_libraries
    from runners.settings import deepspeed_problem, tracker_problem, vllm_problem

    shadowed = shadowed_libraries(Path.cwd())
    if shadowed:
        raise InputError(
            f"{shadowed[0]} in the working folder would be imported in place of the library "
            "of that name by the training process; rename it or launch from another folder"
        )
    if spec.accelerate.get("distributed_type") == "DEEPSPEED" and not deepspeed_installed():
        raise InputError(
            "DeepSpeed sharding needs the deepspeed package: "
            "pip install 'alignment-advisor[deepspeed]' (or --sharding fsdp / ddp)"
        )
    problem = vllm_problem(spec) or deepspeed_problem(spec)
    if problem:
        raise InputError(problem)
    trackers = spec.trl_config.get("report_to") or []
    for tracker in [trackers] if isinstance(trackers, str) else trackers:
        problem = tracker_problem(tracker)
        if problem:
            raise InputError(problem)
    problem = experts_problem(spec)
    if problem:
        raise InputError(problem)


def experts_problem(spec: RunSpec) -> str | None:
    """Why a mixture of experts cannot train as written, in one line: transformers 5.24 runs
    its experts with torch's grouped_mm, which takes bf16 weights only (planner.memory
    experts_need_bf16, which the plan notes too), and a CPU run holds fp32."""
    from planner.memory import experts_need_bf16
    from planner.models import resolve_model

    try:
        model = resolve_model(spec.request.model)
    except InputError:
        return None  # the general path's own checks refuse what it cannot run
    if not experts_need_bf16(model, spec.request):
        return None
    where = "on CPU, which trains in fp32" if spec.device == "cpu" else "with fp32 weights"
    return (
        f"{model.name}'s experts run as torch grouped_mm, which takes bf16 weights only, and "
        f"this run would hold them {where}: launch on a GPU with --precision bf16-true"
    )


def preflight(request: PlanRequest, console):
    """The data pre-flight for the method with the model's tokenizer, printed to `console`."""
    from runners.preflight import check_dataset, print_report

    # The trainer's max_length; PPO/GRPO/RLOO rows are prompts, measured against the plan's.
    limit = recipe(request.method).length_limit(request)
    report = check_dataset(
        request.dataset, request.method, tokenizer_path=request.model, max_length=limit
    )
    print_report(report, console)
    return report


def sized_for_longest_prompt(request: PlanRequest, report) -> PlanRequest | None:
    """For a method that generates, the request with its prompt length raised to the data's
    longest prompt when that is longer than planned (TRL generates from whole prompts), else
    None. The completion length stays as planned."""
    stats = report.lengths
    prompt, completion = request.prompt_and_completion()
    if not recipe(request.method).generates or stats is None or stats.max_prompt <= prompt:
        return None
    from pydantic import ValidationError

    update = {"prompt_len": stats.max_prompt, "completion_len": completion}
    try:
        return PlanRequest.model_validate(request.model_dump() | update)
    except ValidationError as error:  # past the request's ceilings
        raise InputError(
            f"the longest prompt has {stats.max_prompt} tokens, more than a plan takes; "
            f"filter long prompts out of the data first ({error.errors()[0]['msg']})"
        ) from None


def long_prompt_limit(request: PlanRequest, report, options: LaunchOptions, console) -> int | None:
    """With --drop-long-prompts, the prompt length past which a method that generates leaves
    rows out (the plan's prompt length), said on the console; else None. Leaving every row out
    is refused."""
    if not options.drop_long_prompts or not recipe(request.method).generates:
        return None
    limit = recipe(request.method).length_limit(request)
    stats = report.lengths
    if stats is not None and stats.long_prompt_rows:
        share = stats.long_prompt_rows / stats.measured_rows
        if share == 1:
            raise InputError(
                f"--drop-long-prompts would leave out every prompt: all are longer than "
                f"{limit} tokens (raise --prompt-len or --seq-len)"
            )
        console.print(
            f"  [yellow]note[/yellow] prompts longer than {limit} tokens are left out "
            f"({share:.0%} of the rows measured)"
        )
    return limit


# --- launch and resume ------------------------------------------------------------------------


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def launch(
    request: PlanRequest,
    options: LaunchOptions | None = None,
    *,
    console=None,
    on_folder: Callable[[Path], None] | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    stop: StopRequest | None = None,
) -> Run:
    """Check, plan, write the run folder, then (unless a dry run or a multi-node job) train it
    and follow it live; return the Run as it ended. Refusals raise InputError before anything is
    written. `console`: a Rich console for what the launch says (stderr by default);
    `on_folder`: called with the run folder once written, before training; `on_record`: every
    new metrics.jsonl record; `stop`: lets another thread stop the run as Ctrl-C would."""
    from runners.lifecycle import CHECKPOINTS
    from runners.run_folder import new_run_dir, write_run_folder
    from runners.settings import RewardSource, build_run_spec, tracker_problem

    options = options or LaunchOptions()
    console = console or _console()
    output = output_folder(options.output)
    request = launchable(request)
    problem = None if options.dry_run else tracker_problem(options.report_to)
    if problem:  # before the data check: the one line that matters
        raise InputError(problem)
    device, bf16 = resolve_device(options.device, request, options.dry_run)
    detected = detected_gpu() if device == "cuda" and not options.dry_run else None
    if detected is not None and options.plan_for_this_gpu and request.gpu == PlanRequest().gpu:
        request = request.model_copy(update={"gpu": detected.name})  # plan for this card
    plan = plan_for(request, detected)
    report = preflight(request, console)
    longer = None if options.drop_long_prompts else sized_for_longest_prompt(request, report)
    if longer is not None:
        console.print(
            f"  [yellow]note[/yellow] the plan is sized for the longest prompt, "
            f"{longer.prompt_len} tokens, not the planned {request.prompt_and_completion()[0]}"
        )
        request, plan = longer, plan_for(longer, detected)
    if report.errors and not options.force:
        raise InputError(
            f"the dataset has {len(report.errors)} error(s) (listed above); fix them, or "
            "launch anyway with --force"
        )
    labels = report.labels
    run_dir = new_run_dir(output, request.method.value)  # its name names the run in a tracker
    spec = build_run_spec(
        request,
        model_path=request.model,
        dataset=request.dataset,
        output_dir=CHECKPOINTS,  # relative to the run folder, which may move
        device=device,
        supports_bf16=bf16,
        max_steps=options.max_steps,
        save_steps=options.save_steps or default_save_steps(plan, options.max_steps),
        learning_rate=options.learning_rate,
        learning_rate_reason=options.learning_rate_reason,
        report_to=options.report_to,
        run_name=run_dir.name,
        rewards=[RewardSource.parse(r) for r in options.rewards],
        num_processes=options.processes,
        plan=plan,
        kto_label_counts=(labels["desirable"], labels["undesirable"]) if labels else None,
        max_prompt_tokens=long_prompt_limit(request, report, options, console),
    )
    if not options.dry_run and spec.nodes == 1:
        check_runnable_here(spec)
    if device == "cuda" and not plan.fits:
        console.print(
            f"[yellow]warning[/yellow] the planner expects {plan.memory.per_gpu_peak_gib:.1f} GiB "
            f"per GPU, more than {plan.gpu.name}'s {plan.gpu.memory_gib:.0f} GiB: it may run "
            "out of memory (`advisor plan ... --fit` finds setups that fit)"
        )
    recorded = options.model_dump(
        mode="json", include=set(REUSED_OPTIONS) | {"learning_rate_reason", "plan_for_this_gpu"}
    )
    manifest = write_run_folder(
        run_dir, spec, request, plan, options.recommendation, recorded, options.from_run
    )
    (run_dir / "preflight.json").write_text(report.model_dump_json(indent=2), encoding="utf-8")
    _print_settings(spec, run_dir, console)
    for difference in manifest.effective.differs_from_request if manifest.effective else []:
        console.print(f"  [yellow]note[/yellow] this run {difference}")
    if on_folder is not None:
        on_folder(run_dir)
    written = {"run_dir": run_dir, "manifest": manifest, "spec": manifest.spec, "exit_status": 0}
    if options.dry_run:
        console.print(f"dry run: wrote {run_dir} and launched nothing")
        return Run(outcome="dry_run", **written)
    if spec.nodes > 1:
        console.print(
            f"{spec.nodes} nodes: submit the job from a login node with "
            f"`sbatch {run_dir / 'slurm.sbatch'}` (it runs command.sh on every node); check "
            f"the nodes first with `srun advisor preflight {run_dir}` inside the allocation"
        )
        return Run(outcome="submitted", **written)
    return follow(
        manifest,
        run_dir,
        console=console,
        quiet=options.quiet,
        on_record=on_record,
        stop=stop,
    )


def _print_settings(spec: RunSpec, run_dir: Path, console) -> None:
    console.print(f"[bold]run folder[/bold] {run_dir}")
    for value in spec.starting_values:
        console.print(f"  {value.name} = {value.value:g}  ({value.reason})")
    for warning in spec.warnings:
        console.print(f"  [yellow]note[/yellow] {warning}")


def settings_of(run_dir: str | Path) -> tuple[PlanRequest, LaunchOptions]:
    """The request and launch options that wrote `run_dir`, to launch a fresh copy of it beside
    it (the folder itself is only read). InputError when it is not a run folder."""
    from planner.recipes import recipe
    from runners.run_folder import read_manifest

    run_dir = absolute(str(run_dir), "--from")
    manifest = read_manifest(run_dir, "--from")
    spec, request = manifest.spec, manifest.request
    if manifest.options is not None:
        found = {k: v for k, v in manifest.options.items() if k in LaunchOptions.model_fields}
    else:  # written before the manifest kept its options: what the settings say
        lr = next((v for v in spec.starting_values if v.name == "learning_rate"), None)
        usual = recipe(spec.method).learning_rate_for(request.tuning)
        given = lr is not None and (lr.value, lr.reason) != (usual.value, usual.reason)
        found = {
            "max_steps": spec.trl_config.get("max_steps"),
            "save_steps": spec.trl_config.get("save_steps"),
            "learning_rate": lr.value if given else None,
            "learning_rate_reason": lr.reason if given else "given by flag",
            "device": spec.device,
        }
    if found.get("learning_rate") is not None:
        reason = found.get("learning_rate_reason") or "given by flag"
        if not reason.startswith("as in "):  # a copy of a copy names the first
            found["learning_rate_reason"] = f"as in {run_dir.name}: {reason}"
    if found.get("device") == "auto":
        found["device"] = spec.device  # what it resolved to: the same device again
    options = LaunchOptions(
        **found,
        output=run_dir.parent,
        recommendation=manifest.recommendation,
        from_run=run_dir,
    )
    return request, options


def _finished_step(checkpoint: Path) -> int | None:
    """The checkpoint's step when it is the run's last one (max_steps reached), else None."""
    import json

    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    step, total = state.get("global_step", 0), state.get("max_steps") or 0
    return step if total and step >= total else None


def resume(
    run_dir: str | Path,
    options: LaunchOptions | None = None,
    *,
    model: str | None = None,
    dataset: str | None = None,
    method: str | None = None,
    console=None,
    on_folder: Callable[[Path], None] | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    stop: StopRequest | None = None,
) -> Run:
    """Continue a run from its last whole checkpoint, with the checks of a launch; refused
    (InputError) when it is training now, when its model, data or settings changed, or when
    `model`, `dataset` or `method` (what the caller expects; None: not checked) are not the
    run's. Of `options` only `quiet` applies: the run keeps its own settings."""
    from rich.markup import escape

    from runners.checkpoints import checkpoints, last_good_checkpoint
    from runners.lifecycle import checkpoints_dir, lock_holder
    from runners.run_folder import child_command, read_manifest, read_run_spec, resume_problems

    options = options or LaunchOptions()
    run_dir = absolute(str(run_dir), "--resume")
    manifest = read_manifest(run_dir)
    spec = read_run_spec(run_dir)
    holder = lock_holder(run_dir)
    if holder is not None:
        raise InputError(
            f"cannot resume {run_dir}: it is training now ({holder}); stop that run first "
            "(Ctrl-C where it runs) or let it finish"
        )
    problems = resume_problems(manifest, spec)
    for flag, given, recorded in (
        ("--model", model, spec.model),
        ("--dataset", dataset, spec.dataset),
    ):
        if given and str(absolute(given, flag)) != recorded:
            problems.append(f"{flag} {given} is not the run's {recorded}")
    if method and method != spec.method.value:
        problems.append(f"--method {method} is not the run's {spec.method.value}")
    if problems:
        raise InputError(
            f"cannot resume {run_dir}: " + "; ".join(problems) + ". Start a new run instead."
        )
    console = console or _console()
    folder = checkpoints_dir(run_dir, spec.trl_config["output_dir"])  # as runners.train does
    checkpoint, skipped = last_good_checkpoint(folder)
    for message in skipped:
        console.print(f"[yellow]note[/yellow] {escape(message)}", soft_wrap=True)
    if checkpoint is None and spec.method is not Method.ppo:
        why = "no readable checkpoint" if checkpoints(folder) else "no checkpoint saved yet"
        raise InputError(f"cannot resume {run_dir}: {why}; start a new run")
    finished = _finished_step(checkpoint) if checkpoint else None
    if finished is not None:
        console.print(f"{run_dir} already finished at step {finished}; nothing to resume")
        return Run(
            run_dir=run_dir,
            manifest=manifest,
            spec=spec,
            outcome="done",
            message=f"already finished at step {finished}",
            step=finished,
            exit_status=0,
        )
    check_runnable_here(spec)  # a resume starts the same training process as a launch
    start = checkpoint.name if checkpoint else "the start"
    console.print(f"resuming {escape(str(run_dir))} from {start}", soft_wrap=True)
    (run_dir / "error.json").unlink(missing_ok=True)
    if on_folder is not None:
        on_folder(run_dir)
    return follow(
        manifest,
        run_dir,
        spec=spec,
        command=child_command(spec, run_dir, resume=True),
        console=console,
        quiet=options.quiet,
        on_record=on_record,
        stop=stop,
    )


# --- following the training process -----------------------------------------------------------


def _launcher_pid(run_dir: Path) -> int | None:
    """The child of this process that trains `run_dir` (its command names the runspec)."""
    import psutil

    marker = f"{run_dir}/runspec.json"
    try:
        children = psutil.Process().children()
    except psutil.Error:
        return None
    for child in children:
        try:
            if marker in child.cmdline():
                return child.pid
        except psutil.Error:
            continue
    return None


def follow(
    manifest: Manifest,
    run_dir: Path,
    *,
    spec: RunSpec | None = None,
    command: list[str] | None = None,
    console=None,
    quiet: bool = False,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    stop: StopRequest | None = None,
) -> Run:
    """Start the training command of a written run folder (default: the manifest's), show it
    live unless `quiet`, sample the GPUs, write validation.json and return the Run as it
    ended, saying on `console` how it ended."""
    from runners.lifecycle import read_error, read_progress
    from runners.monitor import child_env, run_child, summary_table
    from runners.run_folder import read_metrics
    from runners.validation import GpuSampler, nvml_reader, process_tree, validation_record

    spec = spec or manifest.spec
    command = command or manifest.command
    console = console or _console()
    started = {"run_dir": run_dir, "manifest": manifest, "spec": spec}
    if stop is not None and stop.asked:
        message = "stopped before the training started"
        console.print(message)
        return Run(**started, outcome="stopped", message=message, exit_status=EXIT_STOPPED)
    reader = nvml_reader() if spec.device == "cuda" else None
    sampler = GpuSampler(run_dir / "gpu.jsonl", reader, pids=process_tree)
    sampler.take_baseline()  # memory in use before the run: not the run's
    pid: int | None = None

    def tick() -> None:
        nonlocal pid
        sampler.sample()
        pid = pid or _launcher_pid(run_dir)
        if stop is not None:
            stop.deliver()  # a stop asked from another thread reaches run_child as Ctrl-C

    rc = run_child(
        command,
        run_dir,
        spec.method,
        env=child_env(),
        console=console,
        show=not quiet,
        on_record=on_record,
        on_tick=tick,
        status=sampler.status,
    )
    records = read_metrics(run_dir)
    record = validation_record(
        spec.device,
        manifest.plan,
        records,
        sampler.peak_bytes,
        measured_by=sampler.measured_by,
        memory_note=sampler.memory_note,
        run_dir=run_dir,
        request=spec.request,
    )
    try:
        (run_dir / "validation.json").write_text(record.model_dump_json(indent=2), encoding="utf-8")
    except OSError as error:
        console.print(f"[yellow]note[/yellow] cannot write validation.json: {error.strerror}")
    remember_measurement(manifest, record, console)
    progress = read_progress(run_dir)
    outcome, message, status = _ending(rc, progress, read_error(run_dir), run_dir, console)
    if outcome == "done":
        console.print(summary_table(spec.method, records))
        if record.measured_peak_gib is not None:
            console.print(
                f"peak GPU memory {record.measured_peak_gib:.1f} GiB "
                f"(planned {record.estimated_peak_gib:.1f} GiB)"
            )
        console.print(f"[green]done[/green] at step {record.steps}: {run_dir}")
    elif outcome == "oom":
        _explain_oom(run_dir, manifest.plan, manifest.request, console)
    return Run(
        **started,
        outcome=outcome,
        message=message,
        pid=pid,
        returncode=rc,
        step=int(progress.get("step") or 0),
        checkpoint=progress.get("checkpoint") if progress.get("state") == "stopped" else None,
        validation=record,
        exit_status=status,
    )


def remember_measurement(manifest: Manifest, record: Validation, console) -> None:
    """Append a run that measured its NVML peak on a GPU to the calibration store (the next
    plan learns from it); a failure is a one-line note, never the run's failure."""
    if not record.comparable or record.measured_peak_gib is None:
        return
    from rich.markup import escape

    from planner.calibration import append_records, local_stack, machine_gpu, record_from_run

    try:
        gpu, driver = machine_gpu()
        entry = record_from_run(
            manifest.model_dump(mode="json"),
            record.model_dump(mode="json"),
            gpu=gpu,
            driver=driver,
            cuda=local_stack().cuda,
        )
        if entry is not None:
            path = append_records([entry], manifest.request.calibration)
            console.print(f"[dim]calibration: this run was added to {escape(str(path))}[/dim]")
    except Exception as error:  # the run is over: its record must not turn it into a failure
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        console.print(f"[yellow]note[/yellow] calibration store not updated: {reason}")


def _ending(
    rc: int, progress: dict[str, Any], error: dict[str, str], run_dir: Path, console
) -> tuple[Outcome, str, int]:
    """(outcome, message, exit status) of a finished child, from its status, progress.json,
    error.json and the run lock; says on `console` why a run that did not finish ended."""
    from rich.markup import escape

    from runners.lifecycle import lock_holder

    if rc == 0 and progress.get("state") == "done":
        return "done", "", 0
    kind, said = error.get("kind"), error.get("message", "")
    if kind == "oom":
        return "oom", said or "CUDA out of memory", 1
    if kind in ("disk_full", "checkpoint"):
        console.print(f"[red]stopped[/red]: {escape(said)}", soft_wrap=True)
        return ("disk_full" if kind == "disk_full" else "failed"), said, 1
    if kind == "non_finite":  # `stopped at step 3: the loss is NaN — ...`
        console.print(f"[red]training failed[/red]: {escape(said)}", soft_wrap=True)
        return "failed", said, 1
    if rc == EXIT_STOPPED:
        saved = progress.get("checkpoint") if progress.get("state") == "stopped" else None
        where = f"{saved} saved" if saved else "no new checkpoint was saved"
        console.print(
            f"stopped at step {progress.get('step', 0)} ({where}); continue with: "
            f"advisor launch --resume {escape(str(run_dir))}",
            soft_wrap=True,
        )
        return "stopped", "", EXIT_STOPPED
    holder = lock_holder(run_dir)
    if holder is not None:
        console.print(
            f"[red]not started[/red]: {escape(str(run_dir))} is being trained by {holder}",
            soft_wrap=True,
        )
        return "locked", f"being trained by {holder}", 1
    log = run_dir / "train.log"
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
    console.print("\n".join(lines), markup=False)
    if rc == 0:  # the process ended well but never trained: not a finished run
        console.print(f"[red]training did not run[/red]: no step was trained; full log: {log}")
        return "failed", "no step was trained", 1
    console.print(f"[red]training failed[/red] (exit {rc}); full log: {log}")
    return "failed", f"training failed (exit {rc})", rc or 1


def _explain_oom(run_dir: Path, plan: Plan | None, request: PlanRequest, console) -> None:
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
        except InputError:
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

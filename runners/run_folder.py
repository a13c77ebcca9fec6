"""The run folder, written before anything starts: manifest, rendered configs, the exact command."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import zlib
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from planner.errors import InputError
from planner.specs import Plan, PlanRequest, Precision
from runners.data import fingerprint, model_fingerprint
from runners.lifecycle import CHILD_ENV
from runners.settings import (
    TRL_CLI_METHODS,
    RunSpec,
    shell_safe,
    trl_cli_config,
    vllm_server_script,
)

LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers")
DISTRIBUTION = "alignment-advisor"
"""This project's own name on PyPI (pyproject.toml's `name`)."""


class Hashes(BaseModel):
    """What a resume must find unchanged."""

    settings: str
    model: str
    data: str


class AdvisorVersion(BaseModel):
    """The version of this tool that wrote the run folder."""

    version: str | None = Field(description="the installed alignment-advisor's version")
    commit: str | None = Field(
        default=None, description="`git rev-parse HEAD` of its checkout; None when not one"
    )
    uncommitted_changes: bool | None = Field(
        default=None, description="the checkout had edits to tracked files; None when not one"
    )


class Effective(BaseModel):
    """What the run really trains with, which `request` may not say: on CPU a request for
    bf16 on an A100 trains in fp32 with no GPU."""

    device: str = Field(description="cpu or cuda")
    gpu: str | None = Field(description="the GPU it plans for on cuda; None on CPU")
    processes: int
    nodes: int
    precision: Precision = Field(description="how it holds its numbers here")
    mixed_precision: str = Field(description="accelerate's mixed_precision: no, bf16 or fp16")
    differs_from_request: list[str] = Field(
        default_factory=list, description="each way the run differs from the request, in words"
    )


class RunPaths(BaseModel):
    """The model and dataset as seen from the run folder: relative to it where they sit inside
    the folder that holds it (copied together, they still match), else absolute. The spec keeps
    the absolute paths the training reads."""

    model: str
    dataset: str


class Manifest(BaseModel):
    """Everything needed to reproduce a run and to check a resume against it."""

    created: float
    run_dir: str
    spec: RunSpec
    request: PlanRequest = Field(description="the settings as asked for (see `effective`)")
    effective: Effective | None = Field(
        default=None, description="what really runs; absent in run folders written before it"
    )
    plan: Plan | None = None
    recommendation: dict[str, Any] | None = None
    advisor: AdvisorVersion | None = Field(
        default=None, description="this tool's version; absent in older run folders"
    )
    versions: dict[str, str]
    hashes: Hashes
    paths: RunPaths | None = Field(default=None, description="model and data from the run folder")
    options: dict[str, Any] | None = Field(
        default=None,
        description="the launch options it was written with (`advisor launch --from` reuses them)",
    )
    from_run: str | None = Field(
        default=None, description="the run folder whose settings it copied (`launch --from`)"
    )
    command: list[str]
    files: list[str] = Field(default_factory=list)


def library_versions() -> dict[str, str]:
    """Installed versions, read from package metadata (no imports)."""
    versions = {"python": sys.version.split()[0]}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _git(folder: Path, *args: str) -> str | None:
    """`git -C folder ARGS`'s output, or None when git or a checkout is not there."""
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def advisor_version() -> AdvisorVersion:
    """This tool's version (package metadata) and, installed from a git checkout, its commit
    and whether tracked files were edited (a copy that git does not track has neither)."""
    try:
        version = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        version = None
    here = Path(__file__).resolve()
    if _git(here.parent, "ls-files", "--error-unmatch", here.name) is None:
        return AdvisorVersion(version=version)  # not a checkout, or one that holds a copy
    commit = _git(here.parent, "rev-parse", "HEAD")
    status = _git(here.parent.parent, "status", "--porcelain", "--untracked-files=no")
    return AdvisorVersion(
        version=version,
        commit=commit,
        uncommitted_changes=None if status is None or commit is None else bool(status),
    )


def effective(spec: RunSpec, request: PlanRequest, plan: Plan | None) -> Effective:
    """What the run trains with here, and each way that differs from what was asked."""
    precision = spec.request.precision if spec.request is not None else request.precision
    gpu = (plan.gpu.name if plan is not None else request.gpu) if spec.device == "cuda" else None
    differs = []
    if spec.device == "cpu":
        differs.append(f"trains on CPU, not on the requested {request.gpu} (no GPU is used)")
    elif plan is not None and plan.gpu.name.lower() != request.gpu.lower():
        differs.append(f"plans for {plan.gpu.name}, not the requested {request.gpu}")
    if precision is not request.precision:
        where = "CPU" if spec.device == "cpu" else gpu
        differs.append(
            f"holds its numbers in {precision.value} on {where}, not the requested "
            f"{request.precision.value}"
        )
    if spec.num_processes != request.world_size:
        differs.append(f"starts {spec.num_processes} processes, not {request.world_size}")
    return Effective(
        device=spec.device,
        gpu=gpu,
        processes=spec.num_processes,
        nodes=spec.nodes,
        precision=precision,
        mixed_precision=str(spec.accelerate.get("mixed_precision", "no")),
        differs_from_request=differs,
    )


def from_run_folder(path: str, run_dir: Path) -> str:
    """`path` relative to `run_dir` when it lies inside the folder that holds `run_dir`
    (runs/demo-data/dpo.jsonl -> ../demo-data/dpo.jsonl), else as it is."""
    target, run_dir = Path(path), Path(run_dir).resolve()
    if not target.is_absolute() or not target.is_relative_to(run_dir.parent):
        return path
    return os.path.relpath(target, run_dir)


def hashes_for(spec: RunSpec) -> Hashes:
    return Hashes(
        settings=spec.settings_hash(),
        model=model_fingerprint(spec.model),
        data=fingerprint(spec.dataset),
    )


def child_command(spec: RunSpec, run_dir: Path, resume: bool = False) -> list[str]:
    """The command that trains on one machine: `accelerate launch` on runners.train (several
    processes, on GPUs or on CPU with gloo, start through torch's elastic agent)."""
    trainer = ["-m", "runners.train", f"{run_dir}/runspec.json"]
    return _launcher(spec, run_dir) + trainer + (["--resume"] if resume else [])


def local_port(run_dir: Path | str) -> int:
    """The rendezvous port of a one-machine multi-process run: one per run folder, so two runs
    on one machine (or two tests) do not meet at accelerate's default 29500."""
    return 29500 + zlib.crc32(str(run_dir).encode()) % 1000


def _launcher(spec: RunSpec, run_dir: Path | str) -> list[str]:
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        f"{run_dir}/accelerate.yaml",
    ]
    if spec.nodes == 1 and spec.num_processes > 1:
        launcher += ["--main_process_port", str(local_port(run_dir))]
    return launcher


NODE_LINES = [
    "# Every node runs this same file: its rank from MACHINE_RANK (or SLURM's SLURM_NODEID), the",
    "# rendezvous from MASTER_ADDR / MASTER_PORT, defaulting to what the launch wrote.",
    "node_rank=${MACHINE_RANK:-${SLURM_NODEID:-0}}",
    "master_addr=${MASTER_ADDR:-%(host)s}",
    "master_port=${MASTER_PORT:-%(port)s}",
]


def command_script(spec: RunSpec, run_dir: Path) -> str:
    """command.sh: the exact command `advisor launch` runs, found relative to the script itself
    so a copied or moved run folder trains (and resumes, with --resume) into itself. Ctrl-C or
    SIGTERM reach only the training ranks, which save a checkpoint and stop. For several nodes
    the same file runs on every node (node rank and rendezvous from the environment).
    InputError for a path that cannot be written into a script safely."""
    launcher = shlex.join(shell_safe(part, "path") for part in _launcher(spec, run_dir))
    # The launcher line names this folder through $run_dir, never by its written path.
    launcher = launcher.replace(
        shlex.quote(f"{run_dir}/accelerate.yaml"), '"$run_dir/accelerate.yaml"'
    )
    python = shlex.quote(shell_safe(sys.executable, "python interpreter"))
    check = f'{python} -m runners.lifecycle "$run_dir" "$@" || exit $?'
    node_lines: list[str] = []
    if spec.nodes > 1:
        host = shell_safe(str(spec.accelerate.get("main_process_ip", "127.0.0.1")), "host name")
        port = int(spec.accelerate.get("main_process_port", 29500))
        node_lines = [line % {"host": host, "port": port} for line in NODE_LINES]
        launcher += (
            ' --machine_rank "$node_rank"'
            ' --main_process_ip "$master_addr" --main_process_port "$master_port"'
        )
        # Node 0's trainer holds the run's lock; the other nodes share the folder.
        check = f'if [ "$node_rank" = 0 ]; then {check}; fi'
    lines = [
        "#!/bin/bash",
        "# The exact command `advisor launch` runs (arguments: --resume to continue the run).",
        "# The launcher runs as a background job, which ignores a terminal's Ctrl-C: the signal",
        "# reaches the training ranks alone, which save a checkpoint and stop (accelerate's",
        "# launcher would kill them 5 s after a signal of its own). SIGTERM here does the same.",
        "set -u",
        'run_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)',
        _exports(),
        "# What `advisor preflight` found this cluster needs (NCCL_P2P_DISABLE=1, ...), if anything.",
        'if [ -f "$run_dir/preflight.env" ]; then . "$run_dir/preflight.env"; fi',
        *node_lines,
        "# A finished or stopped run is never trained over: --resume continues it.",
        check,
        f'{launcher} -m runners.train "$run_dir/runspec.json" "$@" &',
        "launcher=$!",
        'stop() { pkill -INT -P "$launcher" -f \'runners[.]train\' || kill -TERM "$launcher"; }',
        "trap stop INT TERM",
        "status=0",
        'wait "$launcher" || status=$?',
        'while kill -0 "$launcher" 2>/dev/null; do wait "$launcher" || status=$?; done',
        'exit "$status"',
    ]
    if spec.method in TRL_CLI_METHODS:
        lines += [
            "# Or with TRL's own CLI (no live metrics), from the run folder:",
            f'#   cd "$run_dir" && trl {spec.method.value} --config trl_{spec.method.value}.yaml',
        ]
    return "\n".join(lines) + "\n"


def _exports() -> str:
    """The shell line that gives the training process the environment `advisor launch` gives it."""
    return "export " + " ".join(f"{name}={shlex.quote(value)}" for name, value in CHILD_ENV.items())


def preemption_seconds(plan: Plan | None) -> int:
    """How long before its time limit SLURM signals the job: the scheduler section of
    profiles/constants.toml, or longer where two of the plan's steps would not fit in it (the
    signal lands mid-step; the checkpoint is written after the step)."""
    from planner.constants import constants

    seconds = int(constants()["scheduler"]["preemption_signal_seconds"])
    if plan is not None and plan.time.step_seconds:
        seconds = max(seconds, int(2 * plan.time.step_seconds) + 120)
    return seconds


def slurm_script(spec: RunSpec, run_dir: str, gpus_per_node: int, plan: Plan | None = None) -> str:
    """An sbatch script that runs the run folder's command.sh once per node (srun, one task per
    node: each takes its node rank from SLURM_NODEID). SLURM signals the job ahead of its time
    limit (--signal=B:TERM@seconds); the script passes the signal to every node, whose ranks
    save a checkpoint and stop, and requeues itself; the requeued job resumes from that
    checkpoint. The run folder and the interpreter are written once, quoted, and reach every
    node through the environment, so no character in their names is ever run as shell code."""
    folder = shlex.quote(shell_safe(run_dir, "run folder"))
    if re.fullmatch(r"[\w./+-]+", run_dir):
        log = f"#SBATCH --output={run_dir}/slurm-%j.out"
    else:  # sbatch reads #SBATCH lines itself, without shell quoting
        log = "# The job's log: slurm-<job id>.out in the folder sbatch was started from."
    port = int(spec.accelerate.get("main_process_port", 29500))
    return f"""#!/bin/bash
#SBATCH --job-name=advisor-{spec.method.value}
#SBATCH --nodes={spec.nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node={gpus_per_node}
#SBATCH --cpus-per-task={8 * gpus_per_node}
#SBATCH --signal=B:TERM@{preemption_seconds(plan)}
#SBATCH --requeue
#SBATCH --open-mode=append
{log}
# Check the nodes first: srun {shlex.quote(sys.executable)} -m advisor.cli preflight {folder}
set -uo pipefail
export RUN_DIR={folder}
export MASTER_ADDR=${{MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}}
export MASTER_PORT=${{MASTER_PORT:-{port}}}
resume=()
if [ "${{SLURM_RESTART_COUNT:-0}}" -gt 0 ]; then resume=(--resume); fi  # requeued: continue
srun --kill-on-bad-exit=1 bash "$RUN_DIR/command.sh" "${{resume[@]}}" "$@" &
step=$!
preempted() {{
    echo "advisor: the time limit is near: every node saves a checkpoint, then the job requeues"
    kill -TERM "$step"
    wait "$step"
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
}}
trap preempted TERM
wait "$step"
"""


def new_run_dir(output: Path, spec_method: str) -> Path:
    """runs/<method>-<yyyymmdd-hhmmss>[-n]: a fresh folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(output) / f"{spec_method}-{stamp}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def _yaml(data: dict, path: Path) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def write_run_folder(
    run_dir: Path,
    spec: RunSpec,
    request: PlanRequest,
    plan: Plan | None = None,
    recommendation: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    from_run: Path | None = None,
) -> Manifest:
    """Write manifest.json, runspec.json, accelerate.yaml, the TRL CLI YAML, command.sh and,
    for several nodes, slurm.sbatch; return the manifest. `options`: the launch options to
    record; `from_run`: the run folder whose settings these are."""
    run_dir = Path(run_dir)
    script = command_script(spec, run_dir)  # refuses unsafe paths before anything is written
    gpus_per_node = max(1, spec.num_processes // spec.nodes)
    sbatch = (
        slurm_script(spec, str(run_dir.resolve()), gpus_per_node, plan) if spec.nodes > 1 else None
    )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create run folder {run_dir}: {error.strerror}") from None
    files = ["manifest.json", "runspec.json", "accelerate.yaml", "command.sh"]
    (run_dir / "runspec.json").write_text(spec.model_dump_json(indent=2), encoding="utf-8")
    _yaml(spec.accelerate, run_dir / "accelerate.yaml")
    cli = trl_cli_config(spec)
    if cli is not None:
        name = f"trl_{spec.method.value}.yaml"
        _yaml(cli, run_dir / name)
        files.append(name)
    if sbatch is not None:
        (run_dir / "slurm.sbatch").write_text(sbatch, encoding="utf-8")
        files.append("slurm.sbatch")
    server = vllm_server_script(spec)
    if server is not None:  # GRPO / RLOO generating on a vLLM server: start it first
        (run_dir / "vllm_server.sh").write_text(server, encoding="utf-8")
        (run_dir / "vllm_server.sh").chmod(0o755)
        files.append("vllm_server.sh")
    command = child_command(spec, run_dir)
    (run_dir / "command.sh").write_text(script, encoding="utf-8")
    (run_dir / "command.sh").chmod(0o755)
    manifest = Manifest(
        created=time.time(),
        run_dir=str(run_dir),
        spec=spec,
        request=request,
        plan=plan,
        recommendation=recommendation,
        effective=effective(spec, request, plan),
        advisor=advisor_version(),
        versions=library_versions(),
        hashes=hashes_for(spec),
        paths=RunPaths(
            model=from_run_folder(spec.model, run_dir),
            dataset=from_run_folder(spec.dataset, run_dir),
        ),
        options=options,
        from_run=str(from_run) if from_run is not None else None,
        command=command,
        files=files,
    )
    (run_dir / "manifest.json").write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    return manifest


def read_manifest(run_dir: Path, flag: str = "--resume") -> Manifest:
    """RUN_DIR/manifest.json; InputError naming `flag` when it is missing or not a manifest."""
    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        raise InputError(f"{flag} {run_dir}: no manifest.json there (not a run folder)")
    try:
        return Manifest.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(
            f"{flag} {path}: not a readable manifest ({type(error).__name__})"
        ) from None


def read_run_spec(run_dir: Path) -> RunSpec:
    """The RunSpec the child will train with: run_dir/runspec.json as it is on disk now."""
    path = Path(run_dir) / "runspec.json"
    try:
        return RunSpec.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable RunSpec ({type(error).__name__})") from None


def resume_problems(manifest: Manifest, spec: RunSpec | None = None) -> list[str]:
    """Why a resume would not continue the same run: changed model, data or settings."""
    problems = []
    now = hashes_for(spec or manifest.spec)
    if now.model != manifest.hashes.model:
        problems.append(f"the model at {manifest.spec.model} changed since the run started")
    if now.data != manifest.hashes.data:
        problems.append(
            f"the dataset {manifest.spec.dataset} changed since the run started "
            f"(sha256 {manifest.hashes.data[:12]} → {now.data[:12]})"
        )
    if now.settings != manifest.hashes.settings:
        old = manifest.spec.model_dump(mode="json")
        new = (spec or manifest.spec).model_dump(mode="json")
        changed = sorted(
            key
            for key in set(old["trl_config"]) | set(new["trl_config"])
            if key not in ("output_dir", "run_name")
            and old["trl_config"].get(key) != new["trl_config"].get(key)
        )
        changed += [
            k for k in ("method", "model", "dataset", "peft", "rewards") if old[k] != new[k]
        ]
        problems.append(f"the settings changed: {', '.join(changed) or 'launch configuration'}")
    return problems


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every record in run_dir/metrics.jsonl (a half-written last line is skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records

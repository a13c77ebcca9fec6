"""The cluster check run on every node before a long job (`advisor preflight RUN_DIR`).

Each node starts the run's ranks with torch's launcher (`python -m torch.distributed.run`,
the launcher the run itself is started by) on this module: every rank reads its software
versions, its GPU's free memory (NVML, before any CUDA context exists), the host's available
memory and, on a node's first rank, peer-to-peer access between the node's GPUs; the ranks
gather all of it (gloo on a CPU run, NCCL on GPUs) and time an all-reduce. Every node's first
rank writes the gathered records to a file its `advisor preflight` reads; each node then judges
them the same way (`findings`) against the run's plan, so every node exits with the same status.

The node rank comes from MACHINE_RANK, else SLURM_NODEID, else 0; the rendezvous from
MASTER_ADDR / MASTER_PORT, else what the run folder wrote — command.sh's convention.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from planner.constants import GIB, constants
from planner.errors import InputError

LIBRARIES = ("transformers", "trl", "accelerate", "peft", "deepspeed", "datasets", "tokenizers")
"""Libraries whose versions must agree on every rank (read from package metadata)."""
DISTRIBUTION = "alignment-advisor"
"""This tool's own name on PyPI: its version and git commit must agree on every rank too."""
ENV_FILE = "preflight.env"
"""The file in the run folder that command.sh and slurm.sbatch source when it is there."""
DEFAULT_TIMEOUT = 180.0
DEFAULT_PORT = 29500
"""torch.distributed.run's default --master_port, and the one slurm.sbatch exports."""
GLOO_SIZES = (2**18, 2**20, 2**22)
"""All-reduce message sizes in bytes on CPU (gloo): small, the check is a smoke test there."""
NCCL_SIZES = (2**20, 2**24, 2**28)
"""On GPUs, up to 256 MiB: large enough for NCCL to reach its bus bandwidth."""
ITERATIONS = 5
ERROR_PREFIX = "cluster_check:"
"""A rank that fails prints one line starting with this on stderr; the node reports it."""


# ----------------------------------------------------------------------------- records


class GpuReading(BaseModel):
    """A rank's GPU: its name and memory, as NVML reads it (or torch where NVML cannot)."""

    index: int = Field(description="the CUDA device index on its node (the local rank)")
    name: str
    uuid: str | None = None
    free_bytes: int | None = None
    total_bytes: int | None = None
    source: Literal["nvml", "torch"] = Field(
        description="nvml: read before this process made a CUDA context; torch: "
        "cuda.mem_get_info, after it (the context's own memory is not free)"
    )


class PeerLink(BaseModel):
    """Peer-to-peer access from one GPU of a node to another."""

    a: int
    b: int
    access: bool = Field(description="torch.cuda.can_device_access_peer(a, b)")
    copy_ok: bool | None = Field(
        default=None, description="a tensor copied a→b arrived intact; None where not tried"
    )


class RankRecord(BaseModel):
    """What one rank found on its node."""

    rank: int
    local_rank: int
    node_rank: int
    hostname: str
    versions: dict[str, str]
    device: Literal["cpu", "cuda"]
    gpu: GpuReading | None = None
    host_available_bytes: int | None = Field(
        default=None, description="/proc/meminfo MemAvailable; None where not Linux"
    )
    peers: list[PeerLink] = Field(
        default_factory=list, description="on a node's first rank: every pair of its GPUs"
    )


class AllReduceSize(BaseModel):
    """One timed all-reduce size. Bus bandwidth as nccl-tests defines it (doc/PERFORMANCE.md):
    algbw = bytes / time, busbw = algbw × 2(n−1)/n for all-reduce over n ranks."""

    bytes: int
    seconds: float = Field(description="mean per all-reduce, the slowest rank's")
    algbw_gbps: float
    busbw_gbps: float
    correct: bool = Field(description="every element held the sum of every rank's values")


class Gathered(BaseModel):
    """Everything the ranks gathered: what a node's first rank writes for its node."""

    backend: str
    world_size: int
    records: list[RankRecord]
    all_reduce: list[AllReduceSize]


class Expectations(BaseModel):
    """What the run needs, from its plan: the figures the gathered records are judged by."""

    device: Literal["cpu", "cuda"]
    nodes: int
    processes_per_node: int
    gpu: str | None = Field(description="the GPU profile the plan is for")
    per_gpu_peak_gib: float | None = Field(description="the plan's peak per GPU (NVML's view)")
    cpu_offload_gib: float = Field(0.0, description="the plan's offloaded states per GPU, on host")
    expected_busbw_gbps: float | None = Field(
        default=None, description="the bus bandwidth the plan's time estimate assumes"
    )
    slow_share: float = Field(description="below this share of it, the all-reduce is slow")

    @property
    def ranks(self) -> int:
        return self.nodes * self.processes_per_node


class ClusterReport(BaseModel):
    """What `advisor preflight --json` prints: every rank's record, the all-reduce, the verdict."""

    run_dir: str
    ok: bool
    node_rank: int = Field(description="the node that printed this report")
    nodes: int
    processes_per_node: int
    world_size: int
    backend: str
    rendezvous: str = Field(description="MASTER_ADDR:MASTER_PORT as this node used it")
    records: list[RankRecord] = Field(default_factory=list)
    all_reduce: list[AllReduceSize] = Field(default_factory=list)
    busbw_gbps: float | None = Field(default=None, description="at the largest size")
    expected_busbw_gbps: float | None = None
    per_gpu_peak_gib: float | None = None
    host_offload_gib_per_node: float = 0.0
    env_file: str | None = Field(
        default=None, description="RUN_DIR/preflight.env when this check wrote it"
    )
    problems: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


# ----------------------------------------------------------------------------- judging


def bus_bandwidth_gbps(nbytes: int, seconds: float, ranks: int) -> tuple[float, float]:
    """(algbw, busbw) in GB/s of an all-reduce: nccl-tests doc/PERFORMANCE.md, algbw = S / t,
    busbw = algbw × 2(n−1)/n."""
    algbw = nbytes / seconds / 1e9 if seconds > 0 else 0.0
    return algbw, algbw * 2 * (ranks - 1) / ranks


def expectations(manifest) -> Expectations:
    """The figures a run folder's manifest sets for the check."""
    from planner.gpus import resolve_gpu
    from planner.time_model import collective_link

    spec, plan = manifest.spec, manifest.plan
    per_node = max(1, spec.num_processes // max(1, spec.nodes))
    expected = None
    gpu_name = plan.gpu.name if plan is not None else None
    if spec.device == "cuda" and gpu_name is not None and spec.num_processes > 1:
        try:
            # The bandwidth the plan's time model assumes (planner.time_model, one rule).
            expected = collective_link(resolve_gpu(gpu_name), spec.nodes)[1]
        except InputError:  # a GPU planned by its memory alone has no profile
            expected = None
    return Expectations(
        device=spec.device,
        nodes=spec.nodes,
        processes_per_node=per_node,
        gpu=gpu_name,
        per_gpu_peak_gib=plan.memory.per_gpu_peak_gib if plan is not None else None,
        cpu_offload_gib=plan.memory.cpu_offload_gib if plan is not None else 0.0,
        expected_busbw_gbps=expected,
        slow_share=float(constants()["preflight"]["slow_allreduce_share"]),
    )


def _where(record: RankRecord) -> str:
    gpu = f", GPU {record.gpu.index}" if record.gpu is not None else ""
    return f"node {record.node_rank} rank {record.rank} ({record.hostname}{gpu})"


def version_problems(records: list[RankRecord]) -> list[str]:
    """One line per rank whose versions differ from rank 0's (a library missing counts)."""
    if not records:
        return []
    first = min(records, key=lambda r: r.rank)
    problems = []
    for record in sorted(records, key=lambda r: r.rank):
        names = sorted(set(first.versions) | set(record.versions))
        differ = [
            f"{name} {record.versions.get(name, 'not installed')} "
            f"(rank {first.rank}: {first.versions.get(name, 'not installed')})"
            for name in names
            if record.versions.get(name, "not installed")
            != first.versions.get(name, "not installed")
        ]
        if differ:
            problems.append(f"{_where(record)}: different versions: {', '.join(differ)}")
    return problems


def memory_problems(records: list[RankRecord], expect: Expectations) -> list[str]:
    """GPUs with less free memory than the plan's peak per GPU, and nodes with less available
    host memory than the plan's offloaded states for their ranks."""
    problems = []
    if expect.device == "cuda" and expect.per_gpu_peak_gib is not None:
        for record in sorted(records, key=lambda r: r.rank):
            gpu = record.gpu
            if gpu is None or gpu.free_bytes is None:
                problems.append(f"{_where(record)}: its GPU's free memory could not be read")
                continue
            free = gpu.free_bytes / GIB
            if free < expect.per_gpu_peak_gib:
                problems.append(
                    f"{_where(record)}: {free:.1f} GiB free of {gpu.total_bytes / GIB:.1f}, "
                    f"the plan's peak is {expect.per_gpu_peak_gib:.1f} GiB per GPU"
                )
    if expect.cpu_offload_gib > 0:
        for node, ranks in sorted(_by_node(records).items()):
            need = expect.cpu_offload_gib * len(ranks)
            available = ranks[0].host_available_bytes
            if available is None:
                problems.append(f"node {node} ({ranks[0].hostname}): host memory not readable")
            elif available / GIB < need:
                problems.append(
                    f"node {node} ({ranks[0].hostname}): {available / GIB:.1f} GiB of host "
                    f"memory available, the plan offloads {need:.1f} GiB to it "
                    f"({expect.cpu_offload_gib:.1f} GiB for each of its {len(ranks)} GPUs)"
                )
    return problems


def peer_problems(records: list[RankRecord]) -> list[str]:
    """Each node's pairs of GPUs without working peer-to-peer access, in words."""
    lines = []
    for record in sorted(records, key=lambda r: r.rank):
        missing = [p for p in record.peers if not p.access]
        broken = [p for p in record.peers if p.access and p.copy_ok is False]
        where = f"node {record.node_rank} ({record.hostname})"
        if missing:
            pairs = ", ".join(f"{p.a}→{p.b}" for p in missing)
            lines.append(f"{where}: no peer-to-peer access between GPUs {pairs}")
        if broken:
            pairs = ", ".join(f"{p.a}→{p.b}" for p in broken)
            lines.append(f"{where}: peer-to-peer copies between GPUs {pairs} arrive corrupted")
    return lines


def bandwidth_findings(gathered: Gathered, expect: Expectations) -> tuple[list[str], list[str]]:
    """(problems, notes) about the all-reduce: wrong sums, and a bus bandwidth below the
    configured share of what the plan assumes."""
    problems, notes = [], []
    wrong = [size.bytes for size in gathered.all_reduce if not size.correct]
    if wrong:
        problems.append(
            f"the all-reduce returned wrong sums at {', '.join(_size(b) for b in wrong)}"
        )
    if gathered.world_size < 2 or not gathered.all_reduce:
        notes.append("one process: no all-reduce between ranks to measure")
        return problems, notes
    largest = gathered.all_reduce[-1]
    if gathered.backend != "nccl":
        notes.append(
            f"all-reduce bus bandwidth {largest.busbw_gbps:.2f} GB/s over {gathered.backend} "
            "on CPU: not compared with a GPU interconnect (the run trains on CPU)"
        )
    elif expect.expected_busbw_gbps is None:
        notes.append(
            f"all-reduce bus bandwidth {largest.busbw_gbps:.1f} GB/s: no GPU profile for "
            f"{expect.gpu or 'this GPU'} to compare it with"
        )
    elif largest.busbw_gbps < expect.slow_share * expect.expected_busbw_gbps:
        problems.append(
            f"slow all-reduce: {largest.busbw_gbps:.1f} GB/s bus bandwidth at "
            f"{_size(largest.bytes)}, under {expect.slow_share:.0%} of the "
            f"{expect.expected_busbw_gbps:.0f} GB/s the plan assumes ({expect.gpu}"
            f"{', across nodes' if expect.nodes > 1 else ''}): check NCCL's transport "
            "(NCCL_DEBUG=INFO shows it)"
        )
    else:
        notes.append(
            f"all-reduce bus bandwidth {largest.busbw_gbps:.1f} GB/s at "
            f"{_size(largest.bytes)}, the plan assumes {expect.expected_busbw_gbps:.0f} GB/s"
        )
    return problems, notes


def findings(gathered: Gathered, expect: Expectations) -> tuple[list[str], list[str]]:
    """(problems, notes) of the gathered records against the run's plan."""
    problems = version_problems(gathered.records)
    problems += memory_problems(gathered.records, expect)
    nodes = {r.node_rank for r in gathered.records}
    if len(nodes) != expect.nodes or len(gathered.records) != expect.ranks:
        problems.append(
            f"{len(gathered.records)} rank(s) on {len(nodes)} node(s) answered, the run starts "
            f"{expect.ranks} on {expect.nodes}"
        )
    bandwidth_problems, notes = bandwidth_findings(gathered, expect)
    problems += bandwidth_problems
    notes += gpu_name_notes(gathered.records, expect)
    if expect.device == "cpu":
        notes.insert(0, "CPU run: no GPU memory to check")
    elif expect.per_gpu_peak_gib is None:
        notes.insert(0, "the run folder has no plan: GPU memory is listed, not checked")
    return problems, notes


def gpu_name_notes(records: list[RankRecord], expect: Expectations) -> list[str]:
    """A note for each node whose GPUs are not the card the plan is for: its memory peak and
    the bandwidth it assumes are that card's."""
    from planner.gpus import resolve_gpu

    notes = []
    for node, ranks in sorted(_by_node(records).items()):
        names = sorted({r.gpu.name for r in ranks if r.gpu is not None})
        for name in names:
            try:
                profile = resolve_gpu(name).name
            except InputError:
                profile = None
            if expect.gpu is not None and profile != expect.gpu:
                notes.append(
                    f"node {node} ({ranks[0].hostname}) has {name}, the plan is for {expect.gpu}: "
                    "the bandwidth it assumes is that card's (plan again with --gpu for this one)"
                )
    return notes


def _by_node(records: list[RankRecord]) -> dict[int, list[RankRecord]]:
    nodes: dict[int, list[RankRecord]] = {}
    for record in sorted(records, key=lambda r: r.rank):
        nodes.setdefault(record.node_rank, []).append(record)
    return nodes


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:g} MiB"


def write_env_file(run_dir: Path, reasons: list[str]) -> Path | None:
    """RUN_DIR/preflight.env: `export NCCL_P2P_DISABLE=1  # <reason>` where some node's GPUs
    lack peer-to-peer access; removed when a later check finds it everywhere. Written whole
    through a temporary file, so nodes sharing the folder never read half of it."""
    path = Path(run_dir) / ENV_FILE
    if not reasons:
        with contextlib.suppress(FileNotFoundError):
            if path.read_text(encoding="utf-8").startswith(_ENV_HEADER):
                path.unlink()
        return None
    reason = "; ".join(reasons).replace("\n", " ")
    text = f"{_ENV_HEADER}\nexport NCCL_P2P_DISABLE=1  # {reason}\n"
    handle, temporary = tempfile.mkstemp(dir=run_dir, prefix=".preflight-", suffix=".env")
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(temporary, path)
    return path


_ENV_HEADER = "# Written by `advisor preflight`; command.sh and slurm.sbatch source it."


# ----------------------------------------------------------------------------- one node


def node_rank_from_env(nodes: int) -> int:
    """MACHINE_RANK, else SLURM_NODEID, else 0; InputError when it is not a node of the run."""
    for name in ("MACHINE_RANK", "SLURM_NODEID"):
        value = os.environ.get(name)
        if value is None or value == "":
            continue
        try:
            rank = int(value)
        except ValueError:
            raise InputError(f"{name}={value!r} is not a node number") from None
        if not 0 <= rank < nodes:
            raise InputError(f"{name}={rank}, but the run has {nodes} node(s) (0 to {nodes - 1})")
        return rank
    return 0


def rendezvous_from_env(manifest, run_dir: Path) -> tuple[str, int]:
    """MASTER_ADDR / MASTER_PORT, else what the run wrote: on one node this machine and the
    port of its launcher; on several, the accelerate config's address (slurm.sbatch exports
    MASTER_ADDR) and port."""
    spec = manifest.spec
    written_addr = spec.accelerate.get("main_process_ip")
    address = os.environ.get("MASTER_ADDR") or None
    if address is None:
        if spec.nodes == 1:
            address = "127.0.0.1"
        elif written_addr and written_addr != "MASTER_ADDR":
            address = str(written_addr)
        else:
            raise InputError(
                f"the run has {spec.nodes} nodes: set MASTER_ADDR to node 0's address "
                "(slurm.sbatch sets it from the job's first node)"
            )
    port_text = os.environ.get("MASTER_PORT") or None
    if port_text is None:
        port_text = str(spec.accelerate.get("main_process_port") or _launcher_port(manifest))
    try:
        port = int(port_text)
    except ValueError:
        raise InputError(f"MASTER_PORT={port_text!r} is not a port number") from None
    if not 0 < port < 65536:
        raise InputError(f"MASTER_PORT={port} is not a port number (1 to 65535)")
    return address, port


def _launcher_port(manifest) -> int:
    """The rendezvous port a single-node run's launcher command was written with (accelerate's
    --main_process_port, or torchrun's --master_port in older run folders), else 29500."""
    command = list(manifest.command)
    for flag in ("--main_process_port", "--master_port"):
        if flag in command:
            with contextlib.suppress(ValueError, IndexError):
                return int(command[command.index(flag) + 1])
    return DEFAULT_PORT


def rendezvous_problem(address: str, port: int, node_rank: int, timeout: float) -> str | None:
    """Why this node cannot use the rendezvous, or None. Node 0 hosts it: the address must be
    one of its own and the port free. Other nodes must reach it over TCP; they retry until
    `timeout` (node 0 may start a little later)."""
    where = f"{address}:{port}"
    if node_rank == 0:
        try:
            family = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)[0][0]
        except OSError as error:
            return f"node 0: MASTER_ADDR {address} does not resolve ({error.strerror or error})"
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    return f"node 0: port {port} is in use here: choose another MASTER_PORT"
                return (
                    f"node 0 hosts the rendezvous, but {address} is not an address of this "
                    f"machine ({error.strerror}): set MASTER_ADDR to node 0's address"
                )
        return None
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return (
                f"node {node_rank}: the rendezvous {where} did not answer within {timeout:g} s "
                f"({last}): start `advisor preflight` on node 0 as well, and check MASTER_ADDR, "
                "MASTER_PORT and the firewall"
            )
        try:
            with socket.create_connection((address, port), timeout=min(2.0, left)):
                return None
        except OSError as error:
            last = error.strerror or type(error).__name__
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


def launcher_command(
    nodes: int,
    node_rank: int,
    per_node: int,
    address: str,
    port: int,
    timeout: float,
    backend: str,
    out: Path,
) -> list[str]:
    """torch's launcher on this module, for this node's ranks."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        str(nodes),
        "--node_rank",
        str(node_rank),
        "--nproc_per_node",
        str(per_node),
        "--master_addr",
        address,
        "--master_port",
        str(port),
        "--max_restarts",
        "0",
        # The static rendezvous waits this long for the other nodes (its default is 600 s).
        "--rdzv_conf",
        f"timeout={max(1, int(timeout))}",
        "-m",
        "runners.cluster_check",
        "--backend",
        backend,
        "--timeout",
        str(timeout),
        "--out",
        str(out),
    ]


def check_node(run_dir: Path, timeout: float = DEFAULT_TIMEOUT) -> ClusterReport:
    """Run this node's share of the cluster check for the run folder and judge what every
    rank gathered. InputError for a folder that is not a run, or bad rendezvous settings."""
    from runners.run_folder import read_manifest

    if not timeout > 0:
        raise InputError(f"--timeout {timeout:g}: give a number of seconds above 0")
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir, flag="advisor preflight")
    expect = expectations(manifest)
    spec = manifest.spec
    node_rank = node_rank_from_env(spec.nodes)
    address, port = rendezvous_from_env(manifest, run_dir)
    backend = "nccl" if spec.device == "cuda" else "gloo"
    report = ClusterReport(
        run_dir=str(run_dir),
        ok=False,
        node_rank=node_rank,
        nodes=spec.nodes,
        processes_per_node=expect.processes_per_node,
        world_size=spec.nodes * expect.processes_per_node,
        backend=backend,
        rendezvous=f"{address}:{port}",
        expected_busbw_gbps=expect.expected_busbw_gbps,
        per_gpu_peak_gib=expect.per_gpu_peak_gib if spec.device == "cuda" else None,
        host_offload_gib_per_node=expect.cpu_offload_gib * expect.processes_per_node,
    )
    problem = rendezvous_problem(address, port, node_rank, timeout)
    if problem is not None:
        report.problems.append(problem)
        return report
    with tempfile.TemporaryDirectory(prefix="advisor-preflight-") as folder:
        out = Path(folder) / "gathered.json"
        command = launcher_command(
            spec.nodes, node_rank, expect.processes_per_node, address, port, timeout, backend, out
        )
        failure = run_launcher(command, node_rank, timeout)
        gathered = None
        if out.is_file():
            gathered = Gathered.model_validate_json(out.read_text(encoding="utf-8"))
    if gathered is None:
        report.problems.append(failure or f"node {node_rank}: the check wrote no records")
        return report
    report.records, report.all_reduce = gathered.records, gathered.all_reduce
    if gathered.all_reduce and gathered.world_size > 1:
        report.busbw_gbps = gathered.all_reduce[-1].busbw_gbps
    report.problems, report.notes = findings(gathered, expect)
    if failure is not None:  # records gathered, but a rank failed after
        report.problems.append(failure)
    reasons = peer_problems(gathered.records)
    if spec.device == "cuda" and expect.processes_per_node > 1:
        env = write_env_file(run_dir, reasons)
        if env is not None:
            report.env_file = str(env)
            report.notes.append(
                f"wrote NCCL_P2P_DISABLE=1 into {env} (the run's command.sh sources it): "
                + "; ".join(reasons)
            )
    report.ok = not report.problems
    return report


def run_launcher(
    command: list[str], node_rank: int, timeout: float, limit: float | None = None
) -> str | None:
    """Run the launcher; None when it succeeded, else one line saying why not. Never waits
    longer than `limit`: by default the rendezvous and process-group timeouts plus a minute
    for imports, after which the launcher and its ranks are stopped."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    limit = 2 * timeout + 60 if limit is None else limit
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its whole group can be stopped together
    )
    try:
        _, err = process.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        _stop(process)
        return f"node {node_rank}: the check did not finish within {limit:g} s and was stopped"
    if process.returncode == 0:
        return None
    ranks: dict[str, list[str]] = {}  # the same error on every rank is said once
    for line in err.splitlines():
        if line.startswith(ERROR_PREFIX):
            rank, _, reason = line[len(ERROR_PREFIX) :].strip().partition(": ")
            ranks.setdefault(reason, []).append(rank.removeprefix("rank "))
    if ranks:
        return f"node {node_rank}: " + "; ".join(
            f"rank{'s' if len(who) > 1 else ''} {', '.join(sorted(who))}: {reason}"
            for reason, who in ranks.items()
        )
    joined = re.search(r"(\d+)/(\d+) clients joined", err)
    if joined:  # the static rendezvous gave up waiting for the other nodes
        return (
            f"node {node_rank}: only {joined[1]} of {joined[2]} nodes joined the rendezvous "
            f"within {timeout:g} s: start `advisor preflight` on every node (srun does)"
        )
    tail = [line.strip() for line in err.splitlines() if line.strip()]
    last = tail[-1] if tail else f"exit status {process.returncode}"
    return f"node {node_rank}: the launcher failed: {last[:300]}"


def _stop(process: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.communicate(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# ----------------------------------------------------------------------------- one rank


def library_versions() -> dict[str, str]:
    """python, torch, CUDA, NCCL and the training libraries that are installed (metadata only,
    except torch, which this process has imported anyway)."""
    import torch

    from runners.run_folder import advisor_version

    versions = {"python": sys.version.split()[0], "torch": torch.__version__}
    advisor = advisor_version()  # nodes on different checkouts of this tool differ here
    if advisor.version or advisor.commit:
        commit = f" {advisor.commit[:12]}" if advisor.commit else ""
        edited = " with edits" if advisor.uncommitted_changes else ""
        versions[DISTRIBUTION] = f"{advisor.version or '?'}{commit}{edited}"
    if torch.version.cuda:
        versions["cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        with contextlib.suppress(Exception):  # NCCL is absent from some builds
            versions["nccl"] = ".".join(str(part) for part in torch.cuda.nccl.version())
    for name in LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def host_available_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """The kernel's estimate of memory available for new work (MemAvailable), in bytes."""
    try:
        for line in meminfo.read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the file counts in kB (KiB)
    except (OSError, ValueError, IndexError):
        return None
    return None


def nvml_memory(uuid: str, backend=None) -> tuple[int, int] | None:
    """(free, total) bytes of the GPU with this UUID as NVML sees it, or None."""
    from planner.nvml import NvmlUnavailable, open_backend

    key = _uuid_key(uuid)
    try:
        backend = backend or open_backend()
    except NvmlUnavailable:
        return None
    try:
        for index in range(backend.device_count()):
            if _uuid_key(backend.device_uuid(index) or "") == key:
                memory = backend.memory(index)
                return memory.free, memory.total
    except Exception:  # a GPU NVML cannot read: torch reads it instead
        return None
    finally:
        backend.close()
    return None


def _uuid_key(uuid: str) -> str:
    """NVML writes `GPU-xxxxxxxx-…`, torch `xxxxxxxx-…`."""
    text = str(uuid).strip().lower()
    return text[4:] if text.startswith("gpu-") else text


def gpu_reading(local_rank: int) -> GpuReading:
    """This rank's GPU, read through NVML before the process touches the device, else through
    torch."""
    import torch

    props = torch.cuda.get_device_properties(local_rank)
    uuid = str(getattr(props, "uuid", "") or "") or None
    read = nvml_memory(uuid) if uuid else None
    if read is not None:
        free, total = read
        source = "nvml"
    else:
        free, total = torch.cuda.mem_get_info(local_rank)
        source = "torch"
    return GpuReading(
        index=local_rank,
        name=props.name,
        uuid=uuid,
        free_bytes=int(free),
        total_bytes=int(total),
        source=source,
    )


def peer_links(devices: int) -> list[PeerLink]:
    """Peer access between every ordered pair of this node's GPUs; where the driver grants it,
    a 1 MiB copy checks that it really works (some consumer cards claim it and corrupt)."""
    import torch

    links = []
    for a in range(devices):
        for b in range(devices):
            if a == b:
                continue
            access = bool(torch.cuda.can_device_access_peer(a, b))
            copy_ok = None
            if access:
                source = torch.arange(2**18, dtype=torch.float32, device=f"cuda:{a}")
                copy_ok = bool(torch.equal(source.to(f"cuda:{b}").cpu(), source.cpu()))
            links.append(PeerLink(a=a, b=b, access=access, copy_ok=copy_ok))
    return links


def time_all_reduce(sizes: tuple[int, ...], device, world: int) -> list[AllReduceSize]:
    """Each size all-reduced once to warm up, then ITERATIONS times timed; the slowest rank's
    mean time counts. Every rank adds rank + 1, so each element must sum to n(n+1)/2."""
    import torch
    import torch.distributed as dist

    rank = dist.get_rank()
    expected = world * (world + 1) / 2
    results = []
    for nbytes in sizes:
        tensor = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
        tensor.fill_(rank + 1)
        dist.all_reduce(tensor)
        correct = bool(torch.all(tensor == expected).item())
        _synchronize(device)
        dist.barrier()
        start = time.perf_counter()
        for _ in range(ITERATIONS):
            dist.all_reduce(tensor)
        _synchronize(device)
        elapsed = torch.tensor([(time.perf_counter() - start) / ITERATIONS], device=device)
        flags = torch.tensor([0.0 if correct else 1.0], device=device)
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        seconds = float(elapsed.item())
        algbw, busbw = bus_bandwidth_gbps(nbytes, seconds, world)
        results.append(
            AllReduceSize(
                bytes=nbytes,
                seconds=seconds,
                algbw_gbps=algbw,
                busbw_gbps=busbw,
                correct=flags.item() == 0.0,
            )
        )
        del tensor
    return results


def _synchronize(device) -> None:
    import torch

    if getattr(device, "type", "cpu") == "cuda":
        torch.cuda.synchronize(device)


def rank_main(backend: str, timeout: float, out: Path) -> None:
    """One rank: read this node, join the group, gather, time the all-reduce; a node's first
    rank writes what was gathered to `out`."""
    import datetime

    import torch
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    node_rank = int(os.environ.get("GROUP_RANK", "0"))
    device = torch.device("cpu")
    gpu = None
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"{socket.gethostname()} has no CUDA GPU, and the run trains on GPUs"
            )
        if torch.cuda.device_count() < local_world:
            raise RuntimeError(
                f"{socket.gethostname()} sees {torch.cuda.device_count()} GPU(s), the run "
                f"starts {local_world} processes per node"
            )
        gpu = gpu_reading(local_rank)  # before this process makes a CUDA context
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    record = RankRecord(
        rank=rank,
        local_rank=local_rank,
        node_rank=node_rank,
        hostname=socket.gethostname(),
        versions=library_versions(),
        device="cuda" if backend == "nccl" else "cpu",
        gpu=gpu,
        host_available_bytes=host_available_bytes(),
    )
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    try:
        dist.barrier()  # every rank has read its GPU before any peer copy makes contexts
        if backend == "nccl" and local_rank == 0 and local_world > 1:
            record.peers = peer_links(local_world)
        records: list[dict | None] = [None] * world
        dist.all_gather_object(records, record.model_dump(mode="json"))
        sizes = NCCL_SIZES if backend == "nccl" else GLOO_SIZES
        timed = time_all_reduce(sizes, device, world)
    finally:
        dist.destroy_process_group()
    if local_rank == 0:
        gathered = Gathered(
            backend=backend,
            world_size=world,
            records=[RankRecord.model_validate(r) for r in records],
            all_reduce=timed,
        )
        temporary = out.with_suffix(".tmp")
        temporary.write_text(gathered.model_dump_json(), encoding="utf-8")
        os.replace(temporary, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runners.cluster_check")
    parser.add_argument("--backend", choices=("gloo", "nccl"), required=True)
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        rank_main(args.backend, args.timeout, args.out)
    except Exception as error:  # one line for the node's report, not a traceback per rank
        rank = os.environ.get("RANK", "?")
        text = " ".join(str(error).split())[:300] or type(error).__name__
        print(f"{ERROR_PREFIX} rank {rank}: {type(error).__name__}: {text}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`advisor preflight RUN_DIR`: the cluster check, on CPU with gloo — two local processes, two
local "nodes" — and its judgement of gathered records (versions, memory, all-reduce, P2P)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from advisor.cli import main
from advisor.views.cluster_view import print_cluster_report
from planner.constants import GIB
from planner.errors import InputError
from planner.nvml import FakeBackend
from runners.cluster_check import (
    ENV_FILE,
    AllReduceSize,
    ClusterReport,
    Expectations,
    Gathered,
    GpuReading,
    PeerLink,
    RankRecord,
    bus_bandwidth_gbps,
    findings,
    gpu_reading,
    node_rank_from_env,
    nvml_memory,
    peer_links,
    peer_problems,
    rendezvous_from_env,
    run_launcher,
    write_env_file,
)
from runners.tiny import write_demo_dataset

VERSIONS = {"python": "3.11.7", "torch": "2.13.0", "trl": "1.12.0", "accelerate": "1.16.0"}


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def _dry_run(tiny_model: Path, folder: Path, *flags: str) -> Path:
    dataset = write_demo_dataset("dpo", folder / "data")
    rc, out, err = _cli(
        "launch", "--method", "dpo", "--model", str(tiny_model), "--dataset", str(dataset),
        "--tuning", "lora", "--lora-targets", "qv", "--seq-len", "64", "--batch-size", "2",
        "--grad-accum", "1", "--no-grad-checkpointing", "--device", "cpu", "--max-steps", "2",
        "--output", str(folder / "runs"), "--quiet", "--dry-run", *flags,
    )  # fmt: skip
    assert rc == 0, err
    return Path(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def two_node_run(tiny_model, tmp_path_factory) -> Path:
    """A CPU run folder for two nodes of one process each."""
    return _dry_run(tiny_model, tmp_path_factory.mktemp("nodes"), "--nodes", "2", "--num-gpus", "1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clear_rank_env(monkeypatch) -> None:
    for name in ("MACHINE_RANK", "SLURM_NODEID", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)


# ----------------------------------------------------------------------------- real processes


@pytest.mark.slow
def test_two_local_processes_gather_and_pass_with_a_table_and_json(
    tiny_model, tmp_path, monkeypatch
):
    _clear_rank_env(monkeypatch)
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    run = _dry_run(tiny_model, tmp_path, "--num-gpus", "2")
    rc, out, err = _cli("preflight", str(run), "--json", "--timeout", "60")
    assert rc == 0, out + err
    data = json.loads(out)
    assert data["ok"] and data["problems"] == []
    assert (data["nodes"], data["processes_per_node"], data["backend"]) == (1, 2, "gloo")
    assert sorted(r["rank"] for r in data["records"]) == [0, 1]
    for record in data["records"]:
        assert record["versions"]["torch"] and record["versions"]["python"]
        assert record["host_available_bytes"] > 0 and record["gpu"] is None
    sizes = data["all_reduce"]
    assert [s["bytes"] for s in sizes] == sorted(s["bytes"] for s in sizes)
    assert all(s["correct"] and s["busbw_gbps"] > 0 for s in sizes)
    assert data["busbw_gbps"] == sizes[-1]["busbw_gbps"]
    assert any("not compared" in note for note in data["notes"])  # gloo on CPU: no GPU link
    assert not (run / ENV_FILE).exists()

    console = _console()
    print_cluster_report(ClusterReport.model_validate(data), console)
    text = console.export_text()
    assert "node 0" in text and "all-reduce over 2 ranks (gloo)" in text
    assert text.strip().endswith("verdict: ok")


@pytest.mark.slow
def test_two_local_nodes_both_finish_ok(two_node_run):
    port = _free_port()
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    env.pop("SLURM_NODEID", None)
    command = [sys.executable, "-m", "advisor.cli", "preflight", str(two_node_run)]
    nodes = [  # node 1 first: it waits for node 0's rendezvous
        subprocess.Popen(
            [*command, "--timeout", "60"],
            env={**env, "MACHINE_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (1, 0)
    ]
    (out1, err1), (out0, err0) = (node.communicate(timeout=150) for node in nodes)
    assert nodes[1].returncode == 0, out0 + err0
    assert nodes[0].returncode == 0, out1 + err1
    assert "node 0" in out0 and "verdict: ok" in out0
    assert "2 node(s) × 1 process(es)" in out0
    assert "node 1: ok" in err1  # the other nodes say their verdict; node 0 prints the tables


def test_an_unreachable_rendezvous_is_one_line_within_the_timeout(two_node_run, monkeypatch):
    _clear_rank_env(monkeypatch)
    monkeypatch.setenv("MACHINE_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))  # nothing listens there
    start = time.monotonic()
    rc, out, err = _cli("preflight", str(two_node_run), "--timeout", "1", "--json")
    assert time.monotonic() - start < 10
    assert rc == 1, err
    report = json.loads(out)
    assert not report["ok"] and len(report["problems"]) == 1
    assert "node 1: the rendezvous 127.0.0.1:" in report["problems"][0]
    assert "did not answer within 1 s" in report["problems"][0]


def test_node_zero_refuses_an_address_that_is_not_its_own(two_node_run, monkeypatch):
    _clear_rank_env(monkeypatch)
    monkeypatch.setenv("MASTER_ADDR", "192.0.2.1")  # TEST-NET-1 (RFC 5737): never a local address
    rc, out, _ = _cli("preflight", str(two_node_run), "--timeout", "1")
    assert rc == 1
    assert "192.0.2.1 is not an address of this machine" in out


def test_a_failing_rank_is_one_line_and_a_stuck_launcher_is_stopped():
    fail = "import sys; [print(f'cluster_check: rank {r}: RuntimeError: no GPU', file=sys.stderr) for r in (1, 0)]; sys.exit(1)"
    assert run_launcher([sys.executable, "-c", fail], 0, 5) == (
        "node 0: ranks 0, 1: RuntimeError: no GPU"
    )
    start = time.monotonic()
    stuck = [sys.executable, "-c", "import time; time.sleep(60)"]
    assert run_launcher(stuck, 1, 5, limit=0.5) == (
        "node 1: the check did not finish within 0.5 s and was stopped"
    )
    assert time.monotonic() - start < 10


@pytest.mark.parametrize(
    ("env", "argv", "message"),
    [
        ({}, ["preflight", "{missing}"], "no manifest.json there (not a run folder)"),
        ({"MACHINE_RANK": "2", "MASTER_ADDR": "x"}, ["preflight", "{run}"], "the run has 2 node"),
        ({"SLURM_NODEID": "one"}, ["preflight", "{run}"], "SLURM_NODEID='one' is not a node"),
        ({"MASTER_ADDR": "h", "MASTER_PORT": "99999"}, ["preflight", "{run}"], "not a port"),
        ({"MASTER_ADDR": "h"}, ["preflight", "{run}", "--timeout", "0"], "--timeout 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(env, argv, message, two_node_run, tmp_path, monkeypatch):
    _clear_rank_env(monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    filled = [a.format(run=two_node_run, missing=tmp_path / "nowhere") for a in argv]
    rc, out, err = _cli(*filled)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err


# ----------------------------------------------------------------------------- judging records


def _record(rank: int, node: int = 0, free_gib: float | None = None, **changes) -> RankRecord:
    gpu = None
    if free_gib is not None:
        gpu = GpuReading(
            index=rank % 2,
            name="NVIDIA H100 80GB HBM3",
            free_bytes=int(free_gib * GIB),
            total_bytes=80 * GIB,
            source="nvml",
        )
    fields = {
        "rank": rank,
        "local_rank": rank % 2,
        "node_rank": node,
        "hostname": f"host{node}",
        "versions": dict(VERSIONS),
        "device": "cuda" if gpu else "cpu",
        "gpu": gpu,
        "host_available_bytes": 100 * GIB,
    }
    return RankRecord(**{**fields, **changes})


def _gathered(records, busbw: float = 300.0, backend: str = "nccl", correct=True) -> Gathered:
    nbytes = 2**28
    seconds = nbytes / (busbw * 1e9) * 2 * (len(records) - 1) / len(records)
    algbw, bus = bus_bandwidth_gbps(nbytes, seconds, len(records))
    size = AllReduceSize(
        bytes=nbytes, seconds=seconds, algbw_gbps=algbw, busbw_gbps=bus, correct=correct
    )
    return Gathered(backend=backend, world_size=len(records), records=records, all_reduce=[size])


def _expect(**changes) -> Expectations:
    fields = {
        "device": "cuda",
        "nodes": 2,
        "processes_per_node": 2,
        "gpu": "H100-80GB",
        "per_gpu_peak_gib": 60.0,
        "cpu_offload_gib": 0.0,
        "expected_busbw_gbps": 25.0,
        "slow_share": 0.25,
    }
    return Expectations(**{**fields, **changes})


def _cluster(free=(70, 70, 70, 70), **changes) -> list[RankRecord]:
    return [_record(rank, node=rank // 2, free_gib=free[rank], **changes) for rank in range(4)]


def test_a_healthy_cluster_has_no_problems_and_says_what_the_plan_assumes():
    problems, notes = findings(_gathered(_cluster(), busbw=20.0), _expect())
    assert problems == []
    assert any("the plan assumes 25 GB/s" in note for note in notes)


def test_a_version_mismatch_names_the_node_rank_and_both_versions():
    records = _cluster()
    records[3].versions["trl"] = "1.11.0"
    del records[2].versions["accelerate"]
    problems, _ = findings(_gathered(records, busbw=20.0), _expect())
    assert problems == [
        "node 1 rank 2 (host1, GPU 0): different versions: accelerate not installed "
        "(rank 0: 1.16.0)",
        "node 1 rank 3 (host1, GPU 1): different versions: trl 1.11.0 (rank 0: 1.12.0)",
    ]


def test_too_little_free_gpu_memory_for_the_plans_peak_is_a_problem_per_gpu():
    problems, _ = findings(_gathered(_cluster(free=(70, 12.5, 70, 59.9)), 20.0), _expect())
    assert problems == [
        "node 0 rank 1 (host0, GPU 1): 12.5 GiB free of 80.0, the plan's peak is 60.0 GiB per GPU",
        "node 1 rank 3 (host1, GPU 1): 59.9 GiB free of 80.0, the plan's peak is 60.0 GiB per GPU",
    ]


def test_too_little_host_memory_for_the_plans_offload_counts_every_gpu_of_the_node():
    records = _cluster()
    for record in records[2:]:
        record.host_available_bytes = 50 * GIB
    problems, _ = findings(_gathered(records, 20.0), _expect(cpu_offload_gib=30.0))
    assert problems == [
        "node 1 (host1): 50.0 GiB of host memory available, the plan offloads 60.0 GiB to it "
        "(30.0 GiB for each of its 2 GPUs)"
    ]


def test_a_slow_or_wrong_all_reduce_is_a_problem():
    problems, _ = findings(_gathered(_cluster(), busbw=6.0), _expect())
    assert len(problems) == 1 and problems[0].startswith("slow all-reduce: 6.0 GB/s bus bandwidth")
    assert "under 25% of the 25 GB/s the plan assumes (H100-80GB, across nodes)" in problems[0]
    problems, _ = findings(_gathered(_cluster(), busbw=20.0, correct=False), _expect())
    assert problems == ["the all-reduce returned wrong sums at 256 MiB"]


def test_a_missing_node_is_a_problem():
    problems, _ = findings(_gathered(_cluster()[:2], 20.0), _expect())
    assert problems == ["2 rank(s) on 1 node(s) answered, the run starts 4 on 2"]


def test_bus_bandwidth_is_nccl_tests_definition():
    # 1 GB in 0.1 s over 8 ranks: algbw 10 GB/s, busbw 10 × 2·7/8 = 17.5 GB/s.
    assert bus_bandwidth_gbps(10**9, 0.1, 8) == pytest.approx((10.0, 17.5))


def test_missing_peer_access_writes_nccl_p2p_disable_with_the_reason_and_a_later_pass_removes_it(
    tmp_path,
):
    records = _cluster()
    records[2].peers = [
        PeerLink(a=0, b=1, access=False),
        PeerLink(a=1, b=0, access=False),
    ]
    records[0].peers = [PeerLink(a=0, b=1, access=True, copy_ok=True)]
    reasons = peer_problems(records)
    assert reasons == ["node 1 (host1): no peer-to-peer access between GPUs 0→1, 1→0"]
    path = write_env_file(tmp_path, reasons)
    lines = path.read_text().splitlines()
    assert lines[-1] == (
        "export NCCL_P2P_DISABLE=1  # node 1 (host1): no peer-to-peer access between GPUs 0→1, 1→0"
    )
    # the line is what a shell runs: it sets the variable and ignores the reason
    shell = subprocess.run(
        ["bash", "-c", f'source "{path}" && echo "$NCCL_P2P_DISABLE"'],
        capture_output=True,
        text=True,
    )
    assert shell.stdout.strip() == "1"
    assert write_env_file(tmp_path, []) is None and not path.exists()


def test_the_node_rank_comes_from_machine_rank_then_slurm_then_zero(monkeypatch):
    _clear_rank_env(monkeypatch)
    assert node_rank_from_env(4) == 0
    monkeypatch.setenv("SLURM_NODEID", "3")
    assert node_rank_from_env(4) == 3
    monkeypatch.setenv("MACHINE_RANK", "1")
    assert node_rank_from_env(4) == 1


@pytest.mark.parametrize(
    ("nodes", "accelerate", "command", "expected"),
    [
        (1, {}, ["python", "-m", "accelerate.commands.launch", "--main_process_port", "29713"],
         ("127.0.0.1", 29713)),
        (1, {}, ["python", "-m", "torch.distributed.run", "--master_port", "29714"],
         ("127.0.0.1", 29714)),
        (2, {"main_process_ip": "node-a", "main_process_port": 29500}, [], ("node-a", 29500)),
        (2, {"main_process_ip": "MASTER_ADDR"}, [], "set MASTER_ADDR to node 0's address"),
    ],
)  # fmt: skip
def test_the_rendezvous_defaults_to_what_the_run_folder_wrote(
    nodes, accelerate, command, expected, monkeypatch
):
    from types import SimpleNamespace

    _clear_rank_env(monkeypatch)
    manifest = SimpleNamespace(
        spec=SimpleNamespace(nodes=nodes, accelerate=accelerate), command=command
    )
    if isinstance(expected, str):  # a run folder from before the launch wrote its address
        with pytest.raises(InputError, match=expected):
            rendezvous_from_env(manifest, Path("."))
        return
    assert rendezvous_from_env(manifest, Path(".")) == expected
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.9")
    monkeypatch.setenv("MASTER_PORT", "29999")
    assert rendezvous_from_env(manifest, Path(".")) == ("10.0.0.9", 29999)


def test_gpu_memory_is_read_from_nvml_by_the_devices_uuid():
    fixture = {
        "devices": [
            {"name": "A", "uuid": "GPU-aaaa", "memory": [{"total": 80, "used": 30, "free": 50}]},
            {"name": "B", "uuid": "GPU-bbbb", "memory": [{"total": 80, "used": 70, "free": 10}]},
        ]
    }
    assert nvml_memory("bbbb", FakeBackend(fixture)) == (10, 80)  # torch's uuid has no GPU-
    assert nvml_memory("cccc", FakeBackend(fixture)) is None


def test_a_node_with_another_card_than_the_plans_is_noted():
    records = _cluster()
    for record in records[2:]:
        record.gpu.name = "NVIDIA A100-SXM4-80GB"
    problems, notes = findings(_gathered(records, busbw=20.0), _expect())
    assert problems == []
    assert [n for n in notes if "the plan is for" in n] == [
        "node 1 (host1) has NVIDIA A100-SXM4-80GB, the plan is for H100-80GB: the bandwidth it "
        "assumes is that card's (plan again with --gpu for this one)"
    ]


class _Props:
    name = "NVIDIA A100-SXM4-80GB"

    def __init__(self, uuid):
        self.uuid = uuid


def test_a_ranks_gpu_is_read_through_nvml_by_uuid_else_through_torch(monkeypatch):
    import torch

    fixture = Path(__file__).parent / "fixtures" / "nvml" / "a100x2.json"
    monkeypatch.setenv("ADVISOR_FAKE_NVML", str(fixture))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: _Props(f"0000-{'ab'[i]}"))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (7 * GIB, 80 * GIB))
    reading = gpu_reading(1)  # the second GPU, found by its UUID
    assert (reading.index, reading.source, reading.free_bytes) == (1, "nvml", 85375057920)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: _Props("ffff-0"))
    reading = gpu_reading(0)  # NVML does not know it (a MIG slice, say): torch reads it
    assert (reading.source, reading.free_bytes, reading.total_bytes) == ("torch", 7 * GIB, 80 * GIB)


def test_gpus_without_peer_access_are_listed_without_a_copy(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "can_device_access_peer", lambda a, b: False)
    links = peer_links(3)
    assert [(link.a, link.b) for link in links] == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    assert not any(link.access for link in links) and all(link.copy_ok is None for link in links)


def _console():
    from rich.console import Console

    return Console(record=True, width=120, file=io.StringIO())


@pytest.mark.parametrize("nodes", [1, 2])
def test_the_expected_bandwidth_is_the_one_the_plan_times_collectives_with(nodes):
    """One rule (planner.time_model.collective_link): the GPU's link within a node, the
    profile's inter-node link across nodes."""
    from types import SimpleNamespace

    from planner.gpus import resolve_gpu
    from planner.models import resolve_model
    from planner.plan import estimate
    from planner.specs import PlanRequest
    from planner.time_model import communication
    from runners.cluster_check import expectations
    from runners.settings import build_run_spec

    request = PlanRequest(
        model="llama-3-8b", gpu="h100-80gb", num_gpus=8, nodes=nodes, sharding="fsdp"
    )
    spec = build_run_spec(request, model_path="/m", dataset="/d.jsonl", output_dir="ck")
    expected = expectations(SimpleNamespace(spec=spec, plan=estimate(request)))
    planned = communication(resolve_model("llama-3-8b"), request, resolve_gpu("h100-80gb"))
    assert expected.expected_busbw_gbps == planned.bandwidth_gbps
    assert (planned.bandwidth_gbps == 50.0) is (nodes == 2)  # H100 profile: NDR 400 Gb/s

"""The analytic estimate's tensor-level peak agrees with a traced step within 5% (issue #2).

Matrix: sft / dpo / dpo+lora / kto / orpo / reward × Llama-, Qwen2- and Gemma-2-style
architectures scaled down to trace in about a second × sequence 256 and 1024 × gradient
checkpointing on and off. The trace builds the real transformers architecture on fake
tensors (planner.trace); the estimate is planner.memory, which never imports torch.
"""

from __future__ import annotations

import itertools

import pytest

from planner.memory import estimate_memory
from planner.models import spec_from_config
from planner.specs import PlanRequest
from tests.tiny_architectures import GEMMA2_TINY, LLAMA_TINY, QWEN2_TINY

ARCHITECTURES = {"llama": LLAMA_TINY, "qwen2": QWEN2_TINY, "gemma2": GEMMA2_TINY}
METHODS = ["sft", "dpo", "dpo+lora", "kto", "orpo", "reward"]
MATRIX = list(itertools.product(METHODS, ARCHITECTURES, (256, 1024), (False, True)))


def request_for(method: str, arch: str, seq: int, checkpointing: bool) -> PlanRequest:
    name, _, tuning = method.partition("+")
    return PlanRequest(
        method=name,
        tuning=tuning or "full",
        seq_len=seq,
        grad_checkpointing=checkpointing,
        batch_size=2,
        grad_accum=1,
        attention="eager" if arch == "gemma2" else "sdpa",
    )


@pytest.mark.parametrize(
    ("method", "arch", "seq", "checkpointing"),
    MATRIX,
    ids=[f"{m}-{a}-s{s}-{'ckpt' if c else 'nockpt'}" for m, a, s, c in MATRIX],
)
def test_analytic_peak_within_5_percent_of_traced_step(method, arch, seq, checkpointing):
    from planner.trace import trace_step

    config = ARCHITECTURES[arch]
    request = request_for(method, arch, seq, checkpointing)
    traced = trace_step(request, config)
    estimated = estimate_memory(spec_from_config(config, arch, "test"), request)
    error = estimated.tensor_peak / traced.peak_bytes - 1
    assert abs(error) <= 0.05, (
        f"estimate {estimated.tensor_peak / 2**20:.1f} MiB ({estimated.peak_phase}) vs traced "
        f"{traced.peak_bytes / 2**20:.1f} MiB ({traced.peak_phase}): {error:+.1%}"
    )

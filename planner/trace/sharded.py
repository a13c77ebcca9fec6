"""Per-rank memory of a sharded run, traced: FSDP2 (`fully_shard`) on G ranks on fake tensors,
and DeepSpeed's own model-state estimators for the ZeRO stages.

FSDP2 is traced the way torchtitan's ``scripts/estimate/estimation.py`` estimates memory: a
``"fake"`` process group (``torch.testing._internal.distributed.fake_pg``: collectives that do
nothing) of G ranks, the real Hugging Face model built from its config inside ``FakeTensorMode``,
wrapped as accelerate 1.16's FSDP2 path wraps it (``fsdp2_prepare_model`` with
TRANSFORMER_BASED_WRAP: each decoder layer, the input embedding, the final norm with the
lm_head resharded only after backward, then the root), and one forward, backward and optimizer
step under ``FSDPMemTracker``, which sorts rank 0's bytes into sharded parameters, sharded
gradients, optimizer states and the gathered (unsharded) buffers.

Precision as accelerate runs it under bf16/fp16 mixed precision: trainable parameters upcast to
fp32 (the sharded master copy), ``MixedPrecisionPolicy(param_dtype=reduce_dtype=half)``
(accelerate/utils/dataclasses.py ``set_mixed_precision``), so every layer is gathered and its
gradients reduce-scattered in 16 bits. The optimizer is torch's fused AdamW, warmed up (its states
exist) before the traced step.

Deep models: every decoder layer holds the same parameters, so the sharded states are exactly
linear in the layer count. A model deeper than ``MAX_TRACED_LAYERS`` is traced at two depths and
the line through them is evaluated at the real depth (``ShardedTrace.line`` says so); the
gathered buffers, which hold at most a few units at once, come from the deeper trace.

The ZeRO stages are not traced (DeepSpeed's engine does not run on fake tensors): they are set
against ``estimate_zero2_model_states_mem_needs`` / ``estimate_zero3_model_states_mem_needs``
from the installed DeepSpeed (``deepspeed_estimate``).

Importing this module imports neither torch nor transformers nor DeepSpeed.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel, Field

from planner import parameters
from planner.errors import InputError
from planner.precision import effective_sharding
from planner.specs import ModelSpec, Offload, PlanRequest, Sharding, Tuning

MAX_TRACED_LAYERS = 4
"""Models up to this depth are traced whole; deeper ones at 1 and 2 layers, then extrapolated."""
TRACE_TOKENS = 16
"""Tokens of the one-row batch the traced step runs: the states do not depend on the batch."""


class ShardedTrace(BaseModel):
    """Rank 0's bytes of an FSDP2 run on `world_size` ranks, traced on fake tensors."""

    world_size: int
    num_layers: int = Field(description="decoder layers of the model")
    traced_layers: list[int] = Field(description="depths traced (two: extrapolated linearly)")
    sharded_params: int = Field(description="the rank's shard of the parameters")
    sharded_grads: int = Field(description="the rank's shard of the gradients")
    optimizer: int = Field(description="the optimizer states of the rank's shard")
    gathered: int = Field(
        description="the most gathered (unsharded) bytes live at once: parameters, all-gather "
        "outputs, unsharded gradients and reduce-scatter inputs"
    )
    line: str = Field(default="", description="the linear fit in the layer count, when used")
    seconds: float = 0.0
    notes: list[str] = Field(default_factory=list)

    @property
    def model_states(self) -> int:
        """Sharded parameters + gradients + optimizer states per rank."""
        return self.sharded_params + self.sharded_grads + self.optimizer


def check_fsdp_traceable(request: PlanRequest) -> None:
    """InputError when `trace_fsdp` cannot trace `request` (checked before importing torch)."""
    if effective_sharding(request) is not Sharding.fsdp:
        raise InputError("the sharded trace covers --sharding fsdp (FSDP2)")
    if request.tuning is not Tuning.full:
        raise InputError("the sharded FSDP trace covers full tuning")
    if request.offload is not Offload.none:
        raise InputError("the sharded FSDP trace does not model CPU offload")
    if request.world_size < 2:
        raise InputError("the sharded FSDP trace needs at least 2 ranks")


def trace_fsdp(
    spec: ModelSpec, request: PlanRequest, depths: tuple[int, ...] | None = None
) -> ShardedTrace:
    """Rank 0's model states and gathered buffers of `spec` under FSDP2 on `request.world_size`
    ranks, traced at `depths` layers (default: the whole model, or 1 and 2 layers of a model
    deeper than MAX_TRACED_LAYERS, extrapolated along the exact line in the layer count)."""
    check_fsdp_traceable(request)
    if not spec.hf_config:
        raise InputError("the sharded trace needs the model's config.json")
    layers = spec.num_layers
    if depths is None:
        depths = (layers,) if layers <= MAX_TRACED_LAYERS else (1, 2)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _fake_process_group(request.world_size) as mesh:
            traced = [_trace_depth(spec, request, depth, mesh) for depth in depths]
    notes = [
        "FSDP2 fully_shard per decoder layer, input embedding, [final norm, lm_head] "
        "(kept gathered through backward) and root, as accelerate 1.16 wraps it",
        f"{request.precision.value}: fp32 sharded parameters, "
        f"{request.precision.half or 'fp32'} all-gathers and reduce-scatters",
    ]
    if len(traced) == 1:
        one = traced[0]
        return ShardedTrace(
            world_size=request.world_size,
            num_layers=layers,
            traced_layers=[depths[0]],
            **one,
            seconds=round(time.perf_counter() - start, 3),
            notes=notes,
        )
    (d1, t1), (d2, t2) = (depths[0], traced[0]), (depths[-1], traced[-1])

    def at(key: str) -> int:
        slope = (t2[key] - t1[key]) / (d2 - d1)
        return round(t1[key] + slope * (layers - d1))

    states1 = t1["sharded_params"] + t1["sharded_grads"] + t1["optimizer"]
    states2 = t2["sharded_params"] + t2["sharded_grads"] + t2["optimizer"]
    slope = (states2 - states1) / (d2 - d1)
    line = (
        f"model states per rank = {states1 - slope * d1:,.0f} + {slope:,.0f} × layers bytes "
        f"(traced at {d1} and {d2} layers; every decoder layer shards alike)"
    )
    return ShardedTrace(
        world_size=request.world_size,
        num_layers=layers,
        traced_layers=[d1, d2],
        sharded_params=at("sharded_params"),
        sharded_grads=at("sharded_grads"),
        optimizer=at("optimizer"),
        gathered=t2["gathered"],
        line=line,
        seconds=round(time.perf_counter() - start, 3),
        notes=[*notes, line],
    )


@contextmanager
def _fake_process_group(world_size: int) -> Iterator[Any]:
    """A fake process group of `world_size` ranks (this process is rank 0) and its 1-D mesh."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if dist.is_initialized():
        raise InputError("the sharded trace needs a process without torch.distributed set up")
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world_size)
    try:
        # Built outside FakeTensorMode: the mesh reads its rank map as real numbers.
        yield init_device_mesh("cpu", (world_size,))
    finally:
        dist.destroy_process_group()


def _config(spec: ModelSpec, depth: int) -> Any:
    from transformers import AutoConfig

    values = {
        k: v for k, v in spec.hf_config.items() if k not in ("quantization_config", "auto_map")
    }
    model_type = values.pop("model_type", None)
    if not model_type:
        raise InputError("the sharded trace needs the model's config.json with its model_type")
    config = AutoConfig.for_model(model_type, **values)
    config.num_hidden_layers = depth
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = config.layer_types[:depth]
    config.use_cache = False
    return config


def _shard(model: Any, mesh: Any, half: Any) -> None:
    """`fully_shard` as accelerate 1.16's `fsdp2_prepare_model` applies it (TRANSFORMER_BASED_WRAP)."""
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = (
        MixedPrecisionPolicy(param_dtype=half, reduce_dtype=half)
        if half is not None
        else MixedPrecisionPolicy()
    )
    kwargs = {"mesh": mesh, "mp_policy": policy, "reshard_after_forward": True}
    for param in model.parameters():  # accelerate upcasts trained parameters to fp32
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.to(torch.float32)
    layer_classes = tuple({type(layer) for layer in _decoder_layers(model)})
    for module in list(model.modules()):
        if isinstance(module, layer_classes):
            fully_shard(module, **kwargs)
    embed = model.get_input_embeddings()
    head = model.get_output_embeddings()
    tied = head is not None and embed.weight is head.weight
    if not tied:
        fully_shard(embed, **kwargs)
    norm = getattr(getattr(model, "model", model), "norm", None)
    tail = [m for m in ((norm, embed, head) if tied else (norm, head)) if m is not None]
    fully_shard(tail, **{**kwargs, "reshard_after_forward": False})
    fully_shard(model, mesh=mesh, mp_policy=policy)


def _decoder_layers(model: Any) -> list:
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise InputError("the sharded trace needs a decoder with a `layers` list")
    return list(layers)


def _trace_depth(spec: ModelSpec, request: PlanRequest, depth: int, mesh: Any) -> dict[str, int]:
    """One traced step of the model cut to `depth` decoder layers: rank 0's bytes by kind."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from transformers import AutoModelForCausalLM

    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(request.precision.half)
    config = _config(spec, depth)
    with FakeTensorMode():
        model = AutoModelForCausalLM.from_config(
            config, dtype=torch.float32, attn_implementation="sdpa"
        )
        _shard(model, mesh, half)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
        for p in model.parameters():  # the steady state: states exist before the step
            p.grad = torch.zeros_like(p)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ids = torch.randint(0, config.vocab_size, (1, TRACE_TOKENS))
        tracker = _tracker(model, optimizer)
        tracker.track_inputs((ids,))
        with tracker:
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            del loss
            tracker.after_backward = tracker.kinds()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    states = tracker.after_backward
    return {
        "sharded_params": states["sharded_params"],
        "sharded_grads": states["sharded_grads"],
        "optimizer": states["optimizer"],
        "gathered": tracker.gathered_peak,
    }


def _tracker(model: Any, optimizer: Any) -> Any:
    """FSDPMemTracker that also keeps the high point of the gathered buffers."""
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker, _FSDPRefType

    gathered_kinds = (
        _FSDPRefType.UNSHARDED_PARAM,
        _FSDPRefType.ALL_GATHER,
        _FSDPRefType.UNSHARDED_GRAD,
        _FSDPRefType.REDUCE_SCATTER,
    )
    kinds = {
        "sharded_params": _FSDPRefType.SHARDED_PARAM,
        "sharded_grads": _FSDPRefType.SHARDED_GRAD,
        "optimizer": _FSDPRefType.OPT,
    }

    class Tracker(FSDPMemTracker):
        gathered_peak = 0
        after_backward: dict[str, int] | None = None

        def kinds(self) -> dict[str, int]:
            snap = next(iter(self._curr_mem_snap.values()), {})
            return {name: int(snap.get(kind, 0)) for name, kind in kinds.items()}

        def _update_peak_stats(self, peak_state: Any) -> None:
            super()._update_peak_stats(peak_state)
            for snap in self._curr_mem_snap.values():
                gathered = sum(snap.get(kind, 0) for kind in gathered_kinds)
                self.gathered_peak = max(self.gathered_peak, int(gathered))

    return Tracker(model, optimizer)


# --------------------------------------------------------------------------- DeepSpeed


class DeepSpeedEstimate(BaseModel):
    """DeepSpeed's own estimate of one GPU's model states, split as its estimator splits it."""

    states: int = Field(description="the sharded (and, under ZeRO-2, replicated 16-bit) states")
    largest_layer: int = Field(description="ZeRO-3's 4 × largest layer: its gathered buffers")


def deepspeed_estimate(spec: ModelSpec, request: PlanRequest) -> DeepSpeedEstimate:
    """GPU bytes of model states per rank by the installed DeepSpeed's estimators, called with
    the run's P, G and largest layer: `estimate_zero2_model_states_mem_needs` (2P + 18P/G) and
    `estimate_zero3_model_states_mem_needs` (4·largest layer + 18P/G). Under LoRA the trained
    adapters are estimated as such and the frozen base as parameters whose optimizer work is
    elsewhere (the estimators' optimizer-offload branch: the 16-bit parameters alone, 2P or
    2P/G), since a frozen parameter has neither gradients nor optimizer states."""
    sharding = effective_sharding(request)
    trained = parameters.trainable_params(spec, request)
    frozen = parameters.model_params(spec, request) - (
        trained if request.tuning is Tuning.full else 0
    )
    largest = parameters.largest_layer_params(spec)
    per_node, nodes = request.num_gpus, request.nodes
    if sharding is Sharding.zero2:
        from deepspeed.runtime.zero.stage_1_and_2 import (
            estimate_zero2_model_states_mem_needs as zero2,
        )

        _, states = zero2(trained, per_node, nodes, cpu_offload=False)
        if frozen:
            states += zero2(frozen, per_node, nodes, cpu_offload=True)[1]
        return DeepSpeedEstimate(states=int(states), largest_layer=0)
    if sharding is Sharding.zero3:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs as zero3

        _, gpu, layer = zero3(
            trained, largest, per_node, nodes, cpu_offload=False, cpu_offload_params=False
        )
        states = gpu - layer
        if frozen:
            _, gpu, layer = zero3(
                frozen, largest, per_node, nodes, cpu_offload=True, cpu_offload_params=False
            )
            states += gpu - layer
        return DeepSpeedEstimate(states=int(states), largest_layer=int(layer))
    raise InputError("DeepSpeed's estimators cover --sharding zero2 and zero3")


DEEPSPEED_TRACE_MAX_PARAMS = 50_000_000
"""A DeepSpeed trace allocates real CPU tensors: models above this size are refused."""


class DeepSpeedTrace(BaseModel):
    """Rank 0's bytes of a real DeepSpeed ZeRO run on `world_size` ranks (CPU tensors, a fake
    process group): the model states after the step, and their high point during the step."""

    world_size: int
    stage: int
    resident: int = Field(description="model states live between steps")
    step_high: int = Field(description="the most model-state bytes live during the step")
    seconds: float = 0.0
    notes: list[str] = Field(default_factory=list)


def trace_deepspeed(spec: ModelSpec, request: PlanRequest, steps: int = 2) -> DeepSpeedTrace:
    """Run `request`'s DeepSpeed ZeRO stage for real on a small model (`spec`, at most
    DEEPSPEED_TRACE_MAX_PARAMS) in this process as rank 0 of a fake process group of
    `request.world_size` ranks, and count its tensors with torch's MemTracker. DeepSpeed's
    config is the plan's (`planner.deepspeed.deepspeed_config`) with the reduction and
    prefetch buckets shrunk to 10k elements and no persistent (unpartitioned) small
    parameters, so that the model states are what is counted; the optimizer is torch's fused
    AdamW (no step temporaries, as DeepSpeed's FusedAdam on a GPU)."""
    import os

    from planner.deepspeed import deepspeed_config, zero_stage

    stage = zero_stage(request)
    if stage is None or request.offload is not Offload.none:
        raise InputError("the DeepSpeed trace covers --sharding zero1/zero2/zero3 without offload")
    if parameters.count_params(spec) > DEEPSPEED_TRACE_MAX_PARAMS:
        raise InputError("the DeepSpeed trace allocates real tensors: use a small model")
    start = time.perf_counter()
    config = deepspeed_config(request)
    zero = config["zero_optimization"]
    small = 10_000
    for key in ("reduce_bucket_size", "allgather_bucket_size", "stage3_prefetch_bucket_size"):
        if key in zero:
            zero[key] = small
    if stage == 3:
        zero |= {"stage3_param_persistence_threshold": 0, "stage3_max_live_parameters": small}
    config |= {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1}
    config |= {"train_batch_size": request.world_size, "gradient_clipping": 1.0}
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _fake_process_group(request.world_size), _rank_zero_environment(request):
            resident, high = _run_deepspeed(spec, config, steps)
    return DeepSpeedTrace(
        world_size=request.world_size,
        stage=stage,
        resident=resident,
        step_high=high,
        seconds=round(time.perf_counter() - start, 3),
        notes=[
            "DeepSpeed run for real on CPU tensors, rank 0 of a fake process group",
            "buckets shrunk to 10k elements (counted apart: planner.deepspeed.bucket_bytes)",
        ],
    )


@contextmanager
def _rank_zero_environment(request: PlanRequest) -> Iterator[None]:
    """The launcher's variables DeepSpeed reads, for rank 0 of the fake group."""
    import os

    values = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": str(request.world_size)}
    values |= {"LOCAL_WORLD_SIZE": str(request.num_gpus)}
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _run_deepspeed(spec: ModelSpec, config: dict[str, Any], steps: int) -> tuple[int, int]:
    """(model-state bytes after the last step, their high point during it)."""
    import importlib

    import deepspeed
    import torch
    from torch.distributed._tools.mem_tracker import _TOTAL_KEY, MemTracker, _MemRefType
    from transformers import AutoModelForCausalLM

    # The fake group moves no data: DeepSpeed's shared-memory all-reduce kernel (a C++ build
    # on CPU) is not needed.
    # (By its module: `deepspeed.comm.torch` as an attribute is the torch package itself.)
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
    _forget_process_groups()

    class Tracker(MemTracker):
        in_step = False
        step_high = 0

        def _update_peak_stats(self, peak_state: Any) -> None:
            super()._update_peak_stats(peak_state)
            if self.in_step:
                self.step_high = max(self.step_high, self.states())

        def states(self) -> int:
            snap = next(iter(self._curr_mem_snap.values()), {})
            skip = snap.get(_MemRefType.BUFFER, 0) + snap.get(_MemRefType.OTH, 0)
            return int(snap.get(_TOTAL_KEY, 0) - skip)

    config_object = _config(spec, spec.num_layers)
    model = AutoModelForCausalLM.from_config(config_object, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    ids = torch.randint(0, config_object.vocab_size, (1, TRACE_TOKENS))
    tracker = Tracker()
    # ZeRO-3 swaps torch.nn.functional.linear for its own, "until manually reset"
    # (deepspeed/runtime/zero/partition_parameters.py): put torch's back, or every later trace
    # in this process saves what DeepSpeed's linear saves.
    linear = torch.nn.functional.linear
    try:
        with tracker:
            engine, *_ = deepspeed.initialize(
                model=model, optimizer=optimizer, config=config, dist_init_required=False
            )
            for _ in range(steps):
                loss = engine(input_ids=ids, labels=ids).loss
                engine.backward(loss)
                del loss
                tracker.in_step = True
                tracker.step_high = 0
                engine.step()
                tracker.in_step = False
                tracker.reset_mod_stats()
            resident = tracker.states()
    finally:
        torch.nn.functional.linear = linear
    return resident, tracker.step_high


def _forget_process_groups() -> None:
    """Drop the process groups DeepSpeed cached from an earlier trace (each trace sets up a
    fake group of its own size)."""
    import deepspeed.comm.comm as ds_comm
    import deepspeed.utils.groups as ds_groups

    ds_comm.cdb = None
    for name in dir(ds_groups):
        if name.startswith("_") and name.endswith("_GROUP") and name.isupper():
            setattr(ds_groups, name, None)

"""What every loss step uses: the forwards as TRL calls them, and TRL 1.12's helpers on the
logits, with the buffers CUDA allocates inside an op made visible."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from planner.trace.build import Setup, enable_checkpointing

EMULATE_CUDA_WORKSPACES = True
"""Allocate, for their duration, the buffers CUDA kernels allocate inside a single op that fake
tensors cannot see (logsumexp's ``self - max``). Off only to compare with a CPU run."""


@contextmanager
def checkpointing_disabled(model: Any) -> Iterator[None]:
    """TRL's ``disable_gradient_checkpointing`` around reference forwards."""
    was_enabled = bool(getattr(model, "is_gradient_checkpointing", False))
    if was_enabled:
        model.gradient_checkpointing_disable()
    try:
        yield
    finally:
        if was_enabled:
            enable_checkpointing(model)


class Step:
    """What a method's step function uses: the models' forwards as TRL calls them, and phases."""

    def __init__(self, setup: Setup, phase: Callable[[str], Any]) -> None:
        self.setup = setup
        self.request = setup.request
        self.inputs = setup.inputs
        self.phase = phase
        self.b = setup.request.batch_size
        self.aux_losses: list[Any] = []
        """The router's auxiliary losses of the policy forwards (MoE models, when TRL adds them)."""

    def autocast(self) -> Any:
        """accelerate's autocast around a prepared model's forward (fp16 only: see build)."""
        import torch

        if self.setup.autocast_dtype is None:
            return nullcontext()
        return torch.autocast("cpu", dtype=self.setup.autocast_dtype)

    def _call(self, model: Any, aux: bool = False, **kwargs: Any) -> Any:
        """A forward through accelerate's wrapper: autocast, then outputs converted to fp32;
        `aux` asks a MoE model for its router auxiliary loss, as TRL does (kept in
        `aux_losses`)."""
        import torch

        if aux:
            kwargs["output_router_logits"] = True
        with self.autocast():
            out = model(use_cache=False, **kwargs)
        if aux and out.get("aux_loss") is not None:
            self.aux_losses.append(out["aux_loss"])
        loss = out.get("loss")
        logits = out["logits"]
        del out
        if self.setup.fp32_outputs:
            if loss is not None and loss.dtype in (torch.float16, torch.bfloat16):
                loss = loss.float()
            if logits.dtype in (torch.float16, torch.bfloat16):
                logits = logits.float()
        return loss, logits

    def policy(self, **kwargs: Any) -> Any:
        return self._call(self.setup.model, aux=self.setup.router_aux_loss, **kwargs)

    def reference(self, **kwargs: Any) -> Any:
        """A reference forward as TRL does it: under no_grad, checkpointing disabled on the
        policy, through the separate reference model or the policy with adapters disabled."""
        import torch

        model = self.setup.model
        with torch.no_grad(), checkpointing_disabled(model):
            if self.setup.ref_model is not None:
                return self._call(self.setup.ref_model, **kwargs)
            with model.disable_adapter():
                return self._call(model, **kwargs)


def selective_log_softmax(logits: Any, index: Any) -> Any:
    """trl.trainer.utils.selective_log_softmax (TRL 1.12), with logsumexp's hidden buffer.

    fp32 logits: gather, then logsumexp row by row. On CUDA, each logsumexp allocates
    ``self - max`` (one row of logits) inside the kernel, which fake tensors cannot see: it is
    allocated here for the duration of the row. 16-bit logits: log_softmax row by row.
    """
    import torch
    import torch.nn.functional as F

    squeeze = index.ndim == logits.ndim - 1
    if squeeze:
        index = index.unsqueeze(-1)
    if logits.dtype in (torch.float32, torch.float64):
        selected_logits = torch.gather(logits, dim=-1, index=index)
        rows = []
        for lg in logits:
            workspace = (
                torch.empty_like(lg, requires_grad=False) if EMULATE_CUDA_WORKSPACES else None
            )
            rows.append(torch.logsumexp(lg, dim=-1))
            del workspace
        logsumexp_values = torch.stack(rows)
        per_token_logps = selected_logits - logsumexp_values.unsqueeze(-1)
    else:
        per_token = []
        for row_logits, row_labels in zip(logits, index, strict=True):
            row_logps = F.log_softmax(row_logits, dim=-1)
            per_token.append(row_logps.gather(dim=-1, index=row_labels))
        per_token_logps = torch.stack(per_token)
    if squeeze:
        per_token_logps = per_token_logps.squeeze(-1)
    return per_token_logps


def entropy_from_logits(logits: Any, chunk_size: int = 128) -> Any:
    """trl.trainer.utils.entropy_from_logits (TRL 1.12): the reshape copies a sliced batch."""
    import torch
    import torch.nn.functional as F

    original_shape = logits.shape[:-1]
    flat_logits = logits.reshape(-1, logits.shape[-1])
    entropies = []
    for chunk in flat_logits.split(chunk_size, dim=0):
        logps = F.log_softmax(chunk, dim=-1)
        entropies.append(-(torch.exp(logps) * logps).sum(-1))
    return torch.cat(entropies, dim=0).reshape(original_shape)


def masked_rows(step: Step, logits: Any) -> Any:
    """``logits[completion_mask.bool()]`` for a slice of the batch: a (tokens x vocab) copy.

    Boolean indexing has a data-dependent size (nonzero), which fake tensors refuse; integer
    indices of the completion positions give the same copy.
    """
    rows = logits.shape[0]
    if rows == 0:
        return logits[:, 0]
    per_row = len(step.inputs["completion_rows"]) // step.b
    n = rows * per_row
    return logits[step.inputs["completion_rows"][:n], step.inputs["completion_cols"][:n]]

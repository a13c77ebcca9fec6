"""``MemTracker`` adjusted for a whole training step on fake tensors, with CUDA's own
allocations emulated where they differ from CPU's."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from planner.memory import TRL_ROUTER_AUX_LOSS_COEF
from planner.trace.build import Setup
from planner.trace.steps.common import Step


def _tracker_class() -> type:
    """MemTracker with the adjustments a whole training step on fake tensors needs."""
    from torch.distributed._tools.mem_tracker import _TOTAL_KEY, MemTracker

    class _Handle:
        def remove(self) -> None:
            pass

    class StepTracker(MemTracker):
        def __init__(self) -> None:
            super().__init__()
            self.phase_name = "setup"
            self.peak_phase = "setup"
            self.phase_peaks: dict[str, int] = {}
            self.max_by_type: dict[Any, int] = {}

        @contextmanager
        def phase(self, name: str) -> Iterator[None]:
            previous, self.phase_name = self.phase_name, name
            self._note()
            try:
                yield
            finally:
                self._note()
                self.phase_name = previous

        def _note(self) -> None:
            for dev, snap in self._curr_mem_snap.items():
                total = snap[_TOTAL_KEY]
                if total > self._peak_mem.get(dev, 0):
                    self._peak_mem[dev] = total
                    self._peak_mem_snap[dev] = dict(snap)
                    self.peak_phase = self.phase_name
                if total > self.phase_peaks.get(self.phase_name, 0):
                    self.phase_peaks[self.phase_name] = total
                for key, value in snap.items():
                    if value > self.max_by_type.get(key, 0):
                        self.max_by_type[key] = value

        # Stock MemTracker walks every tracked module after every op to keep per-module peaks
        # (quadratic in depth: 161 s for a 7B DPO step); only the global peak is needed, so
        # update it from the current snapshot alone (same totals; that step now takes ~10 s).
        def _update_peak_stats(self, peak_state: Any) -> None:
            self._note()

        # Stock MemTracker registers a grad hook on every parameter of a module it meets and
        # fails on frozen ones (reference model, LoRA base): mark those as already hooked.
        def _track_module_params_and_buffers(
            self, module: Any, install_grad_hooks: bool = True
        ) -> tuple[int, int]:
            frozen = [
                p
                for p in module.parameters()
                if not p.requires_grad and self._param_to_grad_hook_handles.get(p) is None
            ]
            for p in frozen:
                self._param_to_grad_hook_handles[p] = (_Handle(), _Handle())
            try:
                return super()._track_module_params_and_buffers(module, install_grad_hooks)
            finally:
                for p in frozen:
                    del self._param_to_grad_hook_handles[p]

        # Stock MemTracker refuses a second forward of a root module (it takes it for the next
        # iteration); a step runs the same model several times (KTO's KL batch, LoRA's
        # reference with adapters disabled). Start that module's stats afresh instead.
        def _pre_fw_hook(self, module: Any, inputs: Any) -> None:
            if not self._mod_tracker.is_bw and module in self.memory_tracking:
                del self.memory_tracking[module]
            super()._pre_fw_hook(module, inputs)

        def hook_trainable(self, model: Any) -> None:
            """Install the gradient hooks on the trainable parameters now, before a reference
            pass with adapters disabled could see them frozen (and count their grads as temps)."""
            self._track_module_params_and_buffers(model, install_grad_hooks=True)

    return StepTracker


def step_tracker() -> Any:
    """A fresh tracker of the traced step's kind; it counts real tensors too (a CPU run's
    measured step, `runners.train`) exactly as it counts fake ones."""
    return _tracker_class()()


@contextmanager
def _cuda_dropout() -> Iterator[None]:
    """``F.dropout`` in training as CUDA runs it: the fused ``native_dropout``, which keeps a
    bool mask for backward (CPU's fallback keeps a noise tensor in the input's dtype)."""
    import torch
    import torch.nn.functional as F

    original = F.dropout

    def dropout(input: Any, p: float = 0.5, training: bool = True, inplace: bool = False) -> Any:
        if training and 0 < p < 1 and not inplace and input.numel() > 0:
            return torch.native_dropout(input, p, training)[0]
        return original(input, p, training, inplace)

    F.dropout = dropout
    try:
        yield
    finally:
        F.dropout = original


def run_step(setup: Setup, step: Callable[[Step], Any]) -> Any:
    """Run `step`, then backward and the optimizer step, under a fresh tracker (returned)."""
    import torch

    tracker = _tracker_class()()
    batch = [v for v in setup.inputs.values() if isinstance(v, torch.Tensor)]
    external = [setup.model, setup.optimizer, *batch]
    if setup.ref_model is not None:
        external.append(setup.ref_model)
    tracker.track_external(*external)
    with tracker, _cuda_dropout():
        tracker.hook_trainable(setup.model)
        traced = Step(setup, tracker.phase)
        loss = step(traced)
        if traced.aux_losses:  # TRL: loss + router_aux_loss_coef × the policy's aux loss
            loss = loss + TRL_ROUTER_AUX_LOSS_COEF * sum(traced.aux_losses)
            traced.aux_losses.clear()
        with tracker.phase("backward"):
            loss.backward()
            del loss
        with tracker.phase("optimizer_step"):
            # Trainer: clip_grad_norm_(max_grad_norm=1.0), optimizer.step(), model.zero_grad().
            torch.nn.utils.clip_grad_norm_(setup.trainable, 1.0)
            setup.optimizer.step()
            setup.model.zero_grad(set_to_none=True)
    return tracker

"""The traced memory estimate (`advisor plan --trace`): one training step on fake tensors.

A real Hugging Face architecture is built from its config inside PyTorch's ``FakeTensorMode``
(CPU, nothing allocated) and one training step runs the way TRL 1.12 runs it: the method's
forwards (policy, reference, KTO's KL batch), its logits -> loss chain including the no-grad
metrics that touch the full logits, backward, gradient clipping, the optimizer step and
``zero_grad``. ``MemTracker`` counts every tensor's bytes by category as the step goes; the
result is the tensor-level peak, where it falls and what is live there. This is the ground
truth that the analytic model (``planner.memory``) is checked against. CUDA-only terms (context,
allocator rounding and slack, cuBLAS/NCCL workspaces) are not tensors and stay out of it.

Importing this package imports neither torch nor transformers nor peft: they are imported inside
the functions that need them, so ``advisor plan`` without ``--trace`` stays fast.

What a method runs (rows per sample, whether a reference is loaded, dropout, the SFT loss chunk) come
from the method's recipe (``planner.methods.loop``); what an architecture is, from its record in
``planner.architectures``. The package:

- ``result``: ``TraceResult``, ``check_traceable`` and ``trace_step``;
- ``build``: the model, LoRA, optimizer and batch on fake tensors;
- ``tracker``: the ``MemTracker`` subclass, with CUDA's fused dropout emulated;
- ``steps``: the loss steps, one module per method or family (``sft``, ``dpo_kto``,
  ``orpo_simpo``, ``reward``), and ``steps.common``, the forwards and TRL's logit helpers.

What a traced step assumes (each also appears in ``TraceResult.notes``):

- The model is loaded as the runners load it, in the dtype the plan states
  (``planner.precision``): bf16-mixed full tuning loads fp32 weights and runs its forwards under
  bf16 autocast (fp32 gradients and AdamW states); bf16-true loads bf16 weights (bf16 grads and
  states); fp16-mixed is fp32 weights under fp16 autocast; LoRA's frozen base is in the compute
  dtype and its adapters in fp32, as peft makes them.
- The runners set ``bf16=True`` (or ``fp16=True``), so accelerate wraps every prepared model's
  forward in autocast and converts its outputs to fp32: the logits the loss sees are an fp32
  copy. SFT uses TRL 1.12's default ``loss_type="chunked_nll"`` and never holds full logits.
- The optimizer and LoRA are what the runners configure (``adamw_torch_fused``,
  ``planner.memory.ADAMW_OPTIM``: torch's fused AdamW, one kernel per step with no temporaries;
  LoRA alpha 2r, dropout 0.05, which TRL disables in every trainer but SFT's, on the targets
  ``planner.parameters`` names).
- Steady state: optimizer states exist before the step; with ``grad_accum > 1`` the traced
  micro-batch is the last of its window, so the gradients of the earlier ones are live from the
  start; ``zero_grad(set_to_none=True)`` ends the step.
- Batches are full length with the prompt/completion split of the request; the attention mask
  is materialised as for a padded batch (fake tensors cannot tell it is all ones; real batches
  are padded), so sdpa keeps a B x 1 x S x S mask per layer for backward. KTO batches are half
  desirable, half undesirable.
- Mixture-of-experts layers run transformers 5.24's default ``grouped_mm`` experts (static
  shapes: every token's k (token, expert) pairs sorted by expert, so fake tensors can run them;
  bf16 weights only, as torch's grouped_mm takes no other dtype on a GPU either), and the
  policy's forwards return the router's auxiliary loss where TRL 1.12 adds it
  (``planner.memory.ROUTER_AUX_LOSS_METHODS``, × its ``router_aux_loss_coef``).
- Where CUDA differs from CPU in what it allocates, the CUDA behaviour is emulated: dropout
  keeps a bool mask (fused kernel); logsumexp allocates ``self - max`` inside the op.

Checked against TRL itself: tests/test_trace.py runs TRL 1.12's own loss code on real CPU
tensors through the same tracker and requires the fake trace to match it byte for byte.
"""

from planner.trace.result import (
    CATEGORIES,
    PHASES,
    TRACED_METHODS,
    TraceResult,
    check_traceable,
    trace_step,
)
from planner.trace.steps import SFT_CHUNK_SIZE

__all__ = [
    "CATEGORIES",
    "PHASES",
    "SFT_CHUNK_SIZE",
    "TRACED_METHODS",
    "TraceResult",
    "check_traceable",
    "trace_step",
]

"""SFT's traced loss: TRL 1.12's chunked cross-entropy."""

from __future__ import annotations

from typing import Any

from planner.memory import SFT_LOSS_CHUNK_TOKENS, TRL_ROUTER_AUX_LOSS_COEF
from planner.trace.steps.common import Step

SFT_CHUNK_SIZE = SFT_LOSS_CHUNK_TOKENS
"""Tokens per chunk of TRL 1.12's chunked cross-entropy (``_CHUNKED_LM_HEAD_CHUNK_SIZE``), as
the analytic model counts it (planner.memory)."""


def sft_step(step: Step) -> Any:
    """SFTTrainer with TRL 1.12's default ``loss_type="chunked_nll"``: the patched forward runs
    the decoder only, then the cross-entropy in checkpointed chunks of ``SFT_CHUNK_SIZE`` valid tokens (each
    chunk's fp32 logits, and an fp32 copy of the lm_head weight, live only within the chunk).
    The full logits are never materialised; entropy and accuracy come out of the chunks."""
    import torch
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    inputs, setup = step.inputs, step.setup
    model = setup.model
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = causal_lm.base_model
    lm_head = causal_lm.get_output_embeddings()
    text_config = causal_lm.config.get_text_config()
    softcap = getattr(text_config, "final_logit_softcapping", None)
    logit_scale = getattr(text_config, "logit_scale", None)
    if logit_scale is None:
        logit_scale = getattr(text_config, "output_multiplier", None)
    logit_scale = 1.0 if logit_scale is None else logit_scale

    def chunk_loss(h: Any, w: Any, b: Any, lbl: Any) -> Any:  # trl.trainer.sft_trainer._chunk
        logits = h.float() @ w.float().t()
        if b is not None:
            logits = logits + b.float()
        if logit_scale != 1.0:
            logits = logits * logit_scale
        if softcap is not None:
            logits = softcap * F.tanh(logits / softcap)
        log_p = F.log_softmax(logits, dim=-1)
        loss = F.nll_loss(log_p, lbl, ignore_index=-100, reduction="sum")
        valid = lbl != -100
        correct = ((logits.argmax(dim=-1) == lbl) & valid).sum().float()
        entropy = (-(log_p.exp() * log_p).sum(dim=-1) * valid).sum()
        return loss, correct, entropy

    with step.autocast():
        with step.phase("forward"):
            aux = {"output_router_logits": True} if setup.router_aux_loss else {}
            outputs = backbone(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                use_cache=False,
                **aux,
            )
            hidden_states = outputs.last_hidden_state
            router_logits = outputs.router_logits if aux else None
            del outputs
        with step.phase("loss"):
            # trl.trainer.sft_trainer._chunked_cross_entropy_loss, with the chunk count (read
            # from the device there) computed here from the known number of valid labels.
            labels_in = inputs["labels"]
            hidden = hidden_states[..., :-1, :].reshape(-1, hidden_states.size(-1))
            labels = labels_in[..., 1:].reshape(-1)
            valid = labels != -100
            n_valid_tensor = valid.sum()
            order = valid.to(torch.int8).argsort(descending=True, stable=True)
            hidden = hidden[order]
            labels = labels[order]
            n_valid = inputs["n_valid_labels"]
            n_padded = max(1, -(-n_valid // SFT_CHUNK_SIZE)) * SFT_CHUNK_SIZE
            loss = hidden.new_zeros((), dtype=torch.float32)
            correct = hidden.new_zeros((), dtype=torch.float32)
            entropy_sum = hidden.new_zeros((), dtype=torch.float32)
            for start in range(0, n_padded, SFT_CHUNK_SIZE):
                c_loss, c_correct, c_entropy = checkpoint(
                    chunk_loss,
                    hidden[start : start + SFT_CHUNK_SIZE],
                    lm_head.weight,
                    lm_head.bias,
                    labels[start : start + SFT_CHUNK_SIZE],
                    use_reentrant=False,
                )
                loss = loss + c_loss
                correct = correct + c_correct
                entropy_sum = entropy_sum + c_entropy
            loss = loss / n_valid_tensor.clamp(min=1)
            if router_logits is not None:  # TRL's chunked forward adds the MoE aux loss last
                from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

                config = causal_lm.config
                aux_loss = load_balancing_loss_func(
                    router_logits,
                    config.num_local_experts,
                    config.num_experts_per_tok,
                    inputs["attention_mask"],
                )
                loss = loss + TRL_ROUTER_AUX_LOSS_COEF * aux_loss
                del router_logits, aux_loss
            del hidden_states, hidden, labels, correct, entropy_sum
    return loss

"""The training entry script: `accelerate launch -m runners.train RUN_DIR/runspec.json`.

One function per method, each reading top to bottom: config, model, data, trainer, train.
Every trainer log is appended to RUN_DIR/metrics.jsonl; SIGINT/SIGTERM stop after saving a
checkpoint; CUDA out-of-memory is written to RUN_DIR/error.json for the launcher to explain.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import time
from pathlib import Path

from runners.settings import RunSpec

EXIT_OOM = 3
EXIT_STOPPED = 130
CRASH_AFTER_SAVE = "ADVISOR_TEST_CRASH_AFTER_SAVE"
"""Test hook: a process that sees this env var dies hard right after saving that step."""

_stop_requested = False


class StopAfterSave(Exception):
    """Raised once a requested stop's checkpoint is on disk (PPO's loop ignores
    `should_training_stop`, so leaving from on_save works for every trainer)."""


def _request_stop(signum, frame) -> None:
    global _stop_requested
    if _stop_requested:  # a second Ctrl-C: leave now
        raise KeyboardInterrupt
    _stop_requested = True


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def metrics_callback(run_dir: Path):
    """A TrainerCallback that appends every log to metrics.jsonl and stops cleanly on request."""
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self._write_progress(state)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            record = {
                "step": state.global_step,
                "max_steps": state.max_steps,
                "world_size": args.world_size,
                "time": time.time(),
            }
            record.update({k: v for k, v in logs.items() if isinstance(v, (int, float, str))})
            with (run_dir / "metrics.jsonl").open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

        def on_step_end(self, args, state, control, **kwargs):
            self._write_progress(state)
            if _stop_requested:
                control.should_save = True
                control.should_training_stop = True

        def on_save(self, args, state, control, **kwargs):
            crash_at = os.environ.get(CRASH_AFTER_SAVE)
            if crash_at and state.global_step >= int(crash_at):
                os._exit(137)
            if _stop_requested:
                raise StopAfterSave

        def _write_progress(self, state):
            if not state.is_world_process_zero:
                return
            tmp = run_dir / "progress.json.tmp"
            tmp.write_text(json.dumps({"step": state.global_step, "max_steps": state.max_steps}))
            tmp.replace(run_dir / "progress.json")

    return MetricsCallback()


def _class(reference: str):
    module, name = reference.split(":")
    return getattr(importlib.import_module(module), name)


def _dtype(spec: RunSpec, full_precision_master: bool):
    """bf16 weights under bf16; fp32 masters under fp16 full training (AMP needs them); fp32 on CPU."""
    import torch

    if spec.trl_config.get("bf16"):
        return torch.bfloat16
    if spec.trl_config.get("fp16") and not full_precision_master:
        return torch.float16
    return torch.float32


def _model_kwargs(spec: RunSpec) -> dict:
    kwargs = {"dtype": _dtype(spec, full_precision_master=spec.peft is None)}
    if spec.quantization:
        import torch
        from transformers import BitsAndBytesConfig

        quant = dict(spec.quantization)
        for key in ("bnb_4bit_compute_dtype", "bnb_4bit_quant_storage"):
            if key in quant:
                quant[key] = getattr(torch, quant[key])
        kwargs["quantization_config"] = BitsAndBytesConfig(**quant)
    return kwargs


def causal_lm(spec: RunSpec, path: str | None = None):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path or spec.model, **_model_kwargs(spec))


def sequence_scorer(spec: RunSpec, path: str, tokenizer):
    """A one-label sequence classifier (reward or value model) from a saved model folder."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, **_model_kwargs(spec)
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def tokenizer_for(spec: RunSpec, padding_side: str = "right"):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec.model, padding_side=padding_side)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def lora(spec: RunSpec):
    if spec.peft is None:
        return None
    from peft import LoraConfig

    return LoraConfig(**spec.peft)


def dataset_for(spec: RunSpec):
    from runners.data import load_train_split

    return load_train_split(spec.dataset)


def config_for(spec: RunSpec):
    return _class(spec.config_class)(**spec.trl_config)


def fit(trainer, run_dir: Path, resume: bool) -> None:
    """Train, from the last checkpoint when resuming; save the final model."""
    checkpoint = None
    if resume:
        from transformers.trainer_utils import get_last_checkpoint

        checkpoint = get_last_checkpoint(trainer.args.output_dir)
    trainer.train(resume_from_checkpoint=checkpoint)
    if not _stop_requested:
        trainer.save_model(str(run_dir / "final"))


def train_sft(spec: RunSpec, run_dir: Path, resume: bool) -> None:
    from trl import SFTTrainer

    trainer = SFTTrainer(
        model=causal_lm(spec),
        args=config_for(spec),
        train_dataset=dataset_for(spec),
        processing_class=tokenizer_for(spec),
        peft_config=lora(spec),
        callbacks=[metrics_callback(run_dir)],
    )
    fit(trainer, run_dir, resume)


def train_dpo(spec: RunSpec, run_dir: Path, resume: bool) -> None:
    from trl import DPOTrainer

    # With LoRA the reference is the base with the adapter disabled; in full fine-tuning TRL
    # reloads it from the saved model path (config._name_or_path).
    trainer = DPOTrainer(
        model=causal_lm(spec),
        args=config_for(spec),
        train_dataset=dataset_for(spec),
        processing_class=tokenizer_for(spec),
        peft_config=lora(spec),
        callbacks=[metrics_callback(run_dir)],
    )
    fit(trainer, run_dir, resume)


def train_kto(spec: RunSpec, run_dir: Path, resume: bool) -> None:
    from trl import KTOTrainer

    trainer = KTOTrainer(
        model=causal_lm(spec),
        args=config_for(spec),
        train_dataset=dataset_for(spec),
        processing_class=tokenizer_for(spec),
        peft_config=lora(spec),
        callbacks=[metrics_callback(run_dir)],
    )
    fit(trainer, run_dir, resume)


def train_orpo(spec: RunSpec, run_dir: Path, resume: bool) -> None:
    from trl.experimental.orpo import ORPOTrainer

    trainer = ORPOTrainer(
        model=causal_lm(spec),
        args=config_for(spec),
        train_dataset=dataset_for(spec),
        processing_class=tokenizer_for(spec),
        peft_config=lora(spec),
        callbacks=[metrics_callback(run_dir)],
    )
    fit(trainer, run_dir, resume)


def train_simpo(spec: RunSpec, run_dir: Path, resume: bool) -> None:
    from trl.experimental.cpo import CPOTrainer

    # SimPO is CPO with loss_type="simpo" and cpo_alpha=0 (settings put both in the config).
    trainer = CPOTrainer(
        model=causal_lm(spec),
        args=config_for(spec),
        train_dataset=dataset_for(spec),
        processing_class=tokenizer_for(spec),
        peft_config=lora(spec),
        callbacks=[metrics_callback(run_dir)],
    )
    fit(trainer, run_dir, resume)


def train_reward(spec: RunSpec, run_dir: Path, resume: bool) -> None:
    from trl import RewardTrainer

    tokenizer = tokenizer_for(spec)
    trainer = RewardTrainer(
        model=sequence_scorer(spec, spec.model, tokenizer),
        args=config_for(spec),
        train_dataset=dataset_for(spec),
        processing_class=tokenizer,
        peft_config=lora(spec),
        callbacks=[metrics_callback(run_dir)],
    )
    fit(trainer, run_dir, resume)


def reward_functions(spec: RunSpec) -> list:
    """GRPO/RLOO rewards: built-in functions, `module:function`s, or reward-model paths."""
    from runners.rewards import BUILTIN

    functions = []
    for reward in spec.rewards:
        if reward.kind == "builtin":
            functions.append(BUILTIN[reward.value])
        elif reward.kind == "function":
            sys.path.insert(0, os.getcwd())
            functions.append(_class(reward.value))
        else:
            functions.append(reward.value)  # TRL loads a 1-label sequence classifier from it
    return functions


def train_grpo(spec: RunSpec, run_dir: Path, resume: bool) -> None:
    from trl import GRPOTrainer

    trainer = GRPOTrainer(
        model=causal_lm(spec),
        reward_funcs=reward_functions(spec),
        args=config_for(spec),
        train_dataset=dataset_for(spec),
        processing_class=tokenizer_for(spec, padding_side="left"),
        peft_config=lora(spec),
        callbacks=[metrics_callback(run_dir)],
    )
    fit(trainer, run_dir, resume)


def train_rloo(spec: RunSpec, run_dir: Path, resume: bool) -> None:
    from trl import RLOOTrainer

    trainer = RLOOTrainer(
        model=causal_lm(spec),
        reward_funcs=reward_functions(spec),
        args=config_for(spec),
        train_dataset=dataset_for(spec),
        processing_class=tokenizer_for(spec, padding_side="left"),
        peft_config=lora(spec),
        callbacks=[metrics_callback(run_dir)],
    )
    fit(trainer, run_dir, resume)


def train_ppo(spec: RunSpec, run_dir: Path, resume: bool) -> None:
    from trl.experimental.ppo import PPOTrainer

    # TRL's PPO takes pre-tokenized, left-padded prompts (FACTS "TRL").
    tokenizer = tokenizer_for(spec, padding_side="left")
    dataset = dataset_for(spec)

    def tokenize(row):
        prompt = row["prompt"]
        if isinstance(prompt, list):
            ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True)
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
        else:
            ids = tokenizer(prompt)["input_ids"]
        return {"input_ids": list(ids)}

    dataset = dataset.map(tokenize, remove_columns=dataset.column_names)
    peft_config = lora(spec)
    trainer = PPOTrainer(
        args=config_for(spec),
        processing_class=tokenizer,
        model=causal_lm(spec),
        ref_model=None if peft_config else causal_lm(spec),
        reward_model=sequence_scorer(spec, spec.reward_model or spec.model, tokenizer),
        value_model=sequence_scorer(spec, spec.reward_model or spec.model, tokenizer),
        train_dataset=dataset,
        peft_config=peft_config,
        callbacks=[metrics_callback(run_dir)],
    )
    if resume:
        print("advisor: TRL's PPOTrainer cannot resume; training from the start", flush=True)
    trainer.train()
    if not _stop_requested:
        trainer.save_model(str(run_dir / "final"))


METHODS = {
    "sft": train_sft,
    "dpo": train_dpo,
    "kto": train_kto,
    "orpo": train_orpo,
    "simpo": train_simpo,
    "reward": train_reward,
    "grpo": train_grpo,
    "rloo": train_rloo,
    "ppo": train_ppo,
}


def _write_error(run_dir: Path, kind: str, message: str) -> None:
    if _is_main_process():
        (run_dir / "error.json").write_text(json.dumps({"kind": kind, "message": message}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runners.train")
    parser.add_argument("runspec", help="RUN_DIR/runspec.json")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    args = parser.parse_args(argv)
    path = Path(args.runspec)
    run_dir = path.parent
    spec = RunSpec.model_validate_json(path.read_text(encoding="utf-8"))
    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)
    import torch

    try:
        METHODS[spec.method.value](spec, run_dir, args.resume)
    except torch.OutOfMemoryError as error:
        _write_error(run_dir, "oom", str(error).splitlines()[0])
        return EXIT_OOM
    except (KeyboardInterrupt, StopAfterSave):
        return EXIT_STOPPED
    finally:
        _close_process_group()
    return EXIT_STOPPED if _stop_requested else 0


def _close_process_group() -> None:
    """Tear down the process group before the interpreter exits: gloo's worker threads abort
    the process ("terminate called without an active exception") when it is left alive."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())

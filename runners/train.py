"""The training entry script: `accelerate launch -m runners.train RUN_DIR/runspec.json`.

One function per method, each reading top to bottom: config, model, data, trainer, train.
Every trainer log is appended to RUN_DIR/metrics.jsonl (one record per step, also after a
resume). The first SIGINT or SIGTERM — Ctrl-C, the wizard's Stop, a launcher forwarding it, a
scheduler's pre-emption warning — or the death of the `advisor launch` that started it stops
every rank at the same step boundary after a checkpoint is saved (exit 130, resumable); only a
signal after a grace period leaves at once. The live trainer holds RUN_DIR/run.lock.
Checkpoints are written whole or not at all; CUDA out-of-memory, a full disk and an unreadable
checkpoint are written to RUN_DIR/error.json for the launcher to say in one line. A loss or
gradient norm that turns NaN or infinite ends the run at once, failed, naming the step.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from planner.recipes import recipe
from planner.specs import Method
from runners.checkpoints import (
    DiskFull,
    install_atomic_checkpoints,
    is_disk_full,
    last_good_checkpoint,
    step_of,
)
from runners.lifecycle import (
    EXIT_BAD_CHECKPOINT,
    EXIT_DISK_FULL,
    EXIT_LOCKED,
    EXIT_NON_FINITE,
    EXIT_OOM,
    EXIT_STOPPED,
    LAUNCHER_PID,
    STOP_GRACE_SECONDS,
    RunLock,
    RunLocked,
    checkpoints_dir,
    read_progress,
    trained_before,
    trim_metrics,
    write_error,
    write_progress,
)
from runners.settings import RunSpec

CRASH_AFTER_SAVE = "ADVISOR_TEST_CRASH_AFTER_SAVE"
"""Test hook: a process that sees this env var dies hard right after saving that step."""


class StopRequest:
    """Whether (and why) this process was asked to stop. The first SIGINT/SIGTERM asks; more
    within STOP_GRACE_SECONDS are the same request forwarded by a launcher; one after that
    leaves at once (KeyboardInterrupt), without a checkpoint."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.why = ""

    @property
    def requested(self) -> bool:
        return self.since is not None

    def request(self, why: str) -> None:
        if self.since is None:
            self.since, self.why = time.monotonic(), why

    def on_signal(self, signum, frame) -> None:
        if self.since is not None and time.monotonic() - self.since >= STOP_GRACE_SECONDS:
            raise KeyboardInterrupt
        self.request(signal.Signals(signum).name)


STOP = StopRequest()


class StopAfterSave(Exception):
    """Raised once a requested stop's checkpoint is on disk (PPO's loop ignores
    `should_training_stop`, so leaving from on_save works for every trainer)."""


class BadCheckpoint(RuntimeError):
    """The checkpoint a resume started from could not be loaded."""


class NonFiniteLoss(RuntimeError):
    """A logged loss or gradient norm was NaN or infinite; the message names the step and the
    likely cause. Raised rather than `should_training_stop`: PPO's loop ignores that, and a run
    that trained on NaN must not end by saving a final model."""


WATCHED_METRICS = ("loss", "grad_norm")
"""Logged values that stop the run when they are not finite (PPO's `loss/...` ones too). The
gradient norm is what shows a NaN step by default: the Trainer's `logging_nan_inf_filter` logs
such a step's loss as the mean of the steps before it."""


def nan_cause(method: Method | None) -> str:
    """The likely cause of a non-finite loss, for the method's kind of loop."""
    if method is not None and recipe(method).generates:
        return "usually a learning rate too high, or a reward that returned NaN or infinity"
    return (
        "usually rows with no completion tokens left after truncation (run `advisor check-data` "
        "on the dataset), or a learning rate too high"
    )


def non_finite(logs: dict) -> str | None:
    """`the loss is NaN` for the first watched value in a trainer log that is not finite."""
    for key, value in logs.items():
        if key not in WATCHED_METRICS and not key.startswith("loss/"):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            name = {"loss": "the loss", "grad_norm": "the gradient norm"}.get(key, key)
            return f"{name} is {'NaN' if math.isnan(value) else 'infinite'}"
    return None


def strict_json(record: dict) -> str:
    """A metrics.jsonl line: non-finite floats become null (JSON has no NaN or Infinity)."""
    finite = {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()
    }
    return json.dumps(finite, allow_nan=False)


LARGE_DATASET_ROWS = 10_000
"""Above this many rows the trainer's tokenizing, done in its constructor before step 1, takes
long enough (minutes for a few hundred thousand rows) that the run says why nothing moves."""


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def watch_launchers(stop: StopRequest, interval: float = 1.0) -> threading.Thread:
    """A daemon thread that asks for a stop when the process that launched this one dies: the
    direct parent (accelerate's or torchrun's launcher) or the `advisor launch` named in
    $ADVISOR_LAUNCHER_PID. No orphaned trainer keeps writing into a run folder."""
    import psutil

    parent = os.getppid()
    launcher = None
    pid = os.environ.get(LAUNCHER_PID, "")
    if pid.isdigit():
        try:
            launcher = psutil.Process(int(pid))
        except psutil.Error:
            stop.request("advisor launch is gone")

    def watch() -> None:
        while not stop.requested:
            if os.getppid() != parent:
                stop.request("its launcher is gone")
            elif launcher is not None and not _alive(launcher):
                stop.request("advisor launch is gone")
            time.sleep(interval)

    thread = threading.Thread(target=watch, name="watch-launchers", daemon=True)
    thread.start()
    return thread


def _alive(process) -> bool:
    """Running, and still the same process (pid and start time); a zombie has died."""
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _all_ranks_agree(flag: bool, device) -> bool:
    """True on every rank when it is True on any: ranks stop at the same step."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    import torch

    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def metrics_callback(run_dir: Path, stop: StopRequest = STOP, method: Method | None = None):
    """A TrainerCallback that appends every log to metrics.jsonl, keeps progress.json current,
    stops every rank cleanly on request, and fails the run at the first non-finite loss or
    gradient norm (NonFiniteLoss)."""
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        steps_done = 0
        stopping = False

        def on_train_begin(self, args, state, control, **kwargs):
            self._write_progress(state, "running")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                self._append(args, state, logs)
            # Every rank logs the same gathered values; they agree so that all stop together.
            problem = non_finite(logs or {})
            if _all_ranks_agree(problem is not None, args.device):
                problem = problem or "a logged value is not finite on another rank"
                control.should_training_stop = True
                self._write_progress(state, "failed")
                raise NonFiniteLoss(
                    f"stopped at step {state.global_step}: {problem} — {nan_cause(method)}"
                )

        def _append(self, args, state, logs) -> None:
            record = {
                "step": state.global_step,
                "max_steps": state.max_steps,
                "world_size": args.world_size,
                "time": time.time(),
            }
            record.update({k: v for k, v in logs.items() if isinstance(v, (int, float, str))})
            try:
                with (run_dir / "metrics.jsonl").open("a", encoding="utf-8") as handle:
                    handle.write(strict_json(record) + "\n")
            except OSError as error:  # a full disk is said where the checkpoint fails
                print(f"advisor: cannot write metrics.jsonl: {error.strerror}", file=sys.stderr)

        def on_step_end(self, args, state, control, **kwargs):
            self.steps_done += 1
            self._write_progress(state, "running")
            if _all_ranks_agree(stop.requested, args.device):
                self.stopping = True
                control.should_save = True
                control.should_training_stop = True

        def on_save(self, args, state, control, **kwargs):
            crash_at = os.environ.get(CRASH_AFTER_SAVE)
            if crash_at and state.global_step >= int(crash_at):
                os._exit(137)
            if self.stopping:
                checkpoint = f"checkpoint-{state.global_step}"
                self._write_progress(state, "stopped", checkpoint=checkpoint)
                if state.is_world_process_zero:  # in train.log: what stopped it
                    print(f"advisor: stopped after {checkpoint} ({stop.why})", file=sys.stderr)
                raise StopAfterSave

        def _write_progress(self, state, phase: str, **extra):
            if not state.is_world_process_zero:
                return
            with contextlib.suppress(OSError):  # progress only feeds the live view
                write_progress(
                    run_dir, step=state.global_step, max_steps=state.max_steps, state=phase, **extra
                )

    return MetricsCallback()


def _on_cuda(args) -> bool:
    import torch

    return torch.cuda.is_available() and getattr(args.device, "type", None) == "cuda"


def measured_step(max_steps: int) -> int:
    """The optimizer step whose tensors a CPU run counts: the second (the optimizer's states
    exist by then, as in the plan's steady state), or the first of a one-step run."""
    return min(2, max(max_steps, 1))


def memory_callback(run_dir: Path, measure_tensors: bool = False):
    """A TrainerCallback that writes this rank's memory peaks to RUN_DIR/memory/rank{N}.json
    (`runners.rank_memory`). On CUDA: the allocator's peaks since the training began (the peaks
    are reset then, so that loading the model does not hide the step's), at every save and at
    the end. On CPU, with `measure_tensors`: the tensors live at the peak of one whole optimizer
    step (`measured_step`), counted as they come and go by the plan trace's tracker."""
    from transformers import TrainerCallback

    from runners.rank_memory import RankMemory, write_rank_memory

    class MemoryCallback(TrainerCallback):
        def __init__(self) -> None:
            self.trainer = None  # set by Run.attach: the reference model, the step's inputs
            self.tracker = None
            self.measured: RankMemory | None = None
            self.batch_shapes: dict[str, list[int]] = {}
            self._training_step = None

        def on_train_begin(self, args, state, control, **kwargs):
            if _on_cuda(args):
                import torch

                torch.cuda.reset_peak_memory_stats(args.device)

        def on_save(self, args, state, control, **kwargs):
            self._write_cuda(args)

        def on_train_end(self, args, state, control, **kwargs):
            self._write_cuda(args)

        def _write_cuda(self, args) -> None:
            if not _on_cuda(args):
                return
            import torch

            write_rank_memory(
                run_dir,
                RankMemory(
                    rank=args.process_index,
                    device="cuda",
                    allocated_peak_bytes=torch.cuda.max_memory_allocated(args.device),
                    reserved_peak_bytes=torch.cuda.max_memory_reserved(args.device),
                ),
            )

        def on_step_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
            if not measure_tensors or args.device.type != "cpu" or self.measured is not None:
                return
            if self.tracker is None and state.global_step + 1 >= measured_step(state.max_steps):
                self._start(model, optimizer)

        def on_step_end(self, args, state, control, **kwargs):
            if self.tracker is None:
                return
            tracker, self.tracker = self.tracker, None
            tracker.__exit__(None, None, None)
            if self._training_step is not None:
                self.trainer.training_step, self._training_step = self._training_step, None
            peak = next(iter(tracker.get_tracker_snapshot("peak").values()), {})
            kinds = {str(getattr(k, "value", k)): int(v) for k, v in peak.items()}
            self.measured = RankMemory(
                rank=args.process_index,
                device="cpu",
                tensor_peak_bytes=kinds.pop("Total", 0),
                tensor_peak_step=state.global_step,
                batch_shapes=self.batch_shapes,
                tensor_peak_by_kind={k: v for k, v in kinds.items() if v},
            )
            write_rank_memory(run_dir, self.measured)

        def _start(self, model, optimizer) -> None:
            """Count from here: the models, the optimizer's states and the step's inputs exist
            before the step, the rest is counted as the step makes and frees it."""
            import torch

            from planner.trace.tracker import step_tracker

            tracker = step_tracker()
            models = [model, getattr(self.trainer, "ref_model", None)]
            external = [m for m in models if isinstance(m, torch.nn.Module)]
            if optimizer is not None:
                external.append(getattr(optimizer, "optimizer", optimizer))
            tracker.track_external(*external)
            tracker.hook_trainable(model)
            if self.trainer is not None:
                original = self._training_step = self.trainer.training_step

                def training_step(model, inputs, *rest, **kw):
                    items = inputs.items() if hasattr(inputs, "items") else ()
                    batch = {k: v for k, v in items if isinstance(v, torch.Tensor)}
                    tracker.track_external(*batch.values())
                    self.batch_shapes.update({k: list(v.shape) for k, v in batch.items()})
                    return original(model, inputs, *rest, **kw)

                self.trainer.training_step = training_step
            tracker.__enter__()
            self.tracker = tracker

    return MemoryCallback()


@dataclass
class Run:
    """One training process's run: its folder, whether it resumes, and its callback."""

    dir: Path
    resume: bool
    method: Method | None = None
    callback: object = field(init=False)
    memory: object = field(init=False)

    def __post_init__(self) -> None:
        self.callback = metrics_callback(self.dir, method=self.method)
        self.memory = memory_callback(self.dir, measure_tensors=self._measures_tensors())

    def _measures_tensors(self) -> bool:
        """Whether this run counts one step's tensors on CPU: when `advisor validate` asks,
        for the methods whose step has no generation (the plan traces those)."""
        from runners.rank_memory import MEASURE_TENSORS

        if os.environ.get(MEASURE_TENSORS) != "1" or self.method is None:
            return False
        return self.method is not Method.ppo and not recipe(self.method).generates

    @property
    def callbacks(self) -> list:
        """The trainer's callbacks; the memory one first, so that it writes its peaks at a
        save before the metrics one stops the run there."""
        return [self.memory, self.callback]

    def attach(self, trainer) -> None:
        """Let the memory callback see the trainer's reference model and the step's inputs."""
        self.memory.trainer = trainer

    def preparing(self, method: Method, rows: int) -> None:
        """Say (train.log, progress.json's state `preparing`) that a large dataset is being
        tokenized: the trainer does it before its first step, with nothing else to show."""
        if rows <= LARGE_DATASET_ROWS or not _is_main_process():
            return
        print(
            f"advisor: preparing {rows:,} rows for {method.value.upper()} "
            "(tokenizing; large datasets take minutes)",
            file=sys.stderr,
            flush=True,
        )
        with contextlib.suppress(OSError):  # progress only feeds the live view
            write_progress(self.dir, **{**read_progress(self.dir), "state": "preparing"})

    def config(self, spec: RunSpec):
        """The method's TRL config; checkpoints go inside this run folder, wherever it is now."""
        fields = dict(spec.trl_config)
        fields["output_dir"] = str(checkpoints_dir(self.dir, fields["output_dir"]))
        return _class(spec.config_class)(**fields)

    def resume_point(self, output_dir: str, resumable: bool = True) -> Path | None:
        """The newest whole checkpoint (saying which newer ones are skipped, and why); the
        metrics of steps after it are dropped, as they will be trained again. A trainer that
        cannot resume (PPO) starts over: every earlier metric is dropped."""
        if not self.resume:
            return None
        checkpoint = None
        if resumable:
            checkpoint, skipped = last_good_checkpoint(Path(output_dir))
            for message in skipped:
                print(f"advisor: {message}", file=sys.stderr, flush=True)
        if _is_main_process():
            trim_metrics(self.dir, step_of(checkpoint) if checkpoint else 0)
        return checkpoint

    def fit(self, trainer) -> None:
        """Train, from the last whole checkpoint when resuming; save the final model."""
        install_atomic_checkpoints(trainer)
        self.attach(trainer)
        checkpoint = self.resume_point(trainer.args.output_dir)
        try:
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        except (StopAfterSave, KeyboardInterrupt, DiskFull, NonFiniteLoss):
            raise
        except Exception as error:
            if checkpoint is not None and not self.callback.steps_done and not is_disk_full(error):
                raise BadCheckpoint(
                    f"{checkpoint.name} could not be loaded ({type(error).__name__}: "
                    f"{str(error).splitlines()[0] if str(error) else ''}); move it out of "
                    f"{checkpoint.parent} and resume again to use the one before"
                ) from error
            raise
        self.save_final(trainer)

    def save_final(self, trainer) -> None:
        trainer.save_model(str(self.dir / "final"))
        if _is_main_process():
            write_progress(
                self.dir,
                step=trainer.state.global_step,
                max_steps=trainer.state.max_steps,
                state="done",
            )


def _class(reference: str):
    module, name = reference.split(":")
    return getattr(importlib.import_module(module), name)


def _dtype(spec: RunSpec):
    """The dtype the plan states (the TRL YAML's `dtype`); older run folders without one:
    bf16 under bf16, fp32 masters under fp16 full training, fp32 on CPU."""
    import torch

    if spec.precision is not None:
        return getattr(torch, spec.precision.load_dtype)
    if spec.trl_config.get("bf16"):
        return torch.bfloat16
    if spec.trl_config.get("fp16") and spec.peft is not None:
        return torch.float16
    return torch.float32


def _model_kwargs(spec: RunSpec) -> dict:
    kwargs = {"dtype": _dtype(spec)}
    if spec.quantization:
        import torch
        from transformers import BitsAndBytesConfig

        quant = dict(spec.quantization)
        for key in ("bnb_4bit_compute_dtype", "bnb_4bit_quant_storage"):
            if key in quant:
                quant[key] = getattr(torch, quant[key])
        kwargs["quantization_config"] = BitsAndBytesConfig(**quant)
    elif _checkpoint_quantization(spec.model) == "mxfp4":
        # gpt-oss ships its experts in MXFP4, which transformers keeps (untrainable) where triton
        # and `kernels` are installed: load them dequantized to bf16, as the plan assumes.
        from transformers import Mxfp4Config

        kwargs["quantization_config"] = Mxfp4Config(dequantize=True)
    return kwargs


def _checkpoint_quantization(model: str) -> str | None:
    """The quant_method of the model folder's config.json, or None."""
    try:
        config = json.loads((Path(model) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    quant = config.get("quantization_config") if isinstance(config, dict) else None
    return quant.get("quant_method") if isinstance(quant, dict) else None


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


def dataset_for(spec: RunSpec, run: Run):
    """The run's training rows, saying so first when the trainer will take long to tokenize them."""
    from runners.data import load_train_split

    dataset = load_train_split(spec.dataset)
    if spec.method is Method.kto:  # TRL sums the labels: 0/1 work, "true"/"false" do not
        from runners.data_shapes import cast_kto_labels

        dataset = cast_kto_labels(dataset)
    if spec.max_prompt_tokens is not None:
        dataset = _without_long_prompts(spec, dataset)
    run.preparing(spec.method, len(dataset))
    return dataset


def _without_long_prompts(spec: RunSpec, dataset):
    """The rows whose prompt, tokenized as the trainer tokenizes it, fits max_prompt_tokens
    (`advisor launch --drop-long-prompts`; TRL truncates no prompt of a method that generates)."""
    from runners.trl_rows import row_tokens

    tokenizer = tokenizer_for(spec)
    limit = spec.max_prompt_tokens
    kept = dataset.filter(
        lambda row: row_tokens(row, spec.method, tokenizer).prompt <= limit,
        desc=f"Leaving out prompts over {limit} tokens",
    )
    if _is_main_process():
        print(
            f"advisor: left out {len(dataset) - len(kept):,} of {len(dataset):,} rows whose "
            f"prompt is longer than {limit} tokens (--drop-long-prompts)",
            file=sys.stderr,
        )
    return kept


def train_on_dataset(spec: RunSpec, run: Run) -> None:
    """SFT, DPO, KTO, ORPO and SimPO: the policy trained on a fixed dataset by the recipe's
    trainer (SimPO is TRL's CPOTrainer with loss_type="simpo" and cpo_alpha=0, which settings
    put in the config). With LoRA, DPO's and KTO's reference is the base with the adapter
    disabled; in full tuning TRL reloads it from the model path (config._name_or_path)."""
    trainer = _class(spec.trainer)(
        model=causal_lm(spec),
        args=run.config(spec),
        train_dataset=dataset_for(spec, run),
        processing_class=tokenizer_for(spec),
        peft_config=lora(spec),
        callbacks=run.callbacks,
    )
    run.fit(trainer)


def train_reward(spec: RunSpec, run: Run) -> None:
    tokenizer = tokenizer_for(spec)
    trainer = _class(spec.trainer)(
        model=sequence_scorer(spec, spec.model, tokenizer),
        args=run.config(spec),
        train_dataset=dataset_for(spec, run),
        processing_class=tokenizer,
        peft_config=lora(spec),
        callbacks=run.callbacks,
    )
    run.fit(trainer)


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


def train_with_rewards(spec: RunSpec, run: Run) -> None:
    """GRPO and RLOO: the policy generates from left-padded prompts and is scored by the run's
    reward functions, with the recipe's trainer."""
    trainer = _class(spec.trainer)(
        model=causal_lm(spec),
        reward_funcs=reward_functions(spec),
        args=run.config(spec),
        train_dataset=dataset_for(spec, run),
        processing_class=tokenizer_for(spec, padding_side="left"),
        peft_config=lora(spec),
        callbacks=run.callbacks,
    )
    run.fit(trainer)


def train_ppo(spec: RunSpec, run: Run) -> None:
    # TRL's PPO takes pre-tokenized, left-padded prompts (trl.experimental.ppo docs).
    tokenizer = tokenizer_for(spec, padding_side="left")
    dataset = dataset_for(spec, run)

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
    trainer = _class(spec.trainer)(
        args=run.config(spec),
        processing_class=tokenizer,
        model=causal_lm(spec),
        ref_model=None if peft_config else causal_lm(spec),
        reward_model=sequence_scorer(spec, spec.reward_model or spec.model, tokenizer),
        value_model=sequence_scorer(spec, spec.reward_model or spec.model, tokenizer),
        train_dataset=dataset,
        peft_config=peft_config,
        callbacks=run.callbacks,
    )
    if run.resume:
        print("advisor: TRL's PPOTrainer cannot resume; training from the start", flush=True)
    install_atomic_checkpoints(trainer)
    run.attach(trainer)
    run.resume_point(trainer.args.output_dir, resumable=False)
    trainer.train()
    run.save_final(trainer)


def train_function(method: Method):
    """How a method trains, from its recipe: PPO and reward modelling have their own shapes,
    methods that generate are scored by reward functions, the rest train on a fixed dataset."""
    if method is Method.ppo:
        return train_ppo
    if method is Method.reward:
        return train_reward
    return train_with_rewards if recipe(method).generates else train_on_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runners.train")
    parser.add_argument("runspec", help="RUN_DIR/runspec.json")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    args = parser.parse_args(argv)
    path = Path(args.runspec).resolve()
    run_dir = path.parent
    signal.signal(signal.SIGINT, STOP.on_signal)
    signal.signal(signal.SIGTERM, STOP.on_signal)
    lock = RunLock(run_dir)
    if _is_main_process():
        try:
            lock.acquire()
        except RunLocked as error:
            print(f"advisor: {run_dir} is in use by a live trainer ({error})", file=sys.stderr)
            return EXIT_LOCKED
    # Every rank checks before any trains: a fresh start never writes over an earlier run.
    held = None if args.resume else trained_before(run_dir)
    if held is not None:
        lock.release()
        print(
            f"advisor: {run_dir} already holds {held}; nothing was started (--resume continues it)",
            file=sys.stderr,
        )
        return 2
    watch_launchers(STOP)
    spec = RunSpec.model_validate_json(path.read_text(encoding="utf-8"))
    if spec.device == "cpu":
        from runners.cpu_engines import enable, engine_of

        enable(engine_of(spec.accelerate))
    run = Run(run_dir, args.resume, spec.method)
    import torch
    from transformers import set_seed

    # Before the model is built: LoRA's initialisation draws from the generator too.
    set_seed(int(spec.trl_config.get("seed", 42)))
    try:
        train_function(spec.method)(spec, run)
    except torch.OutOfMemoryError as error:
        return _failed(run_dir, "oom", str(error).splitlines()[0], EXIT_OOM)
    except DiskFull as error:
        return _failed(run_dir, "disk_full", str(error), EXIT_DISK_FULL)
    except BadCheckpoint as error:
        return _failed(run_dir, "checkpoint", str(error), EXIT_BAD_CHECKPOINT)
    except NonFiniteLoss as error:
        return _failed(run_dir, "non_finite", str(error), EXIT_NON_FINITE)
    except (KeyboardInterrupt, StopAfterSave):
        return EXIT_STOPPED
    except Exception as error:
        if not is_disk_full(error):
            raise
        message = f"no space left on the disk while writing into {run_dir}"
        return _failed(run_dir, "disk_full", message, EXIT_DISK_FULL)
    finally:
        _close_process_group()
        lock.release()
    return EXIT_STOPPED if STOP.requested else 0


def _failed(run_dir: Path, kind: str, message: str, status: int) -> int:
    """Record why the training stopped (error.json, main process) and say it in one line."""
    if _is_main_process():
        write_error(run_dir, kind, message)
    print(f"advisor: {message}", file=sys.stderr, flush=True)
    return status


def _close_process_group() -> None:
    """Tear down the process group before the interpreter exits: gloo's worker threads abort
    the process ("terminate called without an active exception") when it is left alive."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())

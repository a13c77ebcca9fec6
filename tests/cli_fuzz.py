"""Generated invocations of `advisor plan` and `advisor recommend`, mostly bad, and the checks
every one must pass: no traceback, exit status 0, 1 or 2, and `--json` output that parses and
holds no null, NaN, infinite or negative number where the contract has none.

Shared by tests/test_fuzz_cli.py (hypothesis draws the choices, so failures shrink) and
scripts/fuzz_cli.py (a seeded `random.Random` draws them, thousands at a time). Every choice
goes through a `Pick`, so one generator serves both.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import signal
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from planner.paths import profiles_dir

T = TypeVar("T")


class Pick(Protocol):
    """Where a generator's choices come from."""

    def choice(self, options: Sequence[T]) -> T: ...

    def integer(self, low: int, high: int) -> int: ...


class RandomPick:
    """Choices from a seeded `random.Random` (the script)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choice(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)


class HypothesisPick:
    """Choices drawn from hypothesis's `data()` strategy (the test), so failures shrink."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def choice(self, options: Sequence[T]) -> T:
        from hypothesis import strategies as st

        return self.data.draw(st.sampled_from(options))

    def integer(self, low: int, high: int) -> int:
        from hypothesis import strategies as st

        return self.data.draw(st.integers(low, high))


# --- values -----------------------------------------------------------------------------------

SPECIAL_NUMBERS = (
    "inf", "-inf", "nan", "NaN", "Infinity", "1e200", "-1e200", "1e308", "1e309", "1e-300",
    "", " ", "0", "-0", "-1", "+7", "1.5", "0.5", "2.0", "1_000", "0x10", "٣", "½", "1 2",
    "9" * 5000, "1" * 4300, str(2**63), str(2**64 + 1), str(10**30), "1048576", "1048577",
    "65536", "65537", "1024", "1025", "16384", "16385", "1000000000000", "1000000000001",
    "--json",
)  # fmt: skip
"""Numbers (and non-numbers) a tester types: infinities, NaN, 1e200, huge and negative ints."""

MODEL_TEXTS = (
    "7b", "70b", "0.5b", "405b", "llama-3.1-8b", "mixtral-8x7b", "qwen2.5-7b", "gemma-2-9b",
    "phi-3-mini-4k", "nope", "lama-2-7b", "", " ", "x" * 300, "x" * 5000, "a" * 256 + "/b",
    "~nosuchuser/x", "~nosuchuser", "~/no-such-config.json", "a\x00b", "line\nbreak", "tab\there",
    "/dev/zero", "/dev/null", "/dev/stdin", "/proc/self/mem", "/", ".", "..", "/etc/passwd",
    "org/repo", "a/b/c", "meta-llama/Llama-2-7b-hf", "../x.json", "C:\\models\\x", "-", "💥",
    " 7b ", "7B",
)  # fmt: skip
"""`--model` texts: profiles, shorthands, typos, and absurd names and paths."""

GPU_TEXTS = (
    "a100-80gb", "h100", "t4", "rtx-4090", "v100", "tpu", "", "x" * 300, "a\x00b",
    "NVIDIA A100-SXM4-80GB", "h100 80gb hbm3", "💥", "a100-81gb",
)  # fmt: skip

CHOICES = {
    "--method": ("sft", "dpo", "ppo", "grpo", "rloo", "kto", "orpo", "simpo", "reward", "x", ""),
    "--tuning": ("full", "lora", "qlora", "half"),
    "--lora-targets": ("qv", "attention", "all-linear", "mlp"),
    "--precision": ("bf16", "fp16", "fp32", "bf16-mixed", "int4"),
    "--optimizer": ("adamw", "adamw8bit", "paged_adamw8bit", "sgd", "lion"),
    "--attention": ("sdpa", "flash", "eager", "ring"),
    "--sharding": ("none", "ddp", "zero1", "zero2", "zero3", "fsdp", "zero4"),
    "--offload": ("none", "optimizer", "optimizer+params", "disk"),
}
NUMBER_FLAGS = (
    "--lora-rank", "--seq-len", "--prompt-len", "--completion-len", "--batch-size",
    "--grad-accum", "--num-gpus", "--nodes", "--num-generations", "--beta", "--ppo-epochs",
    "--samples", "--epochs",
)  # fmt: skip
SWITCHES = ("--grad-checkpointing", "--no-grad-checkpointing", "--precompute-ref-log-probs")

BAD_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 2, 3, 7, 64, 10**6, 10**12, 10**30, 2**63, 10**400, 1e300,
    float("inf"), float("nan"), -1e10, 1.5, "", "x", "4096", "llama", [], [1], ["llama"], {},
    {"a": 1}, {"model_type": "llama"}, [[[[1]]]], "x" * 1000,
)  # fmt: skip
"""Values put into config.json or answers fields (JSON writes inf and nan as Infinity, NaN)."""

CONFIG_FIELDS = (
    "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "intermediate_size", "vocab_size",
    "max_position_embeddings", "num_local_experts", "num_experts_per_tok", "text_config",
    "tie_word_embeddings", "hidden_act", "hidden_activation", "attention_bias", "mlp_bias",
    "_advisor",
)  # fmt: skip

GOOD_ANSWERS = {
    "use_case": "support_copilot",
    "risk": "medium",
    "ml_maturity": "medium",
    "feedback": "pairwise_preferences",
    "reward_model": "none",
    "sft_done": True,
    "priority": "time_to_value",
}
ANSWER_FIELDS = (*GOOD_ANSWERS, "model", "gpus", "usecase", "title", "expected")
GPUS_ANSWERS = (
    "1x a100-80gb", "8x h100-80gb", "2x rtx-4090", "0x a100-80gb", "-1x a100", "1025x h100",
    "8192x h100", "8200x h100", "99999999999999999999x h100", "9" * 5000 + "x h100",
    "8x warp-drive", "x" * 1000, "a100-80gb", "1x", "",
)  # fmt: skip
DEPTHS = (10, 63, 64, 65, 100, 1000, 20000)


@dataclass
class Workdir:
    """A folder for generated files, with a FIFO, an empty folder and an oversized file."""

    root: Path
    count: int = 0

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.fifo = self.root / "fifo"
        if not self.fifo.exists():
            os.mkfifo(self.fifo)
        self.empty_dir = self.root / "empty-dir"
        self.empty_dir.mkdir(exist_ok=True)
        self.huge = self.root / "huge.json"
        if not self.huge.exists():
            with self.huge.open("wb") as handle:  # sparse: 17 MiB on paper, nothing on disk
                handle.truncate(17 * 2**20)
        self.base_configs = sorted((profiles_dir() / "models").glob("*.json"))

    def path(self, name: str) -> Path:
        """A new, unused path in the folder ending in `name`."""
        self.count += 1
        return self.root / f"{self.count}-{name}"

    def odd_path(self, pick: Pick) -> str:
        """A path that is no readable regular file."""
        return str(
            pick.choice(
                (
                    self.fifo,
                    self.empty_dir,
                    self.huge,
                    self.root / "missing.json",
                    "/dev/zero",
                    "/dev/null",
                    "~nosuchuser/a.yaml",
                    "x" * 300,
                    "a\x00b",
                    "",
                )
            )
        )


def number(pick: Pick) -> str:
    """A number as typed after a flag: special, small, large, huge, negative or fractional."""
    kind = pick.integer(0, 4)
    if kind == 0:
        return pick.choice(SPECIAL_NUMBERS)
    if kind == 1:
        return str(pick.integer(-3, 70))
    if kind == 2:
        return str(pick.integer(1, 5000))
    if kind == 3:
        return str(10 ** pick.integer(3, 400))
    return str(pick.integer(-(2**70), 2**70))


def in_range(flag: str, pick: Pick) -> str:
    """A value the flag accepts, often at its floor or ceiling (PlanRequest's own bounds), so
    the estimate's arithmetic is tried at the extremes a user may legally ask for."""
    from planner.specs import PlanRequest

    info = PlanRequest.model_fields[flag.removeprefix("--").replace("-", "_")]
    low, high = 1, 10**6
    for bound in info.metadata:
        low = getattr(bound, "ge", None) if hasattr(bound, "ge") else low
        low = bound.gt + 1 if hasattr(bound, "gt") else low
        high = bound.le if hasattr(bound, "le") else high
    if float in (info.annotation, *getattr(info.annotation, "__args__", ())):
        return pick.choice(("0.001", "0.5", "1", "2.5", str(high), str(high - 0.001), "1e-9"))
    kind = pick.integer(0, 3)
    if kind == 0:
        return str(low)
    if kind == 1:
        return str(high)
    if kind == 2:
        return str(min(high, 2 ** pick.integer(0, 40)))
    return str(pick.integer(low, min(high, 10**4)))


def config_text(pick: Pick, work: Workdir) -> str:
    """The text of a config.json: a real profile with some fields made bad, or a broken file."""
    config = json.loads(pick.choice(work.base_configs).read_text())
    for _ in range(pick.integer(0, 3)):
        name = pick.choice(CONFIG_FIELDS)
        if pick.integer(0, 5) == 0:
            config.pop(name, None)
        else:
            config[name] = pick.choice(BAD_VALUES)
    shape = pick.integer(0, 12)
    text = json.dumps(config)
    depth = pick.choice(DEPTHS)
    if shape == 0:  # the whole config nested in lists
        return "[" * depth + text + "]" * depth
    if shape == 1:  # one field nested deep
        field = json.dumps(pick.choice(CONFIG_FIELDS))
        return text[:-1] + f", {field}: " + "[" * depth + "1" + "]" * depth + "}"
    if shape == 2:
        return "[" * depth + "]" * depth
    if shape == 3:
        return text[: pick.integer(0, 40)]  # truncated
    if shape == 4:
        return pick.choice(("", "null", "[]", "3", '"llama"', "\ufeff{}", "{'a': 1}"))
    if shape == 5:  # an integer with more digits than Python converts
        return text[:-1] + f', "{pick.choice(CONFIG_FIELDS[1:9])}": ' + "9" * 5000 + "}"
    return text


def model_arg(pick: Pick, work: Workdir) -> str:
    """A `--model` value: a text from MODEL_TEXTS, an odd path, or a generated config."""
    kind = pick.integer(0, 4)
    if kind == 0:
        return pick.choice(MODEL_TEXTS)
    if kind == 1:
        return work.odd_path(pick)
    text = config_text(pick, work)
    if kind == 2:  # a model folder holding config.json
        folder = work.path("model")
        folder.mkdir()
        (folder / "config.json").write_text(text)
        return str(folder)
    path = work.path(pick.choice(("config.json", "model.json", "cfg")))
    if pick.integer(0, 9) == 0:
        path.write_bytes(b"\xff\xfe" + text.encode())  # not UTF-8
    else:
        path.write_text(text)
    return str(path)


def plan_argv(pick: Pick, work: Workdir) -> list[str]:
    """`advisor plan` with up to seven flags set to random, extreme or absurd values; one time
    in three every value is one the flag accepts (often its ceiling), and the model a profile."""
    argv = ["plan"]
    legal = pick.integer(0, 2) == 0
    for _ in range(pick.integer(0, 7)):
        flag = pick.choice(("--model", "--gpu", *CHOICES, *NUMBER_FLAGS, *SWITCHES))
        if flag in SWITCHES:
            argv.append(flag)
        elif flag == "--model":
            argv += [flag, pick.choice(MODEL_TEXTS[:9]) if legal else model_arg(pick, work)]
        elif flag == "--gpu":
            argv += [flag, pick.choice(GPU_TEXTS[:5] if legal else GPU_TEXTS)]
        elif flag in CHOICES:
            options = CHOICES[flag]
            argv += [flag, pick.choice(options[:-1] if legal else options)]
        else:
            argv += [flag, in_range(flag, pick) if legal else number(pick)]
    if pick.integer(0, 9) == 0:
        argv.append("--fit")
    if pick.integer(0, 24) == 0:
        argv.append(pick.choice(("--list-models", "--list-gpus")))
    if pick.integer(0, 3):
        argv.append("--json")
    return argv


def alias_bomb(levels: int, width: int) -> str:
    """A "billion laughs" YAML: each level's list holds `width` aliases of the level below."""
    lines = ['l0: &l0 ["lol", "lol"]']
    for level in range(1, levels + 1):
        items = ", ".join([f"*l{level - 1}"] * width)
        lines.append(f"l{level}: &l{level} [{items}]")
    return "\n".join(lines) + f"\nuse_case: *l{levels}\n"


def answers_text(pick: Pick, json_file: bool) -> str:
    """The text of an answers file: good answers with some fields made bad, or a hostile file."""
    import yaml

    data: dict[Any, Any] = dict(GOOD_ANSWERS)
    if pick.integer(0, 2) == 0:
        data["model"] = pick.choice(MODEL_TEXTS)
        data["gpus"] = pick.choice(GPUS_ANSWERS)
    for _ in range(pick.integer(0, 3)):
        name = pick.choice(ANSWER_FIELDS)
        if pick.integer(0, 4) == 0:
            data.pop(name, None)
        else:
            data[name] = pick.choice((*BAD_VALUES, *GPUS_ANSWERS, *MODEL_TEXTS))
    shape = pick.integer(0, 14)
    depth = pick.choice(DEPTHS)
    if shape == 0:
        return alias_bomb(pick.integer(1, 12), pick.integer(2, 10))
    if shape == 1:
        return "[" * depth + "]" * depth
    if shape == 2:
        return "\n".join(" " * i + "a:" for i in range(min(depth, 2000)))
    if shape == 3:
        return "use_case: " + "[" * depth + "]" * depth
    if shape == 4:
        return pick.choice(
            (
                "",
                "hello",
                "- a\n- b\n",
                "use_case: [unclosed",
                "\tuse_case: search",
                "!!python/object/apply:os.system ['echo hi']",
                "use_case: !!binary aGVsbG8=",
                "? [a, b]\n: c\n",
                "a: &a 1\nb: *nosuch\n",
                "use_case: " + "9" * 5000,
                "%YAML 9.9\n---\na: 1",
                "a: 1\n" * 20000,  # over the size limit
            )
        )
    if json_file:
        return json.dumps(data)
    try:
        return yaml.safe_dump(data, allow_unicode=True)
    except yaml.YAMLError:
        return json.dumps(data)


def answers_arg(pick: Pick, work: Workdir) -> str:
    """An `--answers` value: a generated file (YAML or JSON), or an odd path."""
    if pick.integer(0, 6) == 0:
        return work.odd_path(pick)
    json_file = pick.integer(0, 3) == 0
    path = work.path("answers.json" if json_file else pick.choice(("answers.yaml", "answers")))
    path.write_text(answers_text(pick, json_file), encoding="utf-8")
    return str(path)


def recommend_argv(pick: Pick, work: Workdir) -> list[str]:
    """`advisor recommend` with a generated answers file, sometimes a report path and --force."""
    argv = ["recommend", "--answers", answers_arg(pick, work)]
    report = pick.integer(0, 5)
    if report == 1:
        argv += ["--report", str(work.path("record.md"))]
    elif report == 2:
        existing = work.path("existing.md")
        existing.write_text("keep me\n")
        argv += ["--report", str(existing)]
    elif report == 3:
        argv += ["--report", work.odd_path(pick)]
    elif report == 4:
        argv += ["--report", str(work.root / "no-such-dir" / "r.md")]
    if report and pick.integer(0, 1):
        argv.append("--force")
    if pick.integer(0, 2):
        argv.append("--json")
    return argv


def invocation(pick: Pick, work: Workdir) -> list[str]:
    """One generated command line: `plan` about two times in three, else `recommend`."""
    return plan_argv(pick, work) if pick.integer(0, 2) else recommend_argv(pick, work)


# --- running and judging ----------------------------------------------------------------------


@dataclass
class Outcome:
    """What one in-process run of `advisor.cli.main` did."""

    argv: list[str]
    code: int | None = None
    out: str = ""
    err: str = ""
    escaped: str = ""
    """The traceback of an exception that escaped main(), if one did."""
    hung: bool = False
    """Whether the run was stopped at its time limit."""
    problems: list[str] = field(default_factory=list)


class Hang(BaseException):
    """Raised by the alarm when one run takes longer than its limit (BaseException, so that no
    `except Exception` in the code under test swallows it)."""


def _alarm(signum: int, frame: Any) -> None:
    raise Hang


def run(argv: list[str], limit_s: int = 10) -> Outcome:
    """Run `advisor ARGV` in this process, capturing stdout, stderr and the exit status; an
    exception escaping main() (argparse's SystemExit aside) is recorded, not raised, and so is
    a run past `limit_s` seconds (a hang: a FIFO opened for reading waits for a writer)."""
    from advisor.cli import main

    outcome = Outcome(argv)
    out, err = io.StringIO(), io.StringIO()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(limit_s)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                outcome.code = main(list(argv))
            except SystemExit as exit_:  # argparse's way of exiting with status 2
                outcome.code = exit_.code if isinstance(exit_.code, int) else 2
    except Hang:
        outcome.hung = True
    except Exception:
        outcome.escaped = traceback.format_exc()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    outcome.out, outcome.err = out.getvalue(), err.getvalue()
    outcome.problems = judge(outcome)
    return outcome


# Keys where null is part of the contract (path pieces joined by ".", list items as "*"):
ALLOWED_NULL = {
    # `advisor plan`: inputs a user may leave out, echoed as not given.
    "request.prompt_len", "request.completion_len", "request.beta", "request.samples",
    "request.dataset", "request.calibration",
    # only GRPO / RLOO generate: other methods have no completions per prompt
    "request.num_generations",
    # fp32 runs, and DeepSpeed (which casts the model itself), have no autocast
    "precision.autocast",
    # set only when the model was given as a size shorthand such as 7b
    "model.representative_of",
    # seconds of the traced step: only on the general path (estimate_path "traced")
    "model.trace_seconds",
    # the vLLM engine's plan and settings: only with --generation vllm-colocate / vllm-server,
    # TRL's defaults when not given; --fit's sharding explanation: null on one GPU
    "generation", "request.vllm_memory", "request.vllm_server_gpus", "fit_explanation",
    # no --samples / --dataset: no run length (DESIGN.md: total_hours is null then)
    "time.total_hours", "time.total_steps", "time.samples",
    # no measured run to learn from
    "memory.calibration",
    # `advisor recommend`: no staged path for this method; model and gpus are optional
    # answers; a method that fits in no default setup has none; a reason that cites no paper
    "hybrid_path", "answers.model", "answers.gpus", "compute.*.setup",
    "ranking.*.effects.*.source",
}  # fmt: skip
ALLOWED_NEGATIVE = {
    "memory.headroom_gib",  # how far over the card a plan that does not fit is (fits: false)
    "memory.calibration.correction_gib",  # measured runs may need less runtime overhead
    "ranking.*.score",  # a method's score is signed points for and against it
    "ranking.*.effects.*.points",  # ... and each effect's points are one of them
}


def absurd_values(value: Any) -> list[str]:
    """Every null, NaN, infinite or negative number in a parsed JSON value outside the
    allowed keys, as 'path=value' (a top-level list, as --fit prints, is looked into)."""
    found: list[str] = []
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, where = stack.pop()
        key = where.removeprefix("*.")  # a plan in --fit's list is judged as a plan
        if isinstance(item, dict):
            memory = item.get("memory")
            if item.get("fits") is True and isinstance(memory, dict):
                headroom = memory.get("headroom_gib")
                if isinstance(headroom, int | float) and headroom < 0:
                    found.append(f"{key}.memory.headroom_gib={headroom!r} though it fits")
            stack.extend((v, f"{where}.{k}".lstrip(".")) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{where}.*".lstrip(".")) for v in item)
        elif item is None:
            if key not in ALLOWED_NULL:
                found.append(f"{key}=null")
        elif isinstance(item, bool) or not isinstance(item, int | float):
            continue
        elif (isinstance(item, float) and not math.isfinite(item)) or (
            item < 0 and key not in ALLOWED_NEGATIVE
        ):
            found.append(f"{key}={item!r}")
    return found


def _parse_strict(text: str) -> Any:
    """json.loads that refuses NaN and Infinity (Python's json accepts them)."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} in JSON output")

    return json.loads(text, parse_constant=refuse)


def judge(outcome: Outcome) -> list[str]:
    """What is wrong with an outcome: an escaped exception, a traceback in stderr, an exit
    status other than 0, 1 or 2, or absurd `--json` output."""
    problems = []
    if outcome.hung:
        problems.append("hang: stopped at the time limit")
    if outcome.escaped:
        problems.append("traceback: an exception escaped main()")
    if "Traceback" in outcome.err:
        problems.append("traceback: printed on stderr")
    if outcome.code not in (0, 1, 2) and not outcome.hung:
        problems.append(f"exit status: {outcome.code!r}, not 0, 1 or 2")
    if outcome.code == 0 and "--json" in outcome.argv:
        try:
            payload = _parse_strict(outcome.out)
        except ValueError as error:
            problems.append(f"absurd: --json printed no JSON ({str(error)[:80]})")
        else:
            bad = absurd_values(payload)
            if bad:
                problems.append("absurd: " + ", ".join(sorted(set(bad))[:5]))
    return problems


def shown_argv(argv: list[str], limit: int = 60) -> str:
    """A command line for a report, each argument cut to `limit` characters."""
    parts = [a if len(a) <= limit else a[: limit - 1] + "…" for a in argv]
    return "advisor " + " ".join(
        repr(p) if not p or not p.isprintable() or " " in p else p for p in parts
    )

"""The interview's answers: the pydantic model, and loading it from a YAML or JSON file.

Every mistake a user can make in an answers file becomes a `InputError` whose one-line message
names the field, what was wrong, and the values that are valid.
"""

from __future__ import annotations

import difflib
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from planner.errors import InputError
from planner.files import parse_json, parse_yaml, read_text, short, shown
from planner.gpu_counts import GPUS_PER_NODE
from planner.gpus import counted_gpu
from planner.models import check_model_text
from planner.specs import MAX_GPUS_PER_NODE


class UseCase(StrEnum):
    """What the aligned model will do: the common enterprise cases and a few more."""

    support_copilot = "support_copilot"
    knowledge_assistant = "knowledge_assistant"
    summarization = "summarization"
    search = "search"
    workflow_assistant = "workflow_assistant"
    customer_automation = "customer_automation"
    agentic_tool_use = "agentic_tool_use"
    structured_reasoning = "structured_reasoning"
    math_or_code_reasoning = "math_or_code_reasoning"
    safety_critical_automation = "safety_critical_automation"
    other = "other"


class Level(StrEnum):
    """A three-step scale, used for risk and for ML maturity."""

    low = "low"
    medium = "medium"
    high = "high"


class Feedback(StrEnum):
    """The feedback data the team has on hand."""

    pairwise_preferences = "pairwise_preferences"
    binary_feedback = "binary_feedback"
    scalar_scores = "scalar_scores"
    verifiable_rewards = "verifiable_rewards"
    demonstrations_only = "demonstrations_only"


class RewardModel(StrEnum):
    """Whether a reward model exists, or the team has what it takes to build one."""

    none = "none"
    available = "available"
    can_build = "can_build"


class Priority(StrEnum):
    """What the business cares about most."""

    time_to_value = "time_to_value"
    cost = "cost"
    control = "control"
    quality = "quality"


LEVEL_ORDER = (Level.low, Level.medium, Level.high)
"""Risk and maturity from lowest to highest (the property tests walk this order)."""


_GPU_EXAMPLES = "'1x a100-80gb', '8x h100-80gb' or just 'a100-80gb'"

MAX_TEAM_GPUS = MAX_GPUS_PER_NODE * GPUS_PER_NODE
"""Most GPUs a `gpus` answer may name: 8,192, past the largest alignment runs published."""


def parse_gpus(text: str) -> tuple[str, int]:
    """Split a `gpus` answer such as `8x h100-80gb`, `1x 4090` or `a100-80gb` into (the GPU
    profile's name, count); the name is any spelling `advisor plan --gpu` accepts."""
    if not text.strip():
        raise InputError(f"gpus: empty; write it like {_GPU_EXAMPLES}")
    try:
        gpu, count = counted_gpu(text)
    except InputError as error:
        raise InputError(f"gpus: {error}; write it like {_GPU_EXAMPLES}") from None
    if count < 1:
        raise InputError(f"gpus: {short(text)} asks for {count} GPUs; the count must be at least 1")
    if count > MAX_TEAM_GPUS:
        raise InputError(f"gpus: {short(text)} asks for {count:,} GPUs; at most {MAX_TEAM_GPUS:,}")
    if count > MAX_GPUS_PER_NODE and count % GPUS_PER_NODE:
        raise InputError(
            f"gpus: {count:,} GPUs; more than {MAX_GPUS_PER_NODE:,} must be whole nodes of {GPUS_PER_NODE}"
        )
    return gpu.name.lower(), count


class Answers(BaseModel):
    """One team's interview answers: the decision engine's whole input (the answers file's fields)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    use_case: UseCase
    risk: Level
    ml_maturity: Level
    feedback: Feedback
    reward_model: RewardModel
    sft_done: bool
    priority: Priority
    model: str | None = Field(default=None, description="anything `advisor plan --model` accepts")
    gpus: str | None = Field(default=None, description="e.g. '1x a100-80gb', '8x h100-80gb'")

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus_number(cls, value: Any) -> Any:
        # YAML reads an unquoted `gpus: 4090` as a number; it names a card all the same.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("gpus")
    @classmethod
    def _gpus_parse(cls, value: str | None) -> str | None:
        if value is not None:
            parse_gpus(value)
        return value

    @field_validator("model")
    @classmethod
    def _model_text(cls, value: str | None) -> str | None:
        # Only the text's sanity here: whether the planner knows the model is the compute
        # check's question, asked when `gpus` is given too.
        return None if value is None else check_model_text(value)

    def parsed_gpus(self) -> tuple[str, int] | None:
        """The GPU name and count from `gpus`, or None when it was not answered."""
        return None if self.gpus is None else parse_gpus(self.gpus)


SCENARIO_KEYS = ("title", "description", "expected")
"""Keys an example interview in `profiles/scenarios/` carries beside the answers; ignored here."""

_FIELD_ENUMS: dict[str, type[Enum]] = {
    "use_case": UseCase,
    "risk": Level,
    "ml_maturity": Level,
    "feedback": Feedback,
    "reward_model": RewardModel,
    "priority": Priority,
}


def valid_values(field: str) -> list[str]:
    """The values a field accepts, as a user writes them."""
    if field in _FIELD_ENUMS:
        return [member.value for member in _FIELD_ENUMS[field]]
    if field == "sft_done":
        return ["true", "false"]
    return []


def _closest(word: str, choices: list[str]) -> str:
    if len(word) > 100:  # nothing that long is a typo of a field or a value
        return ""
    close = difflib.get_close_matches(word, choices, n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def _name(key: Any) -> str:
    """A field name as a message shows it: plain when it is short text, described otherwise."""
    if isinstance(key, str) and len(key) <= 60 and key.isprintable():
        return key
    return short(key)


def _describe(error: dict[str, Any], data: dict[str, Any]) -> str:
    """One validation error as a sentence that says what is valid; a value is described with
    `short`, never printed whole (an aliased YAML value may be huge once expanded)."""
    key = error["loc"][0] if error["loc"] else "answers"
    field = _name(key)
    kind = error["type"]
    valid = valid_values(str(key))
    listing = f"valid: {', '.join(valid)}" if valid else ""
    if kind == "missing":
        return f"{field}: missing" + (f" ({listing})" if listing else "")
    if kind == "extra_forbidden":
        fields = list(Answers.model_fields)
        return f"{field}: unknown field; {_closest(str(key), fields)}fields are {', '.join(fields)}"
    if valid:
        given = data.get(key)
        hint = _closest(given, valid) if isinstance(given, str) else ""
        return f"{field}: {short(given)} is not valid; {hint}{listing}"
    message = str(error["msg"]).removeprefix("Value error, ").removeprefix(f"{field}: ")
    return f"{field}: {message}"


def answers_from_mapping(data: Any, source: str = "answers") -> Answers:
    """Validate a mapping of answers (scenario keys ignored); raises InputError with every problem."""
    if not isinstance(data, dict):
        raise InputError(
            f"{source}: expected a mapping of field: value, got {type(data).__name__}; "
            f"fields are {', '.join(Answers.model_fields)}"
        )
    fields = {k if isinstance(k, str) else short(k): v for k, v in data.items()}
    fields = {k: v for k, v in fields.items() if k not in SCENARIO_KEYS}
    # A list or mapping never reaches pydantic: its enum check reprs the value in full, and an
    # aliased YAML value can be millions of items once expanded.
    nested = [
        f"{k}: {short(v)} is not valid; "
        + (f"valid: {', '.join(valid_values(k))}" if valid_values(k) else "expected one value")
        for k, v in fields.items()
        if k in Answers.model_fields and isinstance(v, dict | list)
    ]
    if nested:
        raise InputError(f"{source}: " + "; ".join(nested))
    try:
        return Answers.model_validate(fields)
    except ValidationError as error:
        errors = error.errors()
        unknown = [e for e in errors if e["type"] == "extra_forbidden"]
        problems = [_describe(e, fields) for e in errors if e["type"] != "extra_forbidden"][:10]
        if len(unknown) == 1:
            problems.append(_describe(unknown[0], fields))
        elif unknown:
            names = ", ".join(_name(e["loc"][0]) for e in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            problems.append(
                f"unknown fields {names}{more}; fields are {', '.join(Answers.model_fields)}"
            )
        raise InputError(f"{source}: " + "; ".join(problems)) from None


MAX_ANSWERS_BYTES = 64 * 2**10
"""An answers file is a dozen short lines (under 1 KiB); PyYAML parses about 64 KiB a second."""


def read_answers_file(path: str | Path) -> Any:
    """The raw value in a YAML or JSON file (JSON by suffix, otherwise YAML, a superset), read
    through `planner.files`: a regular file of sane size, bounded nesting and YAML aliases."""
    text = read_text(path, "answers file", max_bytes=MAX_ANSWERS_BYTES)
    what = f"answers file {shown(path)}"
    if str(path).lower().endswith(".json"):
        return parse_json(text, what)
    return parse_yaml(text, what)


def load_answers(path: str | Path) -> Answers:
    """Read and validate an answers file (YAML or JSON); raises InputError with a clear message."""
    return answers_from_mapping(read_answers_file(path), source=shown(path))

"""The interview's questions, one line per option, and the answers file the wizard writes.

Pure data and YAML: the wizard shows these questions one at a time; what it saves is a file
that `advisor recommend --answers` reads back (`advisor.decision.answers.load_answers`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advisor.decision.answers import Answers, answers_from_mapping
from advisor.decision.output_file import write_text


@dataclass(frozen=True)
class Question:
    """One interview question: the answers-file field, what to ask, and the options."""

    field: str
    title: str
    hint: str
    options: tuple[tuple[str, str], ...] = ()
    """(value as the answers file writes it, one line on what it means); empty = free text"""
    placeholder: str = ""

    @property
    def optional(self) -> bool:
        """Free-text questions (model, GPUs) may be left empty."""
        return not self.options


QUESTIONS: tuple[Question, ...] = (
    Question(
        "use_case",
        "What will the aligned model do?",
        "The use case decides how much explicit reward control is worth paying for.",
        (
            ("support_copilot", "drafts replies that a human agent reviews and sends"),
            ("knowledge_assistant", "answers questions from internal documents"),
            ("summarization", "condenses tickets, calls or documents"),
            ("search", "ranks or rewrites queries and results"),
            ("workflow_assistant", "helps staff through multi-step internal tasks"),
            ("customer_automation", "talks to customers with no human in the loop"),
            ("agentic_tool_use", "calls tools and APIs on its own over many steps"),
            ("structured_reasoning", "must follow strict formats, rules or policies"),
            ("math_or_code_reasoning", "solves problems whose answers can be checked"),
            ("safety_critical_automation", "acts where a mistake is costly or unsafe"),
            ("other", "none of these; the recommendation leans on the other answers"),
        ),
    ),
    Question(
        "risk",
        "How bad is a wrong or harmful answer?",
        "Higher risk favours methods with explicit control and closer monitoring.",
        (
            ("low", "a mistake is an annoyance; someone notices and moves on"),
            ("medium", "a mistake costs time or trust, but is caught and fixed"),
            ("high", "a mistake reaches customers, money or safety"),
        ),
    ),
    Question(
        "ml_maturity",
        "How experienced is the team with training models?",
        "RL loops (PPO, RLOO, GRPO) need people who have debugged one before.",
        (
            ("low", "fine-tuned a model by following a recipe, or not yet"),
            ("medium", "runs SFT routinely and reads its training curves"),
            ("high", "has run RL or reward-model training end to end"),
        ),
    ),
    Question(
        "feedback",
        "What feedback data do you have now?",
        "Each method needs a particular kind of signal; this answer weighs most.",
        (
            ("pairwise_preferences", "pairs of answers where a person picked the better one"),
            ("binary_feedback", "single answers marked good or bad (thumbs up/down)"),
            ("scalar_scores", "answers rated on a scale, e.g. 1-5 by reviewers"),
            ("verifiable_rewards", "a checker scores answers: tests, exact match, a solver"),
            ("demonstrations_only", "only examples of good answers, no judgements"),
        ),
    ),
    Question(
        "reward_model",
        "Is there a reward model?",
        "PPO and RLOO learn from a reward model; DPO and KTO do without one.",
        (
            ("none", "no reward model, and no plan or data to build one"),
            ("available", "a trained reward model scores answers today"),
            ("can_build", "the data and people to train one are at hand"),
        ),
    ),
    Question(
        "sft_done",
        "Has the model had supervised fine-tuning on your task?",
        "Preference methods start from an SFT checkpoint; ORPO folds SFT in.",
        (
            ("true", "yes: an SFT checkpoint on in-domain examples exists"),
            ("false", "no: the starting point is a base or general chat model"),
        ),
    ),
    Question(
        "priority",
        "What matters most to the business?",
        "Breaks ties between methods that the data and the team both allow.",
        (
            ("time_to_value", "something better in production within weeks"),
            ("cost", "the fewest GPU hours and the simplest pipeline"),
            ("control", "steering behaviour precisely, with an explicit reward"),
            ("quality", "the best possible model, whatever it takes"),
        ),
    ),
    Question(
        "model",
        "Which model will you align? (optional)",
        "A size (7b), a profile (llama-3.1-8b), a config.json, a model folder or a Hub id "
        "(org/name: plans from its config.json alone; launching needs a local folder with the "
        "weights). With the GPUs it lets the planner check each method fits.",
        placeholder="e.g. 7b, llama-3.1-8b — empty to skip",
    ),
    Question(
        "gpus",
        "Which GPUs will train it? (optional)",
        "COUNTx NAME, e.g. 1x a100-80gb or 8x h100-80gb.",
        placeholder="e.g. 1x a100-80gb — empty to skip",
    ),
)
"""The questions in the order the wizard asks them: the answers file's fields."""


def question(field: str) -> Question:
    """The question for an answers-file field."""
    return next(q for q in QUESTIONS if q.field == field)


def explanation(field: str, value: str) -> str:
    """The one-line meaning of an option (empty for free-text answers)."""
    return dict(question(field).options).get(value, "")


def answers_from_raw(raw: dict[str, str]) -> Answers:
    """Validated answers from the interview's raw strings (empty optional answers dropped)."""
    data: dict[str, Any] = {k: v for k, v in raw.items() if v not in (None, "")}
    if "sft_done" in data:
        data["sft_done"] = str(data["sft_done"]).lower() == "true"
    return answers_from_mapping(data, source="interview")


def raw_from_mapping(data: dict[str, Any]) -> dict[str, str]:
    """An answers mapping (as a file holds it) as the interview's raw strings."""
    raw: dict[str, str] = {}
    for q in QUESTIONS:
        value = data.get(q.field)
        if value is None:
            continue
        raw[q.field] = str(value).lower() if isinstance(value, bool) else str(value)
    return raw


def answers_yaml(answers: Answers) -> str:
    """The answers as a YAML file that `advisor recommend --answers` accepts."""
    import yaml  # imported here: only saving needs it

    data = answers.model_dump(mode="json", exclude_none=True)
    header = "# Interview answers written by the advisor wizard; `advisor recommend --answers`\n"
    return header + yaml.safe_dump(data, sort_keys=False)


def save_answers(answers: Answers, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the answers YAML to `path`; an existing file raises `FileExists` unless
    `overwrite`, and a path that cannot be written is the user's error."""
    return write_text(path, answers_yaml(answers), "answers file", overwrite=overwrite)

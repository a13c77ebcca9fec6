"""`advisor --help` and every command's help speak to the user: what it does, with examples."""

from __future__ import annotations

import contextlib
import io

import pytest

from advisor.cli import COMMANDS, build_parser, main


def _help(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0
    return out.getvalue()


def test_top_level_help_says_what_the_tool_does_with_examples():
    text = _help(["--help"])
    assert "choose an alignment method" in text
    assert "examples:" in text and "advisor plan --model 7b" in text
    assert "advisor.commands" not in text  # no developer notes


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_help_has_a_description_and_runnable_examples(command):
    text = _help([command, "--help"])
    description, _, examples = text.partition("examples:")
    assert examples, f"{command} --help shows no examples"
    assert len(description.split("\n\n", 1)[-1].split()) >= 8, "no description of the command"
    shown = [line.strip() for line in examples.splitlines() if line.strip().startswith("advisor")]
    assert shown
    for line in shown:
        args = line.split("#", 1)[0].split()[1:]
        if command == "wizard" and (not args or args[0].startswith("-")):
            args = ["wizard", *args]
        assert args[0] == command, line
        build_parser(command).parse_args(args)  # every flag shown exists (argparse exits if not)


def _flags(text: str) -> dict[str, str]:
    """Each flag in a command's help, with its help text (wrapped lines joined)."""
    flags: dict[str, str] = {}
    current = None
    for line in text.split("\noptions:\n", 1)[1].splitlines():
        if line.startswith("  -"):
            invocation, _, rest = line.strip().partition("  ")
            current = invocation.split()[0].rstrip(",")
            flags[current] = rest.strip()
        elif current and line.startswith("   "):
            flags[current] = f"{flags[current]} {line.strip()}".strip()
        else:
            current = None
    return flags


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_flag_of_every_command_has_a_help_line(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    flags = _flags(_help([command, "--help"]))
    assert flags
    assert [flag for flag, text in flags.items() if not text] == []


def test_plan_help_shows_the_defaults_the_plan_assumes(monkeypatch):
    from planner.specs import PlanRequest

    monkeypatch.setenv("COLUMNS", "200")
    flags = _flags(_help(["plan", "--help"]))
    d = PlanRequest()
    for name in ("model", "method", "tuning", "lora_rank", "lora_targets", "seq_len",
                 "batch_size", "grad_accum", "precision", "optimizer", "attention", "gpu",
                 "num_gpus", "nodes", "sharding", "offload", "ppo_epochs", "epochs"):  # fmt: skip
        value = getattr(d, name)
        shown = value.value if hasattr(value, "value") else value
        flag = "--" + name.replace("_", "-")
        assert f"(default: {shown}" in flags[flag], (flag, flags[flag])
    assert "(default: on)" in flags["--grad-checkpointing"]
    assert "8 for grpo" in flags["--num-generations"]


def test_validate_help_offers_its_own_defaults_not_the_flags_it_refuses(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    validate = _flags(_help(["validate", "--help"]))
    assert "--dry-run" not in validate and "--resume" not in validate
    assert "(default: 10)" in validate["--max-steps"]
    assert "--demo" in validate  # validate --demo measures the demo run
    launch = _flags(_help(["launch", "--help"]))
    assert {"--dry-run", "--resume", "--demo"} <= set(launch)

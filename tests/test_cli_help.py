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

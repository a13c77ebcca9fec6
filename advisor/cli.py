"""`advisor`: the command line. Each subcommand lives in `advisor.commands.<name>`."""

from __future__ import annotations

import argparse
import importlib
import sys

from planner.errors import InputError

# name -> one-line help; the module advisor.commands.<module> registers its own flags.
COMMANDS: dict[str, tuple[str, str]] = {
    "wizard": ("wizard", "open the interactive wizard (the default)"),
    "recommend": ("recommend", "rank alignment methods for an interview answers file"),
    "plan": ("plan", "estimate peak GPU memory and time for a training setup"),
    "probe": ("probe", "list the GPUs NVML sees"),
    "validate": ("validate", "run a short real step and compare it with the plan"),
    "launch": ("launch", "write a run folder and launch the training"),
    "check-data": ("check_data", "check a dataset against a method's format"),
}


class _Parser(argparse.ArgumentParser):
    """argparse that exits with status 2 and a one-line message on bad flags (its default)."""

    def error(self, message: str) -> None:  # pragma: no cover - argparse calls sys.exit
        self.exit(2, f"advisor: error: {message}\n")


def _load(module: str):
    return importlib.import_module(f"advisor.commands.{module}")


def build_parser(command: str | None) -> argparse.ArgumentParser:
    """The parser, with only the named subcommand's flags loaded (keeps start-up fast)."""
    parser = _Parser(prog="advisor", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", parser_class=_Parser)
    for name, (module, help_text) in COMMANDS.items():
        if name == command:
            _load(module).register(subparsers.add_parser(name, help=help_text))
        else:
            subparsers.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv.insert(0, "wizard")  # `advisor --answers FILE` passes the flag to the wizard
    command = next((a for a in argv if not a.startswith("-")), None)
    if command is None and not any(a in ("-h", "--help") for a in argv):
        argv.insert(0, "wizard")
        command = "wizard"
    if command is not None and command not in COMMANDS:
        print(
            f"advisor: error: unknown command {command!r}; choose from {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    parser = build_parser(command)
    args = parser.parse_args(argv)
    try:
        return int(_load(COMMANDS[args.command][0]).run(args) or 0)
    except InputError as error:
        print(f"advisor: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

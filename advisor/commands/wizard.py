"""`advisor` / `advisor wizard [--answers FILE]`: the interactive wizard (Textual)."""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    """Add the wizard's flags."""
    parser.add_argument(
        "--answers",
        metavar="FILE",
        help="pre-fill the interview from an answers file (YAML or JSON); missing fields are asked",
    )


def check_partial_answers(data: object, source: str) -> dict:
    """The answers a file gives, checked as `advisor recommend` checks them (InputError if bad),
    except that missing fields are allowed: the interview asks for them."""
    from advisor.decision.answers import SCENARIO_KEYS, Answers, answers_from_mapping, valid_values

    if not isinstance(data, dict):
        answers_from_mapping(data, source=source)  # raises, saying what a file should hold
    given = {k: v for k, v in data.items() if k not in SCENARIO_KEYS}  # type: ignore[union-attr]
    stand_ins = {
        name: (valid_values(name) or ["x"])[0]
        for name, field in Answers.model_fields.items()
        if field.is_required() and name not in given
    }
    answers_from_mapping({**stand_ins, **given}, source=source)
    return given


def run(args: argparse.Namespace) -> int:
    """Check the answers file (if any) before the screen changes, then run the wizard."""
    answers = None
    if args.answers:
        from advisor.decision.answers import read_answers_file
        from planner.files import shown

        answers = check_partial_answers(read_answers_file(args.answers), shown(args.answers))
    from advisor.wizard.app import WizardApp

    WizardApp(answers=answers, answers_path=args.answers).run()
    return 0

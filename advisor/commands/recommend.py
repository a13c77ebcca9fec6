"""`advisor recommend --answers FILE [--json] [--report FILE.md [--force]]`: rank alignment methods."""

from __future__ import annotations

import argparse
import sys


def register(parser: argparse.ArgumentParser) -> None:
    """Add the recommend flags."""
    parser.add_argument(
        "--answers",
        required=True,
        metavar="FILE",
        help="interview answers, YAML or JSON (see profiles/scenarios/ for examples)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the recommendation as JSON (method, ranking with each effect, rationale, caveats)",
    )
    parser.add_argument(
        "--report", metavar="FILE.md", help="also write a Markdown decision record to this file"
    )
    parser.add_argument(
        "--force", action="store_true", help="let --report overwrite an existing file"
    )


def run(args: argparse.Namespace) -> int:
    """Load the answers, decide, print the recommendation, and write the record if asked."""
    from advisor.decision.answers import load_answers
    from advisor.decision.decide import decide

    if args.report and not args.force:
        from advisor.decision.output_file import FileExists, existing_file
        from advisor.views.decision_record import FORCE_HINT
        from planner.files import shown

        # Refused before deciding, so the user is not shown a recommendation that was not saved.
        if existing_file(args.report, "--report"):
            raise FileExists(f"--report {shown(args.report)}: the file exists; {FORCE_HINT}")
    recommendation = decide(load_answers(args.answers))
    if args.report:
        from advisor.views.decision_record import write_decision_record

        path = write_decision_record(
            recommendation, args.report, source=args.answers, overwrite=args.force
        )
    if args.json:
        import json

        from advisor.views.reasons import recommendation_json

        payload = recommendation_json(recommendation)
        sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    else:
        from rich.console import Console

        from advisor.views.recommend_view import render_recommendation

        Console().print(render_recommendation(recommendation))
    if args.report:
        print(f"decision record written to {path}", file=sys.stderr if args.json else sys.stdout)
    return 0

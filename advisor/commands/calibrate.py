"""`advisor calibrate show | import FILE... | reset`: the store of measured runs that corrects
the planner's runtime overhead (planner.calibration says what is learned and how)."""

from __future__ import annotations

import argparse
import json
import sys

from planner.errors import InputError


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=["show", "import", "reset"],
        help="show what the store learned; import records from other stores or run folders; "
        "reset (remove the store file)",
    )
    parser.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="import: calibration stores (.jsonl) or run folders (validation.json + manifest.json)",
    )
    parser.add_argument(
        "--calibration",
        metavar="FILE",
        help="the store to use (default: $ADVISOR_CALIBRATION, else "
        "~/.cache/alignment-advisor/calibration.jsonl)",
    )
    parser.add_argument("--json", action="store_true", help="show: print the summary as JSON")


def _show(args: argparse.Namespace) -> int:
    from planner.calibration import groups, read_store, store_path

    path = store_path(args.calibration)
    rows = groups(read_store(path))
    if args.json:
        sys.stdout.write(json.dumps({"store": str(path), "groups": rows}) + "\n")
        return 0
    from advisor.views.calibration_view import print_calibration

    print_calibration(str(path), rows)
    return 0


def _import(args: argparse.Namespace) -> int:
    from planner.calibration import append_records, read_store, records_to_import, store_path

    if not args.files:
        raise InputError("calibrate import: name the stores (.jsonl) or run folders to import")
    read_store(args.calibration)  # a malformed store is refused before anything is added to it
    found = [(name, records_to_import(name)) for name in args.files]  # all checked, then added
    path = store_path(args.calibration)
    try:
        append_records([record for _, records in found for record in records], path)
    except OSError as error:
        raise InputError(f"cannot write calibration store {path}: {error.strerror}") from None
    for name, records in found:
        count = f"{len(records)} record" + ("s" if len(records) != 1 else "")
        print(f"imported {count} from {name}")
    print(f"into {path}")
    return 0


def _reset(args: argparse.Namespace) -> int:
    from planner.calibration import reset_store, store_path

    removed = reset_store(args.calibration)
    if removed is None:
        print(f"no calibration store at {store_path(args.calibration)}: nothing removed")
    else:
        print(f"removed {removed}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.files and args.action != "import":
        raise InputError(f"calibrate {args.action} takes no files (only `calibrate import` does)")
    if args.json and args.action != "show":
        raise InputError("--json goes with `calibrate show`")
    return {"show": _show, "import": _import, "reset": _reset}[args.action](args)

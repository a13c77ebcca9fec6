"""`advisor preflight RUN_DIR`: the cluster check, run on every node before a long job."""

from __future__ import annotations

import argparse
import sys

from runners.cluster_check import DEFAULT_TIMEOUT


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder `advisor launch` wrote")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the report as one JSON object (on node 0; the other nodes print their verdict "
        "on stderr)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help="seconds to wait for the rendezvous and for the other nodes",
    )


def run(args: argparse.Namespace) -> int:
    from runners.cluster_check import check_node

    report = check_node(args.run_dir, timeout=args.timeout)
    if report.node_rank != 0 and report.records:
        # Every node judges the same records; node 0 prints them, the others their verdict.
        verdict = "ok" if report.ok else f"{len(report.problems)} problem(s), listed on node 0"
        print(f"advisor preflight: node {report.node_rank}: {verdict}", file=sys.stderr)
        return 0 if report.ok else 1
    if args.json:
        sys.stdout.write(report.model_dump_json() + "\n")
    else:
        from advisor.views.cluster_view import print_cluster_report

        print_cluster_report(report)
    return 0 if report.ok else 1

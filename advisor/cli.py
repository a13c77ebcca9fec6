"""Alignment Advisor: choose an alignment method (DPO, PPO, GRPO, KTO, ...) for a model after
supervised fine-tuning, check that it fits your GPUs and how long it takes, then run it with TRL.

examples:
  advisor                                              open the wizard (all three steps)
  advisor recommend --answers my-team.yaml             rank the methods, with every reason
  advisor plan --model 7b --method dpo --gpu h100      peak memory per GPU and step time
  advisor plan --model 70b --fit                       the fastest setup that fits your GPUs
  advisor launch --demo --method kto                   a tiny run of any method here

`advisor COMMAND --help` shows each command's flags and examples.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from planner.errors import InputError

# name -> (module, one-line help); the module advisor.commands.<module> registers its flags.
COMMANDS: dict[str, tuple[str, str]] = {
    "wizard": ("wizard", "open the interactive wizard (the default)"),
    "recommend": ("recommend", "rank alignment methods for an interview answers file"),
    "plan": ("plan", "estimate peak GPU memory and time for a training setup"),
    "probe": ("probe", "list the GPUs NVML sees"),
    "validate": ("validate", "run a short real step and compare it with the plan"),
    "launch": ("launch", "write a run folder and launch the training"),
    "check-data": ("check_data", "check a dataset against a method's format"),
    "preflight": ("preflight", "check every node of a cluster before a long run"),
    "calibrate": ("calibrate", "show, import or reset the measured runs plans learn from"),
}

EXAMPLES: dict[str, str] = {
    "wizard": """\
Walks through the interview, the recommendation, the plan and the launch, one screen each.

examples:
  advisor
  advisor --answers profiles/scenarios/support-copilot.yaml   # start from saved answers""",
    "recommend": """\
Ranks SFT, DPO, PPO, GRPO, RLOO, KTO, ORPO and SimPO for your team's answers (use case, risk,
ML maturity, feedback data, GPUs), with the points behind every rank and the caveats.

examples:
  advisor recommend --answers profiles/scenarios/support-copilot.yaml
  advisor recommend --answers my-team.yaml --json
  advisor recommend --answers my-team.yaml --report decision.md   # a record for a review board""",
    "plan": """\
Estimates peak memory per GPU and time per step for the whole training loop of a method
(reference, reward and value models, rollouts), for full tuning, LoRA or QLoRA, any sharding.

examples:
  advisor plan --model 7b
  advisor plan --model llama-3.1-8b --method ppo --gpu h100 --num-gpus 8 --sharding zero3
  advisor plan --model 70b --method dpo --fit --objective gpus   # fewest GPUs that fit
  advisor plan --model ./my-sft-model/config.json --tuning lora --json""",
    "probe": """\
Lists the NVIDIA GPUs (and MIG instances) on this machine, their memory in use and the
matching GPU profile, or says plainly why there are none.

examples:
  advisor probe
  advisor probe --json""",
    "validate": """\
Runs the planned setup for a few steps, samples the GPUs while it trains, and prints the
estimated against the measured peak memory and step time.

examples:
  advisor validate --method dpo --model ./my-sft-model --dataset pairs.jsonl --tuning lora""",
    "launch": """\
Writes a run folder (TRL, accelerate and DeepSpeed configs, the plan, a command to rerun it)
before anything starts, checks the data, then runs the training and shows it live.

examples:
  advisor launch --demo                                  # tiny local model, DPO, under a minute
  advisor launch --method dpo --model ./my-sft-model --dataset pairs.jsonl --tuning lora --dry-run
  advisor launch --plan plan.json --model ./my-sft-model --dataset pairs.jsonl
  advisor launch --from runs/dpo-20261129-101500 --learning-rate 1e-6   # a fresh copy, one change
  advisor launch --resume runs/dpo-20261129-101500        # continue from the last checkpoint
  advisor launch --demo --method grpo --report-to tensorboard   # another method, logs to a tracker""",
    "check-data": """\
Checks a dataset against what the method's TRL trainer expects: columns, empty or identical
pairs, duplicates, token lengths and truncation, chat template.

examples:
  advisor check-data --dataset pairs.jsonl --method dpo --model ./my-sft-model""",
    "preflight": """\
Run on every node before a long job, with the same launcher: starts the run's ranks, checks
that every rank has the same Python / torch / CUDA / NCCL / TRL / accelerate / DeepSpeed versions,
that the rendezvous answers, each GPU's free memory against the plan's peak, the host memory the
plan's offload needs, peer-to-peer access between GPUs (without it, NCCL_P2P_DISABLE=1 is written
into RUN_DIR/preflight.env, which command.sh sources), and times an all-reduce against the
interconnect the plan assumes. The node comes from MACHINE_RANK (or SLURM_NODEID), the
rendezvous from MASTER_ADDR / MASTER_PORT. Exit status 0: ok, 1: problems found.

examples:
  advisor preflight runs/dpo-20261129-101500                 # one node
  srun advisor preflight runs/dpo-20261129-101500            # every node of a SLURM job
  MACHINE_RANK=1 MASTER_ADDR=10.0.0.1 advisor preflight RUN_DIR --json""",
    "calibrate": """\
Every GPU run of `advisor validate` or `advisor launch` records its measured peak memory in a
calibration store; plans for the same GPU and software stack correct their runtime overhead by
it (never the tensor estimate). The store is $ADVISOR_CALIBRATION, --calibration FILE, or
~/.cache/alignment-advisor/calibration.jsonl.

examples:
  advisor calibrate show
  advisor calibrate import team-calibration.jsonl runs/validate/dpo-20261129-101500
  advisor calibrate show --calibration team-calibration.jsonl --json
  advisor calibrate reset""",
}


class _Parser(argparse.ArgumentParser):
    """argparse that exits with status 2 and a one-line message on bad flags (its default)."""

    def error(self, message: str) -> None:  # pragma: no cover - argparse calls sys.exit
        self.exit(2, f"advisor: error: {message}\n")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written; a flag's help ends with its default, if it has one
    (argparse's ArgumentDefaultsHelpFormatter also prints `None` and `False`)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        default = action.default
        if (
            not text
            or not action.option_strings
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or "(default" in text
        ):
            return text
        shown = "on" if default is True else str(default).replace("%", "%%")
        return f"{text} (default: {shown})"


def _load(module: str):
    return importlib.import_module(f"advisor.commands.{module}")


def build_parser(command: str | None) -> argparse.ArgumentParser:
    """The parser, with only the named subcommand's flags loaded (keeps start-up fast)."""
    raw = _HelpFormatter
    parser = _Parser(prog="advisor", description=__doc__, formatter_class=raw)
    subparsers = parser.add_subparsers(dest="command", parser_class=_Parser)
    for name, (module, help_text) in COMMANDS.items():
        if name == command:
            sub = subparsers.add_parser(
                name, help=help_text, description=EXAMPLES[name], formatter_class=raw
            )
            _load(module).register(sub)
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

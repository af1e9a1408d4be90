"""``python -m benchmarks COMMAND``: the research benchmark's command line (run from the repository root).

Commands: ``demo`` (the offline demo), ``study`` (the benchmark: tune on validation, confirm on fresh seeds;
resumable), ``report`` (its tables and figure from the committed records), ``regret`` (the sweep-free recipe's and the
other arms' test regret against the tuned standard arm, with the issue's targets), ``pretrain`` (the small models'
source pretraining and its check) and ``sweep`` (the learning-rate sweep that chose their recipes).
"""

from __future__ import annotations

import argparse
import sys

from . import demo_cli, pretrain_cli

#: Commands whose own parser reads the rest of the command line: `python -m benchmarks study ...` is
#: `python -m benchmarks.study ...`.
DELEGATED = {
    "study": ("benchmarks.study", "Run (or resume) a study: tune every arm on validation, confirm on fresh seeds."),
    "report": ("benchmarks.study_report", "The study's tables and difference plot from its records (--doc DOC)."),
    "regret": ("benchmarks.regret", "Each arm's test regret against the tuned standard arm (--doc DOC, --plot PNG)."),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in DELEGATED:
        import importlib

        return int(importlib.import_module(DELEGATED[argv[0]][0]).main(argv[1:]) or 0)
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="The hf-plasticity research benchmark.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo_cli.register(subparsers)
    for name, (_, help_text) in DELEGATED.items():
        subparsers.add_parser(name, help=help_text, add_help=False)
    pretrain_cli.register(subparsers)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ValueError as error:  # bad input: one line, exit 2 (the commands check everything before writing)
        print(f"python -m benchmarks {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

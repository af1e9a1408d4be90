"""The `hf-plasticity` command line: each sub-command lives in its own module under `hf_plasticity.commands`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Sub-command modules, in help order. A module that is not present yet (optional extras) is skipped.
COMMANDS = ("example", "prepare", "diagnose", "bench", "demo")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available sub-command registered."""
    from .version import __version__

    parser = argparse.ArgumentParser(
        prog="hf-plasticity",
        description="Restore the plasticity of pretrained image classifiers before fine-tuning.",
    )
    parser.add_argument("--version", action="version", version=f"hf-plasticity {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"hf_plasticity.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name == f"hf_plasticity.commands.{name}":
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

"""The `hf-plasticity` command line: each sub-command lives in its own module of `hf_plasticity.cli`."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

from ._common import install_hint

# Sub-command modules, in help order. A module that is not present yet (optional extras) is skipped.
COMMANDS = ("example", "prepare", "diagnose", "compare")
#: The optional extra each command needs beyond the base install (checked before the command starts), and the
#: packages each extra brings.
EXTRAS: dict[str, str] = {"compare": "compare"}
EXTRA_PACKAGES = {  # smallest first: a missing package is reported with the first extra that brings it
    "plot": ("matplotlib",),
    "compare": ("scipy", "matplotlib", "accelerate"),
}


def _missing(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is None
    except (ImportError, ValueError):  # e.g. a module set to None in sys.modules
        return True


def _extra_error(command: str, extra: str, missing: str) -> int:
    print(
        f'hf-plasticity {command}: error: needs the "{extra}" extra ({missing} is missing): {install_hint(extra)}',
        file=sys.stderr,
    )
    return 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available sub-command registered."""
    from ..core.version import __version__

    parser = argparse.ArgumentParser(
        prog="hf-plasticity",
        description="Restore the plasticity of pretrained image classifiers before fine-tuning.",
    )
    parser.add_argument("--version", action="version", version=f"hf-plasticity {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"hf_plasticity.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name == f"hf_plasticity.cli.{name}":
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
    extra = EXTRAS.get(args.command)
    missing = [p for p in EXTRA_PACKAGES[extra] if _missing(p)] if extra else []
    if missing:  # before anything is read or written
        return _extra_error(args.command, extra, missing[0])
    try:
        return int(args.func(args) or 0)
    except ModuleNotFoundError as error:  # an optional package a command needs for one option (diagnose --plot)
        missing_name = (error.name or "").split(".")[0]
        extra = next((e for e, packages in EXTRA_PACKAGES.items() if missing_name in packages), None)
        if extra is None:
            raise
        return _extra_error(args.command, extra, missing_name)


if __name__ == "__main__":
    sys.exit(main())

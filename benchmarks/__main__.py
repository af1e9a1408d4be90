"""``python -m benchmarks COMMAND``: the research benchmark's command line (run from the repository root).

Commands: ``bench`` (version 1's runner, kept to rebuild its archived tables) and ``demo`` (the offline demo).
"""

from __future__ import annotations

import argparse
import sys

from . import bench_cli, demo_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="The hf-plasticity research benchmark.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench_cli.register(subparsers)
    demo_cli.register(subparsers)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

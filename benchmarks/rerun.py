"""Re-run committed runs of a results file on this machine and say whether they train the same bits.

A CPU run is deterministic on one machine, but two machines (other CPU kernels, or a bench source pretrained again)
may train other bits, and a pair pairs its seeds as if they did not. Before resuming a pair on a new machine, re-run a
few of its runs here: identical curves (validation accuracy and training loss, every epoch) mean this machine and
its cached source give what the pair's runs were given; a difference means they do not, and the pair should not be
resumed here (`benchmarks.source_identity` refuses another source, not other kernels).

Run from the repository root (a run takes seconds to a minute on one core)::

    python -m benchmarks.rerun benchmarks/results/v3/convnext_tiny__textures.jsonl 0 210 345

The numbers are the runs' line numbers in the file (0 is the first). Exits 1 when a run differs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import study

#: What has to match, every epoch, for two runs to count as the same bits.
COMPARED = ("val_acc", "train_loss", "test_acc")


def rerun(path: str | Path, line: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The committed run on line ``line`` of ``path`` and the same run made here now (recorded nowhere).

    Raises:
        ValueError: a line that is not in the file, or a run whose configuration this code would key differently.
    """
    path = Path(path)
    lines = path.read_text().splitlines()
    if not 0 <= line < len(lines):
        raise ValueError(f"{path} has lines 0 to {len(lines) - 1}; got {line}.")
    committed = json.loads(lines[line])
    protocol = {key: tuple(v) if isinstance(v, list) else v for key, v in study.folder_protocol(path.parent).items()}
    empty = tempfile.mkdtemp()  # the run's results folder: no run there to copy curves from, so it trains
    settings = study.StudySettings(
        models=[committed["model"]], targets=[committed["target"]], results=empty, **protocol
    )
    arm = study.ARMS[committed["arm"]]
    if arm.held_out:
        from .held_out import read_held_out

        arm = study.resolve_held_out(arm, read_held_out(path.parent), committed["model"], committed["target"],
                                     committed["budget"])  # fmt: skip
    task = study.make_task(settings, committed["model"], committed["target"], arm, committed["knobs"],
                           committed["budget"], committed["phase"], committed["seed"])  # fmt: skip
    if task["config"] != committed["config"]:
        raise ValueError(f"{path}:{line} has configuration {committed['config']}; this code keys it {task['config']}.")
    try:
        return committed, study.run_one(task)
    finally:
        shutil.rmtree(empty)


def same_bits(committed: dict[str, Any], again: dict[str, Any]) -> bool:
    """Whether two runs agree on every epoch of `COMPARED`."""
    return all(committed.get(key) == again.get(key) for key in COMPARED)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rerun", description=__doc__.split("\n")[0])
    parser.add_argument("results_file", help="A <model>__<target>.jsonl file of a results folder.")
    parser.add_argument("lines", nargs="+", type=int, help="Line numbers of the runs to re-run (0: the first).")
    args = parser.parse_args(argv)
    differ = 0
    for line in args.lines:
        committed, again = rerun(args.results_file, line)
        same = same_bits(committed, again)
        differ += not same
        name = f"{committed['arm']} {committed['phase']} {committed['budget']} seed {committed['seed']}"
        print(f"line {line} ({name}): {'identical' if same else 'DIFFERENT'}, final validation "
              f"{committed['val_acc'][-1]:.4f} committed, {again['val_acc'][-1]:.4f} here", flush=True)  # fmt: skip
    print(f"{len(args.lines) - differ} of {len(args.lines)} runs train the same bits here.")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())

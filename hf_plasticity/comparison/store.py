"""The comparison's result store: one JSON record per finished run, appended to ``runs.jsonl``.

A run is identified by its key (phase, arm, learning rates, seed; an untuned arm's key has no learning rates: its run
chooses them); a comparison that was killed continues where it stopped by skipping every run whose key is already
recorded. A half-written last line (the process died while writing it) is dropped when the store is opened, so the
next record starts on a line of its own.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .splits import ComparisonInputError

RUNS_FILE = "runs.jsonl"


def run_key(phase: str, arm: str, backbone_lr: float | None, own_lr: float | None, seed: int) -> str:
    """The identity of one run: ``"tune/restore/bb=0.0001/own=0.001/seed=1000"``, or without learning rates (None:
    the run chooses them) ``"confirm/recommended/seed=0"``."""
    if backbone_lr is None and own_lr is None:
        return f"{phase}/{arm}/seed={seed}"
    return f"{phase}/{arm}/bb={backbone_lr!r}/own={own_lr!r}/seed={seed}"


def _read(path: str) -> tuple[str, list[dict[str, Any]]]:
    """The file's text and its complete records (a half-written last line, with no newline, is left out).

    Raises:
        ComparisonInputError: for a complete line that is not a JSON record (the file was changed by something else
            than compare), naming the file and the line.
    """
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    complete = text if text.endswith("\n") or not text else text[: text.rfind("\n") + 1]
    records = []
    for number, line in enumerate(complete.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ComparisonInputError(
                f"{path!r}, line {number}, is not a JSON record ({error}): compare writes whole lines only, so the "
                "file was changed by something else. Remove or fix that line to resume, or pass --overwrite to start "
                "a new comparison."
            ) from error
    return text, records


def recorded_runs(directory: str) -> list[dict[str, Any]]:
    """The complete records in ``directory/runs.jsonl`` (none without the file), read without changing it."""
    path = os.path.join(directory, RUNS_FILE)
    return _read(path)[1] if os.path.isfile(path) else []


class RunStore:
    """The records of a comparison, in memory and (on the main process) in ``directory/runs.jsonl``.

    Args:
        directory: the comparison's output folder.
        write: whether this process writes the file (the main process of a distributed run; the others keep the same
            records in memory, since every process computes every run's metrics).
        read: whether to start from the records in the file (False: from none, as after ``--overwrite``).
    """

    def __init__(self, directory: str, write: bool = True, read: bool = True) -> None:
        self.path = os.path.join(directory, RUNS_FILE)
        self.write = write
        self.records: dict[str, dict[str, Any]] = {}
        if read and os.path.isfile(self.path):
            self._load()

    def _load(self) -> None:
        text, records = _read(self.path)
        for record in records:
            self.records.setdefault(record["key"], record)
        if self.write and not text.endswith("\n") and text:  # drop the half-written last line
            with open(self.path, "w", encoding="utf-8") as handle:
                handle.write(text[: text.rfind("\n") + 1])

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def add(self, record: dict[str, Any]) -> None:
        """Records one finished run (appended as one line, flushed and synced to disk)."""
        self.records[record["key"]] = record
        if self.write:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")
                handle.flush()
                os.fsync(handle.fileno())

    def phase(self, phase: str) -> list[dict[str, Any]]:
        """The records of one phase (``"tune"`` or ``"confirm"``), in the order they were recorded."""
        return [record for record in self.records.values() if record["phase"] == phase]

"""A comparison's output folder: what it holds (a comparison, nothing, or the user's files), whether the comparison
there is resumed, started afresh or refused ([`check_output`]; afresh: [`start_afresh`]), its ``settings.json``
([`recorded_settings`], [`save_settings`]) and the lock held while a comparison runs ([`output_lock`]).

A folder that holds a comparison with the same settings (model, data, splits, budget, grid, and the effective batch of
the launch) and the same model and data behind them (their identity: see [`identity`]) is resumed: runs already
recorded in ``runs.jsonl`` are skipped, so a killed comparison continues where it stopped, and one rerun with more
``seeds`` or another arm adds only the runs it lacks. Settings are compared as what they mean, not as typed: a local
path absolute and without a trailing separator, a learning-rate grid sorted (see [`ComparisonSettings`]); settings
saved by an earlier version are read the same way. ``overwrite`` is what starts afresh in a folder that holds a
comparison that cannot be resumed (other settings, another model or data behind the same paths, another effective
batch, records that name an arm by its earlier name (``recipe``, now ``restore``), ``recommended`` runs chosen by
another fit of the recipe's rule or ``lp_ft`` runs whose linear probe took another share of the epochs): it deletes
the comparison's own files (``runs.jsonl``, ``settings.json``, the report) and nothing else, and only in a folder that
holds a comparison (its ``settings.json`` marked as a comparison's, or an earlier version's beside a ``runs.jsonl``):
files of the user's that bear those names are never deleted or replaced. A folder that can be resumed is resumed,
with ``overwrite`` too (with a warning): rerunning a command that carries ``--overwrite`` after a kill continues
instead of discarding the finished runs. Without ``overwrite``, a folder that cannot be resumed is refused: old and new
runs are neither mixed nor rewritten.

One comparison at a time writes into a folder: [`output_lock`] holds an exclusive lock there (``LOCK_FILE``) for the
whole comparison, and a second process on the same folder is refused at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

from . import arms
from .arms import RENAMED_ARMS, other_probe_fractions, seeds_of_another_rule
from .identity import IDENTITY_KEY, comparable_identities, identity_differences
from .launch import is_main_process
from .report import CURVES_FILE, DIFFERENCES_FILE, REPORT_FILE, SUMMARY_FILE
from .runner import versions
from .settings import LAUNCH_KEYS, ComparisonSettings, comparable_settings
from .splits import ComparisonInputError
from .store import RUNS_FILE, recorded_runs

SETTINGS_FILE = "settings.json"
#: The lock file [`output_lock`] holds in the output folder while a comparison runs (removed when it ends).
LOCK_FILE = ".hf-plasticity-compare.lock"
OWN_FILES = (RUNS_FILE, SETTINGS_FILE, REPORT_FILE, SUMMARY_FILE, CURVES_FILE, DIFFERENCES_FILE)
#: The key that marks a ``settings.json`` as a comparison's, and the version of its layout.
MARKER, SCHEMA_VERSION = "hf_plasticity_compare", 1
#: The keys of ``settings.json`` as versions before the marker wrote it: with them and a ``runs.jsonl`` beside it, a
#: folder holds an earlier version's comparison.
UNMARKED_KEYS = frozenset(
    {"model", "data", "split", "val_split", "test_split", "val_fraction", "test_fraction", "split_seed",
     "max_train_samples", "epochs", "batch_size", "backbone_lrs", "own_lrs", "weight_decay", "warmup"}
)  # fmt: skip


def check_output(output: str, settings: ComparisonSettings, overwrite: bool, identity: dict[str, Any]) -> bool:
    """Decides what ``output`` is, without writing: returns True to resume the comparison it holds, False to start a
    new one (in a new or empty folder, or over a comparison that cannot be resumed, with ``overwrite``).

    Args:
        output: the output folder.
        settings: the comparison's settings (compared with the saved ones as [`comparable_settings`] spells them).
        overwrite: start afresh in a folder that holds a comparison that cannot be resumed; one that can be resumed
            is resumed all the same, with a warning (rerunning a command that carries ``--overwrite`` after a kill
            continues where it stopped).
        identity: the model's and the data's identity (``{"model": ..., "data": ...}``, see [`identity`]); a
            comparison recorded by an earlier version, without one, is resumed with a warning that it cannot be
            checked, and one whose data identity is of an earlier format (see [`comparable_identities`]) with a
            warning that the data's content is not checked this time.

    Raises:
        ComparisonInputError: for a file, a non-empty folder that holds no comparison, or one that cannot be resumed
            (other settings, another effective batch, another model or data behind the same paths, records that name
            an arm by an earlier name (``recipe``), ``recommended`` runs of another fit of the rule or ``lp_ft`` runs
            of another probe fraction), unless ``overwrite`` is on; even with it, for a folder that holds no
            comparison (see [`recorded_settings`]) but files bearing a comparison's file names, and for a
            ``settings.json`` that is not valid JSON.
    """
    if os.path.isfile(output):
        raise ComparisonInputError(f"Output {output!r} is a file; pass a directory.")
    if not os.path.isdir(output) or _holds_nothing(output):
        return False
    saved = recorded_settings(output)
    if saved is None:
        _refuse_foreign_folder(output, overwrite)
        return False
    runs = recorded_runs(output)  # read once for every check below
    try:
        _refuse_other_settings(output, saved, settings)
        _refuse_other_batch(output, saved, settings, runs)
        unchecked = _refuse_other_identity(output, saved.get(IDENTITY_KEY), identity)
        _refuse_renamed_arms(output, runs)
        _refuse_another_rule(output, runs, settings.epochs)
        _refuse_another_probe(output, runs)
    except ComparisonInputError:
        if overwrite:
            return False
        raise
    if overwrite:
        _warn_resumed_despite_overwrite(output)
    if saved.get(IDENTITY_KEY) is None:
        _warn_unchecked_identity(output)
    elif unchecked:
        _warn_unchecked_data_content(output)
    _warn_other_versions(output, runs)
    return True


def _holds_nothing(output: str) -> bool:
    """Whether the folder counts as empty: nothing in it but what compare itself leaves there for a moment (a
    temporary file [`write_settings`] left behind when it was killed, the lock of [`output_lock`])."""
    with os.scandir(output) as entries:
        return all(_stale_settings(entry.name) or entry.name == LOCK_FILE for entry in entries)


def _stale_settings(name: str) -> bool:
    """Whether ``name`` is a temporary file [`write_settings`] left behind when it was killed (the folder counts as
    empty beside it)."""
    return name.startswith(f".{SETTINGS_FILE}.") and name.endswith(".tmp")


def recorded_settings(output: str) -> dict[str, Any] | None:
    """The settings of the comparison ``output`` holds, or None when it holds none: a comparison's ``settings.json``
    carries the [`MARKER`] key, or (written by a version before the marker) all the [`UNMARKED_KEYS`] with a
    ``runs.jsonl`` beside it. A ``settings.json`` of any other kind is the user's.

    Raises:
        ComparisonInputError: when ``settings.json`` is not valid JSON (naming the file).
    """
    path = os.path.join(output, SETTINGS_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        saved = json.loads(text)
    except json.JSONDecodeError as error:
        raise ComparisonInputError(
            f"{path!r} is not valid JSON ({error}): it was not written whole by compare, nor is it anything compare "
            "can read. Remove or fix it, or pass another --output."
        ) from error
    if not isinstance(saved, dict):
        return None
    unmarked = UNMARKED_KEYS <= saved.keys() and os.path.isfile(os.path.join(output, RUNS_FILE))
    return saved if MARKER in saved or unmarked else None


def _refuse_foreign_folder(output: str, overwrite: bool) -> None:
    """Refuses a non-empty folder that holds no comparison: always without ``overwrite``, and with it when files
    there bear the comparison's file names (they are the user's: ``overwrite`` deletes and replaces only a
    comparison's own files)."""
    if not overwrite:
        raise ComparisonInputError(
            f"Output directory {output!r} exists and is not empty; pass --overwrite to write into it (or the folder "
            "of a comparison with the same settings, to resume it)."
        )
    taken = [name for name in OWN_FILES if os.path.exists(os.path.join(output, name))]
    if taken:
        raise ComparisonInputError(
            f"Output directory {output!r} is not empty and holds no comparison, but files named as a comparison's "
            f"({', '.join(taken)}): --overwrite deletes and replaces only the files of a comparison. Move them, or "
            "pass another --output."
        )


def _refuse_other_settings(output: str, saved: dict[str, Any], settings: ComparisonSettings) -> None:
    """Refuses a comparison with other settings (the launch's are checked by [`_refuse_other_batch`]), both spelled
    as [`comparable_settings`] spells them."""
    saved = comparable_settings(saved)
    differing = sorted(
        key for key, value in settings.to_dict().items() if key not in LAUNCH_KEYS and saved.get(key) != value
    )
    if differing:
        raise ComparisonInputError(
            f"Output directory {output!r} holds a comparison with other settings ({', '.join(differing)} "
            f"{'differs' if len(differing) == 1 else 'differ'}); pass --overwrite to start a new one there, or "
            "another --output."
        )


def _recorded_world_size(runs: list[dict[str, Any]]) -> int | None:
    """The number of processes that trained the recorded ``runs``, read from their ``device`` (``"cpu (x86_64) x
    2"``), when they all agree; None without runs or when it cannot be read."""
    sizes = set()
    for run in runs:
        _, _, count = str(run.get("device") or "").rpartition(" x ")
        if not count.isdigit():
            return None
        sizes.add(int(count))
    return sizes.pop() if len(sizes) == 1 else None


def _refuse_other_batch(
    output: str, saved: dict[str, Any], settings: ComparisonSettings, runs: list[dict[str, Any]]
) -> None:
    """Refuses a resume under a launch whose effective batch (processes x per-device batch) differs from the one the
    recorded runs were trained with: they took other optimizer steps, and would be pooled with the new runs in each
    arm. Settings saved before the effective batch was recorded are checked against the number of processes in their
    runs' ``device``."""
    before = saved.get("world_size")
    if not isinstance(before, int) or isinstance(before, bool):
        before = _recorded_world_size(runs)
    if before is None or before * settings.batch_size == settings.effective_batch:
        return
    raise ComparisonInputError(
        f"Output directory {output!r} holds a comparison trained with an effective batch of "
        f"{before * settings.batch_size} ({_processes(before)} x --batch-size {settings.batch_size}), and this launch "
        f"has {settings.effective_batch} ({_processes(settings.world_size)} x {settings.batch_size}): its runs took "
        "other optimizer steps, and the report would pool them with new ones. Resume it with "
        f"{_processes(before)}, or pass --overwrite to start a new comparison there, or another --output."
    )


def _processes(count: int) -> str:
    return f"{count} process{'es' if count != 1 else ''}"


def _refuse_other_identity(output: str, saved: dict[str, Any] | None, identity: dict[str, Any]) -> bool:
    """Refuses to resume a comparison whose model or data changed behind the same paths: its runs would mix with
    new ones. Returns whether the data's content went unchecked (an identity of an earlier format, see
    [`comparable_identities`]); nothing is checked without a saved identity (an earlier version's)."""
    if saved is None:
        return False
    saved, identity, unchecked = comparable_identities(saved, identity)
    differences = identity_differences(saved, identity)
    if differences:
        raise ComparisonInputError(
            f"Output directory {output!r} holds a comparison of another model or data behind the same paths "
            f"({'; '.join(differences)}); its runs would mix with new ones. Pass --overwrite to start a new "
            "comparison there, or another --output."
        )
    return unchecked


def _warn_resumed_despite_overwrite(output: str) -> None:
    """Warns that ``overwrite`` found a comparison that can be resumed, and resumes it."""
    warnings.warn(
        f"Output directory {output!r} holds this comparison (the same settings, model and data): it is resumed. "
        "--overwrite starts afresh only over a comparison that cannot be resumed; to discard its finished runs, "
        "delete the folder (or its runs.jsonl) first.",
        UserWarning,
        stacklevel=5,
    )


def _warn_unchecked_data_content(output: str) -> None:
    """Warns that the saved identity of the data is of an earlier format (split fingerprints that follow
    modification times, not a content hash): the rest was checked, the content is recorded from now on."""
    warnings.warn(
        f"Output directory {output!r} holds a comparison recorded by an earlier version of hf-plasticity, which "
        "identified local data by its `datasets` fingerprint (it follows the files' modification times): the model, "
        "the data's source, sizes and classes were checked, but not that the files hold the same bytes. A hash of "
        "their content is recorded from now on.",
        UserWarning,
        stacklevel=5,
    )


def _warn_unchecked_identity(output: str) -> None:
    """Warns that a comparison recorded by an earlier version holds no identity of its model and data to check (it is
    resumed, and its identity recorded from now on)."""
    warnings.warn(
        f"Output directory {output!r} holds a comparison recorded by an earlier version of hf-plasticity, without "
        "the identity of its model and data: this resume cannot check that they are the ones its runs were trained "
        "on. Their identity is recorded from now on.",
        UserWarning,
        stacklevel=5,
    )


def _refuse_renamed_arms(output: str, runs: list[dict[str, Any]]) -> None:
    """Refuses a comparison whose records name an arm by its old name: this version neither reads them under the new
    name (the old and new records would mix in one folder) nor rewrites the user's records."""
    renamed = sorted({run["arm"] for run in runs} & set(RENAMED_ARMS))
    if renamed:
        raise ComparisonInputError(
            f"Output directory {output!r} holds runs of the arm {renamed[0]!r}, recorded by an earlier version. "
            f"{RENAMED_ARMS[renamed[0]]} Pass --overwrite to start a new comparison there, or another --output."
        )


def _refuse_another_rule(output: str, runs: list[dict[str, Any]], epochs: float) -> None:
    """Refuses a comparison whose ``recommended`` runs were chosen by another fit of the recipe's rule: resumed, its
    report would pool runs of two rules in one arm."""
    seeds = seeds_of_another_rule(runs, epochs)
    if seeds:
        raise ComparisonInputError(
            f"Output directory {output!r} holds runs of the arm 'recommended' (seeds {', '.join(map(str, seeds))}) "
            "whose rates this version's rule (FITTED_RULE) would not choose from what their diagnostic pass read: "
            "they were recorded with another fit of the rule. Pass --overwrite to start a new comparison there, or "
            "another --output."
        )


def _refuse_another_probe(output: str, runs: list[dict[str, Any]]) -> None:
    """Refuses a comparison whose ``lp_ft`` runs spent another share of their epochs on the linear probe than this
    version's [`PROBE_FRACTION`] (a record without ``probe_fraction``, written before it was recorded, probed for
    [`FIRST_PROBE_FRACTION`]): the run key does not hold it, so resumed, its report would pool two kinds of LP-FT runs
    in one arm."""
    other = other_probe_fractions(runs)
    if other:
        recorded = ", ".join(f"{fraction:.4g}" for fraction in other)
        raise ComparisonInputError(
            f"Output directory {output!r} holds runs of the arm 'lp_ft' whose linear probe took another share of the "
            f"epochs ({recorded}) than this version's (PROBE_FRACTION {arms.PROBE_FRACTION:.4g}): the report would "
            "pool LP-FT runs of two probe lengths in one arm. Pass --overwrite to start a new comparison there, or "
            "another --output."
        )


def _warn_other_versions(output: str, runs: list[dict[str, Any]]) -> None:
    """Warns when runs of the comparison were recorded with other versions of the packages that train them: resumed,
    the report pools them with this process's runs in each arm."""
    now, other = versions(), {}
    for run in runs:
        for package, version in (run.get("versions") or {}).items():
            if now.get(package) != version:
                other.setdefault(package, set()).add(version)
    if other:
        then = "; ".join(
            f"{package} {', '.join(sorted(other[package]))} (now {now.get(package)})" for package in other
        )
        warnings.warn(
            f"Output directory {output!r} holds runs recorded with other versions ({then}): the report pools them "
            "with this run's in each arm, which is sound only if those versions train alike. To compare on this "
            "version alone, delete the folder (or its runs.jsonl), or pass another --output.",
            UserWarning,
            stacklevel=5,
        )


def _make_folder(output: str) -> list[str]:
    """Creates ``output`` and any missing folder above it; returns those it created, the deepest last.

    Raises:
        ComparisonInputError: when a folder cannot be created (naming it and why).
    """
    missing, folder = [], os.path.abspath(output)
    while not os.path.isdir(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    created = []
    for folder in reversed(missing):
        try:
            os.mkdir(folder)
        except FileExistsError:
            continue  # made meanwhile by another process: not ours to remove
        except OSError as error:
            _remove_empty(created)
            raise ComparisonInputError(
                f"Cannot create the output directory {output!r} ({error.strerror or error}: {folder!r}); pass "
                "another --output."
            ) from error
        created.append(folder)
    return created


def _remove_empty(created: list[str]) -> None:
    """Removes the folders [`_make_folder`] created, the deepest first, as long as they are empty."""
    for folder in reversed(created):
        try:
            os.rmdir(folder)
        except OSError:
            return


@contextlib.contextmanager
def output_lock(output: str) -> Iterator[None]:
    """Holds an exclusive lock on the output folder while the block runs: a second comparison on the same folder
    (a job submitted twice, a second terminal) is refused at once instead of training every run again beside the
    first and appending the same records.

    The lock is `filelock.FileLock` (``flock`` on POSIX: the system releases it when its process dies, so a killed
    comparison leaves no stale lock) on [`LOCK_FILE`] in ``output``, created (with any missing folder above it) on
    entry. On exit the lock file is removed while still held, and the folders created on entry are removed again if
    they are empty (a comparison refused before writing anything leaves nothing behind). Only the main process of a
    distributed launch takes it: the others write nothing.

    Raises:
        ComparisonInputError: when another process holds the lock (naming the folder and the lock file), or the
            folder cannot be created.
    """
    if not is_main_process():
        yield
        return
    from filelock import FileLock, Timeout

    created = _make_folder(output)
    path = os.path.join(output, LOCK_FILE)
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        _remove_empty(created)
        raise ComparisonInputError(
            f"Output directory {output!r} is in use by another compare process (it holds the lock {path!r}): two "
            "comparisons in one folder would train the same runs twice. Wait for it to finish (a killed process "
            "holds no lock; rerun then to resume), or pass another --output."
        ) from None
    except OSError as error:
        _remove_empty(created)
        raise ComparisonInputError(
            f"Cannot lock the output directory {output!r} ({error.strerror or error}: {path!r}); pass another "
            "--output."
        ) from error
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)  # while held: a process that opened it before sees it gone, filelock retries
        lock.release()
        _remove_empty(created)


def start_afresh(output: str) -> list[str]:
    """Starts a new comparison over the one ``output`` holds (what ``overwrite`` does where [`check_output`] returned
    False): deletes the comparison's own files ([`OWN_FILES`]: ``runs.jsonl``, ``settings.json``, the report and its
    figures) and nothing else. In a folder that holds no comparison (see [`recorded_settings`]) nothing is deleted:
    files there that bear those names are the user's ([`check_output`] refuses such a folder with ``overwrite``).

    Args:
        output: the output folder (it exists).

    Returns:
        `list[str]`: the names of the files deleted.

    Raises:
        ComparisonInputError: when ``settings.json`` is not valid JSON (naming the file).
    """
    if recorded_settings(output) is None:  # a comparison's files, never the user's
        return []
    deleted = []
    for name in OWN_FILES:
        path = os.path.join(output, name)
        if os.path.isfile(path):
            os.remove(path)
            deleted.append(name)
    return deleted


def save_settings(output: str, settings: ComparisonSettings, identity: dict[str, Any]) -> None:
    """Writes the comparison's ``settings.json`` into ``output`` ([`write_settings`]): ``settings``, marked as a
    comparison's ([`MARKER`], [`SCHEMA_VERSION`]), with the model's and the data's ``identity``, as
    [`recorded_settings`] and [`check_output`] read it back."""
    write_settings(output, {MARKER: SCHEMA_VERSION, **settings.to_dict(), IDENTITY_KEY: identity})


def write_settings(output: str, record: dict[str, Any]) -> None:
    """Writes ``record`` as ``output/settings.json`` in one step: into a temporary file in the same folder, synced,
    then moved over the old one (`os.replace`), so a kill or a failed write leaves the old file whole."""
    handle, temporary = tempfile.mkstemp(dir=output, prefix=f".{SETTINGS_FILE}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(record, stream, indent=2, sort_keys=True)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, os.path.join(output, SETTINGS_FILE))
    except BaseException:
        os.remove(temporary)
        raise

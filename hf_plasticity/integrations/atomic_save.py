"""Replacing the files of a checkpoint folder so that a crash, even a ``kill -9``, never leaves a mix of two saves.

Two protocols, chosen per save:

- **Swap** (the usual case). The new checkpoint is written into a staging folder next to the target
  (``.{name}.saving-XXXX``, same file system), the target's other files (anything the library does not write: logs,
  notes, subfolders) are hard-linked into it, and the two folders trade places in one ``renameat2(RENAME_EXCHANGE)``
  system call: a reader sees the complete old folder or the complete new one, never a mix. Where that call is missing
  (not Linux, or a file system without it), the target is first renamed to ``.{name}.replaced-XXXX`` and the staging
  folder then takes its name; a kill between those two renames leaves no target, and the next save (or
  [`recover`]) puts the right folder back: the new one, which was complete before the first rename.
- **Inside** (the target is a mount point, e.g. a container volume, lies on another device than its parent, or its
  parent is read-only: a mount point cannot be renamed; also when this process's working directory is in the target).
  The new files are written into ``.hf-plasticity-saving-XXXX`` inside the target, then a journal naming the files to
  move in and the stale ones to delete is renamed into that staging folder: that rename is the commit point. The files
  are then moved in with ``os.replace`` (weights first, ``config.json`` last). A kill before the commit leaves the old
  files untouched; a kill after it can leave a mix for a moment, which the next save completes from the journal before
  it starts (roll forward). A single folder cannot be swapped on such a target, so this is the strongest guarantee the
  file system allows there.

Any staging folder left by a killed save is recovered (above) or removed by the next save into the same target.
A swap gives the target a new inode: another process writing new files into the folder during the save loses them,
and one whose working directory is the folder keeps the old, deleted one.
Saves into one folder are serialized with an advisory lock (``flock`` on the parent folder, on the target in the inside
protocol), so a second save never removes the staging folder of one still running.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

#: Prefix of the staging folder inside the target (inside protocol) and the name of its commit journal.
INSIDE_PREFIX = ".hf-plasticity-saving-"
JOURNAL = "hf-plasticity-commit.json"


def staging_prefix(folder: Path) -> str:
    """Prefix of the staging folders of ``folder`` in its parent (swap protocol)."""
    return f".{folder.name}.saving-"


def replaced_prefix(folder: Path) -> str:
    """Prefix of the name an old folder briefly takes in the two-rename fallback of the swap protocol."""
    return f".{folder.name}.replaced-"


def check_save_directory(path: str | os.PathLike, argument: str = "save_directory") -> Path:
    """Checks, before any work, that ``path`` can become a checkpoint folder: not empty, not a file, and the folder
    (or, when it does not exist yet, its nearest existing parent) is a writable folder.

    Returns:
        `Path`: the absolute, resolved path.

    Raises:
        ValueError: naming ``argument``, the path and the problem.
    """
    if not isinstance(path, str | os.PathLike) or not os.fspath(path):
        raise ValueError(f"`{argument}` must be a folder path (a non-empty string or path), got {path!r}.")
    folder = Path(path).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"`{argument}` {str(path)!r} is a file, not a folder: pass a folder to write the checkpoint.")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"`{argument}` {str(path)!r} cannot be created: {str(existing)!r} is a file.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"`{argument}` {str(path)!r} is not writable: no write permission on {str(existing)!r}.")
    return folder


def _fsync(path: Path) -> None:
    """Flushes a file or folder to disk (so a power cut after the commit cannot lose what the commit names)."""
    with contextlib.suppress(OSError):  # some file systems cannot fsync a folder
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``folder`` (released when the process dies); nothing where flock is missing."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _exchange(source: Path, target: Path) -> bool:
    """Swaps two paths in one system call (Linux ``renameat2`` with ``RENAME_EXCHANGE``). Returns False when the
    system or the file system cannot do it; raises `OSError` for any other failure (e.g. ``EXDEV``)."""
    libc_rename = getattr(_libc(), "renameat2", None)
    if libc_rename is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if libc_rename(at_fdcwd, os.fsencode(source), at_fdcwd, os.fsencode(target), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(target))


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - Windows
        return None


def inside_protocol(folder: Path) -> bool:
    """Whether ``folder`` must be replaced file by file from inside: it cannot be renamed (a mount point, on another
    device than its parent, or its parent is not writable), or this process works inside it (a swap would leave the
    working directory pointing at the old, deleted folder)."""
    if not folder.is_dir():
        return False
    with contextlib.suppress(OSError):
        if Path.cwd().resolve().is_relative_to(folder):
            return True
    return (
        os.path.ismount(folder)
        or folder.stat().st_dev != folder.parent.stat().st_dev
        or not os.access(folder.parent, os.W_OK | os.X_OK)
    )


def recover(folder: Path) -> None:
    """Finishes or removes what a killed save left around ``folder`` (both protocols); see the module docstring."""
    parent = folder.parent
    if parent.is_dir():
        staging = {p.name.removeprefix(staging_prefix(folder)): p for p in parent.glob(staging_prefix(folder) + "*")}
        replaced = sorted(parent.glob(replaced_prefix(folder) + "*"))
        for old in replaced:
            if not folder.exists():  # killed between the two renames of the fallback swap
                new = staging.pop(old.name.removeprefix(replaced_prefix(folder)), None)
                os.rename(new if new is not None else old, folder)  # the new folder was complete: roll forward
            if old.exists():
                shutil.rmtree(old, ignore_errors=True)
        for path in staging.values():
            shutil.rmtree(path, ignore_errors=True)
    if folder.is_dir():
        for staging_inside in folder.glob(INSIDE_PREFIX + "*"):
            if (staging_inside / JOURNAL).is_file():
                _roll_forward(folder, staging_inside)
            shutil.rmtree(staging_inside, ignore_errors=True)


def _roll_forward(folder: Path, staging: Path) -> None:
    """Moves the files a committed journal names into ``folder`` and deletes the stale ones (idempotent)."""
    journal = json.loads((staging / JOURNAL).read_text(encoding="utf-8"))
    for name in journal["move"]:
        if (staging / name).exists():
            os.replace(staging / name, folder / name)
    for name in journal["delete"]:
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
    _fsync(folder)


def _link_tree(source: Path, target: Path) -> None:
    """``target`` holds the same files as ``source``, as hard links (copies where links are impossible)."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    if source.is_symlink():
        os.symlink(os.readlink(source), target)
    elif source.is_dir():
        shutil.copytree(source, target, symlinks=True, copy_function=link)
    else:
        link(str(source), str(target))


def _order(names: set[str]) -> list[str]:
    """The order files are moved in: weights and everything else first, ``config.json`` last."""
    return sorted(names, key=lambda name: (name == "config.json", name))


@contextlib.contextmanager
def replace_folder(folder: str | os.PathLike, *, keep: Callable[[str], bool], carry: tuple[str, ...] = ()):
    """Yields an empty staging folder; when the block ends without an error, its files replace those of ``folder``
    in one step (see the module docstring); on an error, ``folder`` is left exactly as it was and the staging folder
    is removed.

    Args:
        folder: the checkpoint folder (created when missing).
        keep: whether a file or folder already in ``folder`` that the new save did not write stays (False for a
            stale file of an earlier save, e.g. a weight shard the new checkpoint lacks).
        carry: names of files of ``folder`` copied into the staging folder first (e.g. the model card, which the
            new save updates instead of replacing).

    Returns:
        The staging folder (as the ``with`` target).
    """
    folder = Path(folder).resolve()
    folder.parent.mkdir(parents=True, exist_ok=True)
    inside = inside_protocol(folder)
    with _locked(folder if inside else folder.parent):
        recover(folder)
        if inside:
            staging = Path(tempfile.mkdtemp(prefix=INSIDE_PREFIX, dir=folder))
        else:
            staging = Path(tempfile.mkdtemp(prefix=staging_prefix(folder), dir=folder.parent))
        try:
            for name in carry:
                if (folder / name).is_file():
                    shutil.copy2(folder / name, staging / name)
            yield staging
            written = {p.name for p in staging.iterdir()}
            for name in written:
                _fsync(staging / name)
            if inside:
                _commit_inside(folder, staging, written, keep)
            else:
                _commit_swap(folder, staging, written, keep)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _stale(folder: Path, written: set[str], keep: Callable[[str], bool]) -> set[str]:
    if not folder.is_dir():
        return set()
    return {p.name for p in folder.iterdir() if p.name not in written and not keep(p.name)}


def _commit_inside(folder: Path, staging: Path, written: set[str], keep: Callable[[str], bool]) -> None:
    """The inside protocol's commit: the journal's rename is the commit point, then the files are moved in."""
    stale = _stale(folder, written, keep) - {staging.name}
    pending = staging / (JOURNAL + ".tmp")
    pending.write_text(json.dumps({"move": _order(written), "delete": sorted(stale)}), encoding="utf-8")
    _fsync(pending)
    os.replace(pending, staging / JOURNAL)
    _fsync(staging)
    _roll_forward(folder, staging)


def _new_folder_mode() -> int:
    """The permissions `os.mkdir` gives a new folder under the process's umask (0755 under the usual 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def _commit_swap(folder: Path, staging: Path, written: set[str], keep: Callable[[str], bool]) -> None:
    """The swap protocol's commit: the staging folder gets the target's other files, then the two trade places."""
    if not folder.exists():
        os.chmod(staging, _new_folder_mode())  # mkdtemp's 0700 would hide the checkpoint from other users
        os.rename(staging, folder)
        _fsync(folder.parent)
        return
    for name in sorted({p.name for p in folder.iterdir()} - written - _stale(folder, written, keep)):
        _link_tree(folder / name, staging / name)
    shutil.copystat(folder, staging)  # the folder keeps its permissions
    _fsync(staging)
    try:
        swapped = _exchange(staging, folder)
        if not swapped:
            old = folder.parent / (replaced_prefix(folder) + staging.name.removeprefix(staging_prefix(folder)))
            os.rename(folder, old)
            os.rename(staging, folder)
            staging = old
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EBUSY):
            raise
        # ``folder`` is a mount point that looked like a plain folder (a bind mount of the same file system): move
        # the new files in with the inside protocol instead.
        inside = Path(tempfile.mkdtemp(prefix=INSIDE_PREFIX, dir=folder))
        try:
            for name in written:
                _link_tree(staging / name, inside / name)
            _commit_inside(folder, inside, written, keep)
        finally:
            shutil.rmtree(inside, ignore_errors=True)
        return
    _fsync(folder.parent)
    shutil.rmtree(staging, ignore_errors=True)  # now the old folder

"""What a comparison's runs were trained on, beyond the paths the user typed: the model (the folder it was read from,
or its Hub id and the commit of the cached snapshot, and a sha256 of its config, image processor config and weights
files) and the data (the folder it was read from, or its Hub id, and per split its size and class names). A local
data folder (an imagefolder, or a folder written by `Dataset.save_to_disk`) is identified by its content: a sha256 of
the relative paths, sizes and bytes of the files `datasets` reads there ([`folder_content`]), so the same files
copied again (new modification times) are the same data, and other pixels or labels are not, whatever their
modification times. A Hub dataset is identified by each split's `datasets` fingerprint (which follows the files of
the revision loaded). Stored in ``settings.json`` and compared on resume, so a folder whose model or data changed
behind the same path is refused instead of mixing old runs with new ones.

Earlier versions identified a local data folder by the `datasets` fingerprint of each split, which for an imagefolder
follows its files' modification times: such a record cannot be compared with a content hash. A resume
over one (see [`comparable_identities`]) checks everything else (the model's files, the data's source, sizes and
classes), warns that the data's content could not be checked, and records the content hash from then on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any

from .splits import ComparisonInputError

#: The key of the identity in ``settings.json``.
IDENTITY_KEY = "identity"
#: The key of a local data folder's content hash in the data's identity (see [`folder_content`]).
CONTENT_KEY = "content"
#: The model files whose content identifies it (those `from_pretrained` reads; a sharded checkpoint's shards are
#: found through its index).
MODEL_FILES = (
    "config.json",
    "preprocessor_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
#: The files of a `save_to_disk` folder (per split folder) whose content is the data: its features, and the Arrow
#: files its ``state.json`` lists. Not ``state.json`` itself (the `datasets` fingerprint and format state of the
#: pipeline that wrote the rows: the same rows written by another pipeline are the same data), nor the
#: ``cache-*.arrow`` files `datasets` writes beside the data when a loaded split is shuffled, cast or split.
SAVED_INFO_FILES = ("dataset_info.json",)
#: From this many bytes on, hashing a data folder shows a progress bar.
PROGRESS_BYTES = 256 * 2**20
_CHUNK = 1 << 20


def file_sha256(path: str) -> str:
    """The sha256 of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _model_files(folder: str) -> list[str]:
    """The names of the model files in ``folder`` (see [`MODEL_FILES`]), with the shards an index names."""
    names = [name for name in MODEL_FILES if os.path.isfile(os.path.join(folder, name))]
    for index in [name for name in names if name.endswith(".index.json")]:
        with open(os.path.join(folder, index), encoding="utf-8") as handle:
            shards = set(json.load(handle).get("weight_map", {}).values())
        names += sorted(shard for shard in shards if os.path.isfile(os.path.join(folder, shard)))
    return names


def _cached_snapshot(repo_id: str) -> tuple[str | None, str | None]:
    """``(folder, commit)`` of the cached snapshot of Hub model ``repo_id`` that ``main`` points to (the one just
    loaded), read from the local cache without a network call; ``(None, None)`` when it is not cached."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo_id, "config.json")
    if not isinstance(path, str):
        return None, None
    folder = os.path.dirname(path)
    in_snapshots = os.path.basename(os.path.dirname(folder)) == "snapshots"
    return folder, os.path.basename(folder) if in_snapshots else None


def model_identity(model: str) -> dict[str, Any]:
    """The identity of an image classifier that was just loaded from ``model`` (a local folder or a Hub id).

    Returns:
        `dict`: ``source`` (the absolute folder, or the Hub id), ``revision`` (the Hub commit of the cached snapshot;
        None for a local folder or when unknown) and ``files`` (the sha256 of each of its [`MODEL_FILES`] there).
    """
    if os.path.isdir(model):
        folder, source, revision = model, os.path.abspath(model), None
    else:
        source = model
        folder, revision = _cached_snapshot(model)
    files = {name: file_sha256(os.path.join(folder, name)) for name in _model_files(folder)} if folder else {}
    return {"source": source, "revision": revision, "files": files}


def _ignored(name: str, is_dir: bool) -> bool:
    """Whether `datasets` skips this entry of a data folder: hidden files and folders (``.``), and folders starting
    with ``__`` (``__pycache__``)."""
    return name.startswith(".") or (is_dir and name.startswith("__"))


def _imagefolder_reads() -> Any:
    """A test of a file name: whether the `datasets` ImageFolder builder reads that file, by the builder's own lists
    (its image ``EXTENSIONS``, matched on the last or second-to-last extension in any case, its
    ``METADATA_FILENAMES``, and ``.zip`` archives, which it unpacks). A ``NOTES.txt`` or ``Thumbs.db`` beside the
    images is not read, so it is not part of the data."""
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    extensions = {extension.lower() for extension in ImageFolder.EXTENSIONS}
    metadata = set(getattr(ImageFolder, "METADATA_FILENAMES", ("metadata.csv", "metadata.jsonl", "metadata.parquet")))

    def reads(name: str) -> bool:
        root, extension = os.path.splitext(name)
        second = os.path.splitext(root)[1]
        return extension.lower() in extensions | {".zip"} or second.lower() in extensions or name in metadata

    return reads


def _data_files(folder: str) -> Iterator[tuple[str, str]]:
    """``(relative path with "/", absolute path)`` of every file `datasets` reads in an imagefolder ``folder`` (see
    [`_imagefolder_reads`]), recursively, in sorted order; folder links are followed once (a link back up is not
    walked again)."""
    seen = set()
    reads = _imagefolder_reads()

    def walk(directory: str, prefix: str) -> Iterator[tuple[str, str]]:
        real = os.path.realpath(directory)
        if real in seen:
            return
        seen.add(real)
        with os.scandir(directory) as entries:
            listed = sorted(entries, key=lambda entry: entry.name)
        for entry in listed:
            is_dir = entry.is_dir()
            if _ignored(entry.name, is_dir):
                continue
            if is_dir:
                yield from walk(entry.path, f"{prefix}{entry.name}/")
            elif entry.is_file() and reads(entry.name):
                yield f"{prefix}{entry.name}", entry.path

    yield from walk(folder, "")


def _saved_dataset_files(folder: str) -> list[tuple[str, str]]:
    """``(relative path, absolute path)`` of the files a `save_to_disk` folder's data consists of: its
    ``dataset_dict.json`` (the split names) and per split folder its [`SAVED_INFO_FILES`] and the Arrow files its
    ``state.json`` lists."""

    def split_files(prefix: str) -> list[str]:
        with open(os.path.join(folder, prefix, "state.json"), encoding="utf-8") as handle:
            state = json.load(handle)
        arrow = [entry["filename"] for entry in state.get("_data_files", []) if isinstance(entry, dict)]
        return [f"{prefix}{name}" for name in (*SAVED_INFO_FILES, *arrow)]

    if os.path.isfile(os.path.join(folder, "dataset_dict.json")):
        with open(os.path.join(folder, "dataset_dict.json"), encoding="utf-8") as handle:
            splits = json.load(handle).get("splits", [])
        relative = ["dataset_dict.json", *(path for split in splits for path in split_files(f"{split}/"))]
    else:
        relative = split_files("")
    existing = [path for path in relative if os.path.isfile(os.path.join(folder, path))]
    return [(path, os.path.join(folder, path)) for path in sorted(existing)]


@contextlib.contextmanager
def _unreadable(folder: str) -> Iterator[None]:
    """Within it, an `OSError` (a file that cannot be read, a folder that cannot be listed) becomes a
    [`ComparisonInputError`] naming the file and what to do: one line from the command line, not a traceback."""
    try:
        yield
    except OSError as error:
        where = error.filename or folder
        raise ComparisonInputError(
            f"Cannot read {where!r} to identify the data in {folder!r}: {error.strerror or error}. Every file "
            "`datasets` reads there is hashed; make it readable, or move it out of the data folder."
        ) from error


def folder_content(folder: str, *, saved: bool = False, progress: bool = False) -> dict[str, Any]:
    """The content of a local data folder: a sha256 over each file's relative path, size and bytes, in sorted order.
    For an imagefolder, the files `datasets` reads (its image and metadata files and ``.zip`` archives; hidden files
    and ``__`` folders skipped); for a
    `save_to_disk` folder (``saved``), the files its data consists of (see [`SAVED_INFO_FILES`]). Modification
    times, permissions and the folder's own path play no part: the same files copied anew have the same content, a
    changed pixel or label does not.

    Args:
        folder: the data folder.
        saved: whether it was written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`.
        progress: show a progress bar over the bytes read when there are [`PROGRESS_BYTES`] or more.

    Returns:
        `dict`: ``sha256`` (hex), ``files`` (how many) and ``bytes`` (their total size).

    Raises:
        ComparisonInputError: when a file cannot be read (naming it and what to do).

    Example:

    ```python
    >>> folder_content("path/to/images")  # doctest: +SKIP
    {'sha256': '3f2a...', 'files': 28, 'bytes': 26134}
    ```
    """
    with _unreadable(folder):
        listed = _saved_dataset_files(folder) if saved else list(_data_files(folder))
        files = [(relative, path, os.path.getsize(path)) for relative, path in listed]
    total = sum(size for _, _, size in files)
    from tqdm.auto import tqdm

    digest = hashlib.sha256()
    with tqdm(
        total=total, unit="B", unit_scale=True, desc="Hashing the data", leave=False,
        disable=not progress or total < PROGRESS_BYTES,
    ) as bar:  # fmt: skip
        for relative, path, size in files:
            digest.update(f"{relative}\0{size}\0".encode())
            read = 0
            with _unreadable(folder), open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(_CHUNK), b""):
                    digest.update(chunk)
                    read += len(chunk)
                    bar.update(len(chunk))
            if read != size:  # written to while hashed: the hash would not be the file's
                raise OSError(f"{path!r} changed size while it was hashed ({size} then {read} bytes).")
    return {"sha256": digest.hexdigest(), "files": len(files), "bytes": total}


def split_identity(dataset: Any, fingerprint: bool = True) -> dict[str, Any]:
    """One split's identity: its number of ``rows``, the ``classes`` of its label column and, with ``fingerprint``
    (a Hub dataset), its `datasets` ``fingerprint``."""
    from ..integrations.datasets_io import class_names

    identity = {"rows": len(dataset), "classes": class_names(dataset)}
    if fingerprint:
        identity["fingerprint"] = getattr(dataset, "_fingerprint", None)
    return identity


def data_identity(data: str, splits: dict[str, Any], *, progress: bool = False) -> dict[str, Any]:
    """The identity of the data: ``source`` (the absolute folder, or the Hub id), per split name, as loaded (before
    any split is carved from another), its [`split_identity`], and for a local folder its [`folder_content`] under
    [`CONTENT_KEY`].

    Args:
        data: the data as the command line loads it (an imagefolder or `save_to_disk` folder, or a Hub id).
        splits: the loaded splits by name.
        progress: show a progress bar while a large local folder is hashed.
    """
    from ..integrations.datasets_io import is_saved_dataset

    if not os.path.isdir(data):
        return {"source": data, "splits": {name: split_identity(split) for name, split in splits.items()}}
    return {
        "source": os.path.abspath(data),
        CONTENT_KEY: folder_content(data, saved=is_saved_dataset(data), progress=progress),
        "splits": {name: split_identity(split, fingerprint=False) for name, split in splits.items()},
    }


def comparable_identities(saved: dict[str, Any], current: dict[str, Any]) -> tuple[dict, dict, bool]:
    """``(saved, current, unchecked)``: the two identities as they can be compared. A saved identity of local data
    recorded before [`folder_content`] (split fingerprints, no content hash) cannot be compared with a content hash:
    both are left out, and ``unchecked`` is True (the data's content is not checked this time).

    Example:

    ```python
    >>> old = {"data": {"source": "/d", "splits": {"train": {"rows": 4, "classes": ["a", "b"], "fingerprint": "f"}}}}
    >>> new = {"data": {"source": "/d", "content": {"sha256": "e3b0"}, "splits": {"train": {"rows": 4,
    ...                                                                                       "classes": ["a", "b"]}}}}
    >>> saved, current, unchecked = comparable_identities(old, new)
    >>> unchecked, saved == current
    (True, True)
    ```
    """
    saved_data, current_data = saved.get("data"), current.get("data")
    if not (
        isinstance(saved_data, dict)
        and isinstance(current_data, dict)
        and CONTENT_KEY in current_data
        and CONTENT_KEY not in saved_data
    ):
        return saved, current, False
    splits = {name: _without(split, "fingerprint") for name, split in (saved_data.get("splits") or {}).items()}
    saved = {**saved, "data": {**saved_data, "splits": splits}}
    return saved, {**current, "data": _without(current_data, CONTENT_KEY)}, True


def _without(value: Any, key: str) -> Any:
    """A dict without ``key``; anything else as given."""
    return {k: v for k, v in value.items() if k != key} if isinstance(value, dict) else value


def _flatten(value: Any, path: str) -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{path} {key}"))
        return flat
    return {path: value}


def _shown(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return f"sha256 {value[:12]}..."
    return "absent" if value is None else repr(value)


def identity_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between two identities, one phrase each: ``"data splits train rows: 60 then, 180 now"``."""
    before, after = _flatten(saved, ""), _flatten(current, "")
    return [
        f"{path.strip()}: {_shown(before.get(path))} then, {_shown(after.get(path))} now"
        for path in sorted(before.keys() | after.keys())
        if before.get(path) != after.get(path)
    ]

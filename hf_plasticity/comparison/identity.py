"""What a comparison's runs were trained on, beyond the paths the user typed: the model (the folder it was read from,
or its Hub id and the commit of the cached snapshot, and a sha256 of its config, image processor config and weights
files) and the data (the folder it was read from, or its Hub id, and per split its size, class names and `datasets`
fingerprint). Stored in ``settings.json`` and compared on resume, so a folder whose model or data changed behind the
same path is refused instead of mixing old runs with new ones.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

#: The key of the identity in ``settings.json``.
IDENTITY_KEY = "identity"
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


def file_sha256(path: str) -> str:
    """The sha256 of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
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


def split_identity(dataset: Any) -> dict[str, Any]:
    """One split's identity: its number of ``rows``, the ``classes`` of its label column and its `datasets`
    ``fingerprint`` (which follows the data files of an imagefolder, including their modification times)."""
    from ..integrations.datasets_io import class_names

    return {
        "rows": len(dataset),
        "classes": class_names(dataset),
        "fingerprint": getattr(dataset, "_fingerprint", None),
    }


def data_identity(data: str, splits: dict[str, Any]) -> dict[str, Any]:
    """The identity of the data: ``source`` (the absolute folder, or the Hub id) and per split name, as loaded
    (before any split is carved from another), its [`split_identity`]."""
    source = os.path.abspath(data) if os.path.exists(data) else data
    return {"source": source, "splits": {name: split_identity(split) for name, split in splits.items()}}


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

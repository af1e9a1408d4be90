"""The restore record: what a restore did, as one typed [`RestoreRecord`].

The record is kept on the model and, as ``RestoreRecord.to_dict()``, in ``model.config.plasticity``, so
``save_pretrained`` writes it into ``config.json`` and a checkpoint loaded from the Hub still says what was
re-initialized. Every reader (the report, the card, the parameter groups, the training callback) goes through
[`restore_record`] and [`RestoreRecord.from_dict`], which validate what they read: a broken entry is named with its
source and what is wrong, an older one is upgraded where that is possible and refused clearly where it is not.

Schema versions:

- 1: records written before the schema was versioned (no ``schema_version``); the oldest lack ``redrawn``.
- 2: adds ``schema_version``, ``blocks`` (checkpoint names of the backbone blocks), ``diagnostics`` (overall numbers
  before and after) and ``versions``.
- 3: adds ``recipe`` (the [`FineTuneRecipe`] the learning rates came from, or absent), and the strategy ``"none"``
  for a record that holds a recipe without a restore. Records of schemas 1 and 2 read as having no recipe.
- 4: adds ``periodic`` (the resets periodic strategies made during training, [`PeriodicResets`], one entry per
  strategy and config; absent when there were none). A run with periodic resets but no one-shot restore leaves a
  record of strategy ``"none"`` that holds them. Records of schemas 1 to 3 read as having none. A record without
  periodic resets is still written as schema 3 ([`SCHEMA_WITHOUT_PERIODIC`]), so versions before 4 read it.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from .recipe import FineTuneRecipe
from .redrawn import check_redrawn
from .transaction import Transaction
from .unwrap import unwrap_model
from .version import VERSION_KEY, __version__

#: The attribute of a transformers config (and the key of ``config.json``) that holds the record.
MODEL_CONFIG_KEY = "plasticity"

RECORD_ATTR = "_hf_plasticity_record"
#: The schema this version writes; it reads every schema up to this one.
SCHEMA_VERSION = 4
#: The schema a record without periodic resets is written in: schema 4 only added ``periodic``, so such a record is
#: the same as a schema 3 one, and hf-plasticity versions that predate the field keep reading it.
SCHEMA_WITHOUT_PERIODIC = 3
#: The strategy of a record that holds a fine-tuning recipe or periodic resets but no one-shot restore
#: ([`record_recipe`] or [`record_periodic_reset`] on a model that was not restored): nothing was re-initialized
#: before training.
NO_RESTORE = "none"


class RecordError(ValueError):
    """A plasticity record (in ``config.json`` or on a model) is malformed, or cannot be used for what was asked."""


def library_versions() -> dict[str, str]:
    """The versions of hf-plasticity, torch and transformers that wrote a record."""
    versions = {"hf_plasticity": __version__}
    for package in ("torch", "transformers"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


@dataclass
class PeriodicResets:
    """The resets one periodic strategy (with one config) made during training: continual backprop, RIFLE, ReDo or
    selective re-initialization every n steps, shrink & perturb at given epochs, ... A part of [`RestoreRecord`]
    (its ``periodic`` list), kept apart from the one-shot restore the rest of the record describes.

    Attributes:
        strategy: the strategy name.
        config: the strategy's config as a dict (``PlasticityConfig.to_dict()``).
        resets: the periodic resets applied (a reset that found nothing to re-initialize counts too).
        total_reinitialized: parameter entries re-initialized over all of them (an entry written by two resets counts
            twice).

    Example:

    ```python
    >>> from hf_plasticity import PeriodicResets
    >>> resets = PeriodicResets("rifle", {"strategy": "rifle"}, resets=2, total_reinitialized=102)
    >>> PeriodicResets.from_dict(resets.to_dict()) == resets
    True
    ```
    """

    strategy: str
    config: dict[str, Any]
    resets: int
    total_reinitialized: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able dict stored in the record's ``periodic`` list."""
        return {
            "strategy": self.strategy,
            "config": dict(self.config),
            "resets": self.resets,
            "total_reinitialized": self.total_reinitialized,
        }

    @classmethod
    def from_dict(cls, data: Any) -> PeriodicResets:
        """Reads one entry of a record's ``periodic`` list.

        Raises:
            ValueError: naming the field that is missing or mistyped (a non-empty string ``strategy``, a dict
                ``config``, non-negative integers ``resets`` and ``total_reinitialized`` are accepted).
        """
        if not isinstance(data, dict):
            raise ValueError(f"an entry is a {type(data).__name__}, not a dict")
        for key in ("strategy", "config", "resets", "total_reinitialized"):
            if key not in data:
                raise ValueError(f"an entry lacks the `{key}` field")
        if not isinstance(data["strategy"], str) or not data["strategy"]:
            raise ValueError(f"an entry's `strategy` is {data['strategy']!r}, not a non-empty string")
        if not isinstance(data["config"], dict):
            raise ValueError(f"an entry's `config` is {data['config']!r}, not a dict")
        for key in ("resets", "total_reinitialized"):
            if not _is_int(data[key]) or data[key] < 0:
                raise ValueError(f"an entry's `{key}` is {data[key]!r}, not a non-negative integer")
        return cls(data["strategy"], dict(data["config"]), int(data["resets"]), int(data["total_reinitialized"]))


@dataclass
class RestoreRecord:
    """What one restore did: the record saved with a restored checkpoint.

    Attributes:
        strategy: the strategy name.
        config: the strategy's config as a dict (``PlasticityConfig.to_dict()``).
        reinitialized_per_block: re-initialized parameter entries per block, keyed by the block's checkpoint name
            (records of schema 1: by block index), and per module outside the blocks.
        total_reinitialized: re-initialized parameter entries in total.
        total_parameters: parameter entries of the model.
        redrawn: the parameters replaced by fresh draws, ``{"whole": [...], "partial": [...]}`` (in-memory module or
            parameter names), or None when the record predates this field and it cannot be derived: then
            [`plasticity_param_groups`] refuses a separate ``reinit_lr`` instead of silently giving none.
        blocks: the checkpoint names of the backbone's blocks in depth order (empty in records of schema 1).
        details: what the strategy decided beyond its config.
        diagnostics: the overall diagnostics, ``{"before": {...}, "after": {...}}`` (numbers only).
        versions: the library versions that wrote the record.
        recipe: the [`FineTuneRecipe`] that chose the fine-tune's learning rates (records of schema 3 on), or None.
        periodic: the resets periodic strategies made during training, one [`PeriodicResets`] per strategy and
            config, in the order they first acted (records of schema 4 on; empty when there were none). The fields
            above describe the one-shot restore alone (none: strategy ``"none"``).
        schema_version: the record's schema (see the module docstring).

    Example:

    ```python
    >>> from hf_plasticity.core.record import RestoreRecord
    >>> record = RestoreRecord.from_dict({"strategy": "reinit_layers", "config": {}, "total_parameters": 10,
    ...     "reinitialized_per_block": {"1": 4}, "total_reinitialized": 4, "redrawn": {"whole": ["layers.1"]}})
    >>> record.schema_version, record.redrawn
    (4, {'whole': ['layers.1'], 'partial': []})
    >>> RestoreRecord.from_dict(record.to_dict()) == record
    True
    ```
    """

    strategy: str
    config: dict[str, Any]
    reinitialized_per_block: dict[str, int]
    total_reinitialized: int
    total_parameters: int
    redrawn: dict[str, list[str]] | None = None
    blocks: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, dict[str, float]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=library_versions)
    recipe: FineTuneRecipe | None = None
    periodic: list[PeriodicResets] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    @property
    def share(self) -> float:
        """Re-initialized entries as a share of all parameter entries."""
        return self.total_reinitialized / self.total_parameters if self.total_parameters else 0.0

    @property
    def changed_model(self) -> bool:
        """Whether the restore changed the model (a second one then needs ``force=True``): a restore that looked and
        re-initialized nothing (``"auto"`` finding no block past the probe's peak) is recorded but does not block."""
        return self.total_reinitialized > 0

    def to_dict(self) -> dict[str, Any]:
        """The record as the JSON-able dict stored in ``model.config.plasticity`` / ``config.json``."""
        schema = self.schema_version if self.periodic else min(self.schema_version, SCHEMA_WITHOUT_PERIODIC)
        data: dict[str, Any] = {
            "schema_version": schema,
            "strategy": self.strategy,
            "config": dict(self.config),
            "reinitialized_per_block": dict(self.reinitialized_per_block),
            "total_reinitialized": self.total_reinitialized,
            "total_parameters": self.total_parameters,
            "blocks": list(self.blocks),
            "versions": dict(self.versions),
            "redrawn": None if self.redrawn is None else {key: list(names) for key, names in self.redrawn.items()},
        }
        if self.details:
            data["details"] = dict(self.details)
        if self.diagnostics:
            data["diagnostics"] = {key: dict(values) for key, values in self.diagnostics.items()}
        if self.recipe is not None:
            data["recipe"] = self.recipe.to_dict()
        if self.periodic:
            data["periodic"] = [entry.to_dict() for entry in self.periodic]
        return data

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "the plasticity record") -> RestoreRecord:
        """Reads a record, validating every field; a record of an older schema is upgraded.

        Args:
            data: the dict (``model.config.plasticity``, the ``plasticity`` entry of ``config.json``).
            source: where it was read from, for the error message (e.g. ``"ckpt/config.json ('plasticity')"``).

        Raises:
            RecordError: naming ``source`` and what is wrong: not a dict, a missing or mistyped field, a schema newer
                than this version reads.
        """

        def fail(problem: str) -> RecordError:
            return RecordError(
                f"The plasticity record in {source} is broken: {problem}. It was not written by hf-plasticity's "
                "`prepare_pretrained` or was edited since; restore the base checkpoint again (or this one with "
                f"`force=True`), or remove the `{MODEL_CONFIG_KEY}` entry to train the model as it is."
            )

        if not isinstance(data, dict):
            raise fail(f"it is a {type(data).__name__}, not a dict")
        version = data.get("schema_version", 1)
        if not _is_int(version) or version < 1:
            raise fail(f"`schema_version` is {version!r}, not a positive integer")
        if version > SCHEMA_VERSION:
            raise RecordError(
                f"The plasticity record in {source} has schema version {version}, written by a newer hf-plasticity "
                f"({_written_by(data)}); this version ({__version__}) reads up to {SCHEMA_VERSION}. Upgrade "
                "hf-plasticity (`pip install -U hf-plasticity`, or update your checkout of the repository)."
            )
        for key, kind in (("strategy", str), ("config", dict), ("reinitialized_per_block", dict)):
            if key not in data:
                raise fail(f"the `{key}` field is missing")
            if not isinstance(data[key], kind) or (kind is str and not data[key]):
                raise fail(f"`{key}` is {data[key]!r}, not a {'non-empty string' if kind is str else kind.__name__}")
        for key in ("total_reinitialized", "total_parameters"):
            if key not in data:
                raise fail(f"the `{key}` field is missing")
            if not _is_int(data[key]) or data[key] < 0:
                raise fail(f"`{key}` is {data[key]!r}, not a non-negative integer")
        per_block = data["reinitialized_per_block"]
        bad = [key for key, value in per_block.items() if not _is_int(value) or value < 0]
        if bad:
            raise fail(f"`reinitialized_per_block[{bad[0]!r}]` is {per_block[bad[0]]!r}, not a non-negative integer")
        try:
            if data.get("redrawn") is not None:
                redrawn = check_redrawn(data["redrawn"], "redrawn")
            else:  # schema 1 predates the field; from schema 2 on, null means unknown
                redrawn = _derive_redrawn(data) if version == 1 else None
        except ValueError as error:
            raise fail(str(error).rstrip(".")) from None
        optional = {"blocks": list, "details": dict, "diagnostics": dict, "versions": dict}
        for key, kind in optional.items():
            if key in data and not isinstance(data[key], kind):
                raise fail(f"`{key}` is {data[key]!r}, not a {kind.__name__}")
        blocks = data.get("blocks", [])
        if not all(isinstance(name, str) for name in blocks):
            raise fail("`blocks` holds something that is not a block name")
        diagnostics = data.get("diagnostics", {})
        if not all(isinstance(values, dict) for values in diagnostics.values()):
            raise fail("`diagnostics` must map 'before'/'after' to dicts of numbers")
        recipe = None
        if data.get("recipe") is not None:  # schemas 1 and 2 predate the field: no recipe
            try:
                recipe = FineTuneRecipe.from_dict(data["recipe"])
            except (TypeError, ValueError) as error:
                raise fail(f"its `recipe` is unreadable: {str(error).rstrip('.')}") from None
        periodic = data.get("periodic", [])  # schemas 1 to 3 predate the field: no periodic resets
        if not isinstance(periodic, list):
            raise fail(f"`periodic` is {periodic!r}, not a list")
        try:
            periodic = [PeriodicResets.from_dict(entry) for entry in periodic]
        except ValueError as error:
            raise fail(f"its `periodic` list is unreadable: {str(error).rstrip('.')}") from None
        return cls(
            strategy=data["strategy"],
            config=dict(data["config"]),
            reinitialized_per_block={str(k): int(v) for k, v in per_block.items()},
            total_reinitialized=int(data["total_reinitialized"]),
            total_parameters=int(data["total_parameters"]),
            redrawn=redrawn,
            blocks=list(blocks),
            details=dict(data.get("details", {})),
            diagnostics={key: dict(values) for key, values in diagnostics.items()},
            versions=dict(data.get("versions", {})),
            recipe=recipe,
            periodic=periodic,
            schema_version=SCHEMA_VERSION,  # upgraded: written back in the current schema
        )

    def redrawn_or_refuse(self) -> dict[str, list[str]]:
        """``redrawn``, or a [`RecordError`] saying what to do when this older record does not know it."""
        if self.redrawn is None:
            raise RecordError(
                f"The plasticity record of this model ({self.strategy}, written by {_written_by(self.to_dict())}) "
                "predates the list of re-drawn parameters, so `reinit_lr` cannot tell which parameters to give it. "
                "Pass them as `redrawn=` (e.g. {'whole': ['vit.layers.11', 'vit.layernorm']}), leave `reinit_lr` "
                "unset, or restore the base checkpoint again with this version."
            )
        return self.redrawn


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _written_by(data: dict[str, Any]) -> str:
    versions = data.get("versions") or {}
    config = data.get("config") or {}
    version = versions.get("hf_plasticity") if isinstance(versions, dict) else None
    version = version or (config.get("hf_plasticity_version") if isinstance(config, dict) else None)
    return f"hf-plasticity {version}" if version else "an unknown hf-plasticity version"


def _derive_redrawn(data: dict[str, Any]) -> dict[str, list[str]] | None:
    """``redrawn`` for a schema-1 record without it: nothing when the restore re-initialized nothing or its strategy
    never re-draws (shrink & perturb, DASH: edits that keep part of the old values); otherwise unknown (None)."""
    nothing = {"whole": [], "partial": []}
    if data["total_reinitialized"] == 0:
        return nothing
    from . import registry

    try:
        strategy_class = registry.lookup(data["strategy"])[1]
    except ValueError:
        return None
    return nothing if getattr(strategy_class, "redraws", True) is False else None


def _source(model: nn.Module) -> str:
    """Where a model's record was read from, for error messages."""
    path = getattr(getattr(model, "config", None), "_name_or_path", None)
    where = f"{path}/config.json" if path else f"{type(model).__name__}.config"
    return f"{where} (its `{MODEL_CONFIG_KEY}` entry)"


def restore_record(model: nn.Module) -> RestoreRecord | None:
    """What [`prepare_pretrained`] recorded on ``model`` (also read back from a saved ``config.json``), or None.

    The public accessor of the record: the typed [`RestoreRecord`], validated (and upgraded from an older schema)
    on every read.

    Raises:
        RecordError: when the model carries a record that is malformed or of a newer schema (the message names where
            it was read from and what is wrong).

    Example:

    ```python
    >>> from torch import nn
    >>> from hf_plasticity import prepare_pretrained, restore_record
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> restore_record(model) is None
    True
    >>> _ = prepare_pretrained(model, "reinit_layers")
    >>> record = restore_record(model)
    >>> record.strategy, record.redrawn
    ('reinit_layers', {'whole': ['2'], 'partial': []})
    ```
    """
    model = unwrap_model(model)
    record = getattr(model, RECORD_ATTR, None)
    if isinstance(record, RestoreRecord):
        return record
    data = getattr(getattr(model, "config", None), MODEL_CONFIG_KEY, None)
    if data is None or data == {}:
        return None
    return RestoreRecord.from_dict(data, source=_source(model))


def read_record(folder: str | os.PathLike) -> RestoreRecord | None:
    """The record in the ``config.json`` of a checkpoint folder, or None when the folder has no ``config.json`` or it
    has no record.

    Raises:
        RecordError: when ``config.json`` is not valid JSON, or its record is broken or of a newer schema (the
            message names the file and what is wrong).
    """
    path = os.path.join(os.fspath(folder), "config.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except (OSError, ValueError) as error:
        raise RecordError(f"Cannot read {path}: {error}.") from error
    if not isinstance(data, dict):
        raise RecordError(f"{path} is not a transformers config: it holds a {type(data).__name__}, not an object.")
    if data.get(MODEL_CONFIG_KEY) is None:
        return None
    return RestoreRecord.from_dict(data[MODEL_CONFIG_KEY], source=f"{path} (its `{MODEL_CONFIG_KEY}` entry)")


#: The fields of a record that say which restore it was: a report must agree with the model's record on all of them.
_RESTORE_FIELDS = ("strategy", "config", "redrawn", "reinitialized_per_block", "total_reinitialized")


def _same_settings(config: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether two strategy configs (``PlasticityConfig.to_dict()``) hold the same settings: compared as JSON reads
    them back, without the library version stamp (a run continued after an upgrade is the same strategy)."""
    return _plain({k: v for k, v in config.items() if k != VERSION_KEY}) == _plain(
        {k: v for k, v in other.items() if k != VERSION_KEY}
    )


def _plain(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples as lists): a record read from ``config.json`` compares equal."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def check_report_is_current(made: RestoreRecord, record: RestoreRecord) -> None:
    """Raises a `ValueError` when ``made`` (a report's record, ``report.record()``) is not the restore ``record`` (the
    model's) describes, e.g. the report of an earlier restore of a model restored again since with ``force=True``:
    what is built from it would contradict the model and its ``config.json``."""
    differs = [name for name in _RESTORE_FIELDS if _plain(getattr(made, name)) != _plain(getattr(record, name))]
    if differs:
        raise ValueError(
            f"This report is of an earlier restore ({made.strategy}) than the one the model's record describes "
            f"({record.strategy}; they differ in `{differs[0]}`): the model was restored again since (or the report "
            "is of another model). Pass the report of its latest restore (the last one `prepare_pretrained` "
            "returned), or none (the model's own record is used)."
        )


def report_of(model: nn.Module, report: Any) -> RestoreRecord:
    """The record of ``report``, after checking that it is a report of ``model``'s latest restore (the one its record
    describes).

    Args:
        model: the restored model (wrappers removed).
        report: what was passed as ``report=``: the [`PlasticityReport`] that [`prepare_pretrained`] returned.

    Raises:
        TypeError: when ``report`` is not a [`PlasticityReport`].
        ValueError: when it was made on another model ([`PlasticityReport.check_belongs_to`]), when ``model`` carries
            no record of a restore, or when its record describes another restore ([`check_report_is_current`]).
    """
    is_report = callable(getattr(report, "record", None)) and callable(getattr(report, "check_belongs_to", None))
    made = report.record() if is_report else None
    if not isinstance(made, RestoreRecord):
        shown = repr(report) if isinstance(report, (str, int, float)) else type(report).__name__
        raise TypeError(
            f"`report` must be the PlasticityReport that `prepare_pretrained` returned for this model, or None (the "
            f"model's own record), got {shown}. To name the re-drawn parameters yourself, pass `redrawn=` (e.g. "
            "{'whole': ['vit.layers.11'], 'partial': []})."
        )
    report.check_belongs_to(model)
    record = restore_record(model)
    if record is None:
        raise ValueError(
            f"This report ({made.strategy}) is not of a restore of this model: the model carries no plasticity record "
            "(`prepare_pretrained` writes one on the model it restores). Pass the model that was restored, or "
            "`redrawn=report.redrawn` to give those parameters the re-drawn learning rate anyway."
        )
    check_report_is_current(made, record)
    return made


def blocks_restore(record: RestoreRecord | None) -> bool:
    """Whether a record stands for a restore that changed the model, so that a second one needs ``force=True``."""
    return record is not None and record.changed_model


def write_record(model: nn.Module, record: RestoreRecord, transaction: Transaction | None = None) -> None:
    """Records ``record`` on ``model`` (and its dict in ``model.config.plasticity`` when the model has a transformers
    config), as part of ``transaction`` when given."""
    if not isinstance(record, RestoreRecord):
        raise TypeError(f"`record` must be a RestoreRecord, got {type(record).__name__}.")
    model = unwrap_model(model)
    targets: list[tuple[Any, str, Any]] = [(model, RECORD_ATTR, record)]
    model_config = getattr(model, "config", None)
    if model_config is not None and hasattr(model_config, "to_dict"):
        targets.append((model_config, MODEL_CONFIG_KEY, record.to_dict()))
    for obj, name, value in targets:
        if transaction is None:
            setattr(obj, name, value)
        else:
            transaction.set_attribute(obj, name, value)


def record_recipe(model: nn.Module, recipe: FineTuneRecipe) -> RestoreRecord:
    """Records ``recipe`` on ``model``: in its restore record when it has one (replacing an earlier recipe), else in
    a record of strategy ``"none"`` that re-initialized nothing (so a later restore is not blocked by it, and keeps the
    recipe in its own record). Like every record it reaches ``model.config.plasticity``, ``config.json`` and the model
    card.

    Returns:
        The record now on the model.
    """
    if not isinstance(recipe, FineTuneRecipe):
        raise TypeError(f"`recipe` must be a FineTuneRecipe, got {type(recipe).__name__}.")
    record = replace(_record_or_none(model), recipe=recipe)
    write_record(model, record)
    return record


def _no_restore_record(model: nn.Module) -> RestoreRecord:
    """A record of strategy ``"none"`` for ``model``: no one-shot restore, nothing re-initialized (the base a recipe
    or periodic resets are recorded on when the model carries no record)."""
    from .architectures import get_layout
    from .checkpoint_names import checkpoint_names, module_checkpoint_name

    names = checkpoint_names(model)
    return RestoreRecord(
        strategy=NO_RESTORE,
        config={},
        reinitialized_per_block={},
        total_reinitialized=0,
        total_parameters=sum(p.numel() for p in model.parameters()),
        redrawn={"whole": [], "partial": []},
        blocks=[module_checkpoint_name(names, block) for block in get_layout(model).blocks],
    )


def record_periodic_reset(
    model: nn.Module,
    strategy: str,
    config: dict[str, Any],
    reinitialized: int,
    transaction: Transaction | None = None,
) -> RestoreRecord:
    """Counts one periodic reset in ``model``'s record: in the ``periodic`` entry of the same strategy and config
    (the settings, whatever library version stamped them; a new entry at the end when there is none), on the record
    the model carries (its one-shot restore's, or one of strategy ``"none"`` when it carries none: a later one-shot
    restore is then not blocked by it, and keeps the periodic entries). Like every record it reaches
    ``model.config.plasticity``, ``config.json`` and the model card.

    Args:
        model: the model (a wrapper is seen through).
        strategy: the periodic strategy's name.
        config: its config as a dict (``PlasticityConfig.to_dict()``).
        reinitialized: the parameter entries this reset re-initialized.
        transaction: the restore's transaction, which puts the old record back if the reset fails.

    Returns:
        The record now on the model.

    Raises:
        RecordError: when the model carries a broken record (nothing is written then).
        ValueError: when ``reinitialized`` is not a non-negative integer.

    Example:

    ```python
    >>> from torch import nn
    >>> from hf_plasticity.core.record import record_periodic_reset
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> for count in (3, 5):
    ...     record = record_periodic_reset(model, "rifle", {"strategy": "rifle"}, count)
    >>> record.strategy, record.periodic
    ('none', [PeriodicResets(strategy='rifle', config={'strategy': 'rifle'}, resets=2, total_reinitialized=8)])
    ```
    """
    if not _is_int(reinitialized) or reinitialized < 0:
        raise ValueError(f"`reinitialized` must be a non-negative integer, got {reinitialized!r}.")
    periodic = list(_record_or_none(model).periodic)
    for index, entry in enumerate(periodic):
        if entry.strategy == strategy and _same_settings(entry.config, config):
            periodic[index] = replace(
                entry, resets=entry.resets + 1, total_reinitialized=entry.total_reinitialized + reinitialized
            )
            break
    else:
        periodic.append(PeriodicResets(strategy, dict(config), resets=1, total_reinitialized=reinitialized))
    return record_periodic(model, periodic, transaction)


def record_periodic(
    model: nn.Module, periodic: list[PeriodicResets], transaction: Transaction | None = None
) -> RestoreRecord:
    """Sets the ``periodic`` list of ``model``'s record to ``periodic`` (on a record of strategy ``"none"`` when the
    model carries none); the training controller puts its run's resets back so on a resumed model that lacks them.

    Returns:
        The record now on the model.

    Raises:
        TypeError: when ``periodic`` is not a list of [`PeriodicResets`].
        RecordError: when the model carries a broken record (nothing is written then).
    """
    if not isinstance(periodic, list) or not all(isinstance(entry, PeriodicResets) for entry in periodic):
        raise TypeError(f"`periodic` must be a list of PeriodicResets, got {periodic!r}.")
    record = replace(_record_or_none(model), periodic=list(periodic))
    write_record(model, record, transaction)
    return record


def _record_or_none(model: nn.Module) -> RestoreRecord:
    """The record on ``model``, or a record of strategy ``"none"`` for it when it carries none."""
    model = unwrap_model(model)
    return restore_record(model) or _no_restore_record(model)


def overall_numbers(diagnostics: Any, prefix: str = "") -> dict[str, float]:
    """The model-level numbers of a [`DiagnosticsReport`] (its ``overall()``) or of a dict (nested dicts flattened
    to dotted keys; lists, such as per-layer rows, left out), finite numbers only: what a record keeps of the
    diagnostics.

    Example:

    ```python
    >>> from hf_plasticity.core.record import overall_numbers
    >>> overall_numbers({"dormant_ratio": 0.25, "gradient_norm": {"overall": 0.01}, "layers": [1, 2]})
    {'dormant_ratio': 0.25, 'gradient_norm.overall': 0.01}
    ```
    """
    values = diagnostics.overall() if hasattr(diagnostics, "overall") else diagnostics
    flat: dict[str, float] = {}
    if not isinstance(values, dict):
        return flat
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(overall_numbers(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            flat[name] = float(value)
    return flat

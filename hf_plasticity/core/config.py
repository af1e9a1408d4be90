"""Configuration classes: one base class with the fields every strategy shares, one subclass per strategy.

Configs follow peft's conventions: dataclasses whose fields carry a ``help`` text, validated in
``__post_init__``, saved as sorted JSON stamped with the library version, and loaded back tolerantly
(unknown keys are ignored with a warning, so a config written by a newer version still loads). A config dict that a
user passes to an entry point is read strictly instead: an unknown key (a typo) is an error, not a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from . import registry
from .record import MODEL_CONFIG_KEY, NO_RESTORE, RestoreRecord
from .validators import check_flag, check_int, check_patterns, check_positive_int
from .version import VERSION_KEY, __version__

logger = logging.getLogger(__name__)

CONFIG_NAME = "plasticity_config.json"
#: The key that [`PlasticityConfig.to_dict`] stamps into every saved config: it marks a dict as written by the library.


def available_strategies() -> list[str]:
    """Names of every registered strategy, sorted.

    Example:

    ```python
    >>> from hf_plasticity import available_strategies
    >>> "reinit_layers" in available_strategies() and "selective" in available_strategies()
    True
    ```
    """
    return registry.names()


def get_config_class(strategy: str) -> type[PlasticityConfig]:
    """Returns the config class registered for ``strategy``.

    Example:

    ```python
    >>> from hf_plasticity import get_config_class
    >>> get_config_class("selective")(fraction=0.05).fraction
    0.05
    ```

    Raises:
        ValueError: if no strategy of that name is registered; the message lists the accepted names.
    """
    return registry.lookup(strategy)[0]


@dataclass
class PlasticityConfig:
    """Fields shared by every plasticity-restoration strategy.

    Subclasses set the class attribute ``strategy`` and add their own fields. A config is plain data: it can be
    saved next to a checkpoint, read back with [`PlasticityConfig.from_pretrained`], and it is recorded in the
    model's `config.json` by [`prepare_pretrained`].

    Example:

    ```python
    >>> from hf_plasticity import LayerReinitConfig, PlasticityConfig
    >>> config = LayerReinitConfig(num_blocks=2, seed=1)
    >>> PlasticityConfig.from_dict(config.to_dict()) == config
    True
    ```
    """

    strategy: ClassVar[str] = ""
    requires_data: ClassVar[bool] = False
    #: Shared scope fields that do not apply to this strategy (e.g. whole-block re-initialization has no use for
    #: `include_bias`): setting one is an error, and they are left out of the saved config and the record.
    unused_scope_fields: ClassVar[tuple[str, ...]] = ()

    target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Module names (exact, or a suffix after a dot) or regular expressions (full match) to target. "
            "Default: every Linear/Conv module of the backbone, never the classification head."
        },
    )
    exclude_modules: list[str] | None = field(
        default=None, metadata={"help": "Module names or regular expressions to leave untouched."}
    )
    last_k_blocks: int | None = field(
        default=None, metadata={"help": "Restrict the targets to the last k blocks of the backbone (depth order)."}
    )
    include_bias: bool = field(default=False, metadata={"help": "Also target the biases of the targeted modules."})
    include_norm: bool = field(
        default=False, metadata={"help": "Also target normalization layers (LayerNorm, BatchNorm, GroupNorm)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of every random draw; the same seed gives the same weights."})

    def __post_init__(self) -> None:
        self.target_modules = check_patterns("target_modules", self.target_modules, allow_empty=False)
        self.exclude_modules = check_patterns("exclude_modules", self.exclude_modules)
        check_positive_int("last_k_blocks", self.last_k_blocks, allow_none=True)
        check_flag("include_bias", self.include_bias)
        check_flag("include_norm", self.include_norm)
        check_int("seed", self.seed)
        defaults = {f.name: f.default for f in dataclasses.fields(PlasticityConfig)}
        for name in self.unused_scope_fields:
            if getattr(self, name) != defaults[name]:
                raise ValueError(
                    f"`{name}` does not apply to strategy {self.strategy!r} ({type(self).__name__} ignores "
                    f"{', '.join(self.unused_scope_fields)}); leave it unset."
                )

    # ----------------------------------------------------------------------------------------------- serialization
    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-able dict, with ``strategy`` and the library version stamped in."""
        data = {k: v for k, v in dataclasses.asdict(self).items() if k not in self.unused_scope_fields}
        data["strategy"] = self.strategy
        data[VERSION_KEY] = __version__
        return data

    def to_json_string(self) -> str:
        """Sorted, indented JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, strict: bool = False) -> PlasticityConfig:
        """Builds the right config subclass from a dict.

        Called on the base class, the subclass is chosen by ``data["strategy"]``.

        Args:
            data: the config's fields, ``strategy`` and optionally the version stamp.
            strict: refuse unknown keys (for a dict written by hand) instead of ignoring them with a warning (for a
                config saved by another version of the library, which may have other fields).

        Raises:
            ValueError: for a missing or unknown strategy, a config of another strategy than ``cls``'s, an unknown
                key with ``strict`` (naming it, the strategy and the accepted keys), or a value the config refuses.
        """
        data = dict(data)
        strategy = data.pop("strategy", None) or cls.strategy
        if not strategy:
            raise ValueError("The config dict has no `strategy` key, so its config class is unknown.")
        target_cls = get_config_class(strategy)
        if cls.strategy and target_cls is not cls:
            raise ValueError(f"{cls.__name__} cannot load a config of strategy {strategy!r}.")
        data.pop(VERSION_KEY, None)
        known = {f.name for f in dataclasses.fields(target_cls) if f.init}
        unknown = sorted(set(data) - known)
        if unknown and strict:
            raise ValueError(_unknown_keys_message(target_cls, unknown))
        if unknown:
            logger.warning("Ignoring unknown keys in a %s: %s", target_cls.__name__, ", ".join(unknown))
        return target_cls(**{k: v for k, v in data.items() if k in known})

    def save_pretrained(self, save_directory: str | os.PathLike) -> str:
        """Writes ``plasticity_config.json`` into ``save_directory`` and returns its path."""
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, CONFIG_NAME)
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json_string())
        return path

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike, **hub_kwargs: Any) -> PlasticityConfig:
        """Loads the config from a folder or a Hub repository.

        Reads ``plasticity_config.json`` when present, else the ``plasticity`` record that [`prepare_pretrained`]
        writes into the model's ``config.json`` (so a restored checkpoint tells what was re-initialized).
        ``hub_kwargs`` (``revision``, ``token``, ...) are passed to the Hub download when ``path_or_repo_id`` is a
        repository id.

        Raises:
            ValueError: naming the file and what is wrong, when ``plasticity_config.json`` is not valid JSON or not
                a config, or the record in ``config.json`` is broken (a [`RecordError`]) or absent.
        """
        path = str(path_or_repo_id)
        if os.path.isdir(path):
            standalone = os.path.join(path, CONFIG_NAME)
            if os.path.isfile(standalone):
                try:
                    with open(standalone, encoding="utf-8") as f:
                        data = json.load(f)
                    if not isinstance(data, dict):
                        raise ValueError(f"it holds a {type(data).__name__}, not a JSON object")
                    return cls.from_dict(data)
                except (OSError, ValueError, TypeError) as error:
                    raise ValueError(f"{standalone} is not a valid plasticity config: {error}") from error
        from transformers import AutoConfig

        model_config = AutoConfig.from_pretrained(path, **hub_kwargs)
        data = getattr(model_config, MODEL_CONFIG_KEY, None)
        if data is None:
            raise ValueError(f"{path} holds no plasticity record: it was not restored with hf_plasticity.")
        source = f"{path}/config.json (its `{MODEL_CONFIG_KEY}` entry)"
        record = RestoreRecord.from_dict(data, source=source)
        if record.strategy == NO_RESTORE:
            kept = {"a fine-tuning recipe": record.recipe is not None, "periodic resets": bool(record.periodic)}
            held = " and ".join(what for what, present in kept.items() if present) or "a record"
            periodic = ", ".join(entry.strategy for entry in record.periodic)
            where = f" (the configs of {periodic} are in `restore_record(model).periodic`)" if periodic else ""
            raise ValueError(
                f"{path} holds {held} but no one-shot restore: it has no plasticity config of a restore{where}."
            )
        return cls.from_dict(record.config)


def _unknown_keys_message(config_class: type[PlasticityConfig], unknown: list[str]) -> str:
    """Names the unknown keys of a config dict, the closest accepted key of each, and every accepted key."""
    accepted = sorted(
        f.name for f in dataclasses.fields(config_class) if f.init and f.name not in config_class.unused_scope_fields
    )
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), accepted, n=1)
        hints.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    return (
        f"Unknown key{'s' if len(unknown) > 1 else ''} {', '.join(hints)} in the config dict of strategy "
        f"{config_class.strategy!r} ({config_class.__name__}). Accepted keys: 'strategy', "
        f"{', '.join(map(repr, accepted))}."
    )


def resolve_config(config: PlasticityConfig | str | dict | None, default: str) -> PlasticityConfig:
    """A validated private copy of ``config``: a config, a strategy name (its default settings), a config dict, or
    None (the ``default`` strategy's default settings).

    A config dict is read strictly (an unknown key, such as a typo, raises a `ValueError` that names it) unless it
    carries the version stamp of a saved config (the output of [`PlasticityConfig.to_dict`], e.g. the config a
    Trainer checkpoint's callback state holds), which is read back tolerantly like [`PlasticityConfig.from_pretrained`]
    reads a saved config. The copy goes through ``from_dict``, so ``__post_init__`` validation runs again even when a
    field was changed after the config was built (e.g. ``config.every_n_steps = 0``), and later changes to the
    caller's object change nothing.

    Example:

    ```python
    >>> from hf_plasticity.core.config import resolve_config
    >>> resolve_config({"strategy": "shrink_perturb", "shrnk": 0.9}, "reinit_layers")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Unknown key 'shrnk' (did you mean 'shrink'?) in the config dict of strategy 'shrink_perturb' ...
    ```
    """
    if config is None:
        config = get_config_class(default)()
    elif isinstance(config, str):
        config = get_config_class(config)()
    elif isinstance(config, dict):
        config = PlasticityConfig.from_dict(config, strict=VERSION_KEY not in config)
    elif not isinstance(config, PlasticityConfig):
        raise TypeError(
            "`config` must be a PlasticityConfig, a strategy name, a config dict or None, "
            f"got {type(config).__name__}."
        )
    return PlasticityConfig.from_dict(config.to_dict())

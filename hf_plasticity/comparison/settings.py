"""What identifies a comparison: its settings ([`ComparisonSettings`]: model, data, splits, budget, grid, and the
number of processes of the launch). Settings are compared as what they mean, not as typed: a local path absolute and
without a trailing separator, a learning-rate grid sorted; settings saved by an earlier version are read the same way
([`comparable_settings`]).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from .runner import Budget


def normalized_path(path: Any) -> Any:
    """An existing local path as one spelling: absolute, without a trailing separator (relative to the current
    directory). Anything else (a Hub id, a path that does not exist) is returned as given.

    Example:

    ```python
    >>> import os
    >>> normalized_path("./") == os.getcwd()
    True
    >>> normalized_path("facebook/convnext-tiny-224")
    'facebook/convnext-tiny-224'
    ```
    """
    return os.path.abspath(path) if isinstance(path, str) and path and os.path.exists(path) else path


def normalized_grid(values: Any) -> Any:
    """A learning-rate grid as one spelling: sorted, each rate once (the tuning ranks configurations by a rule that
    does not depend on their order, and the run keys name each one). Anything but a list or tuple of numbers is
    returned as given (refused by the checks)."""
    if not isinstance(values, (list, tuple)) or not all(
        isinstance(value, (int, float)) and not isinstance(value, bool) for value in values
    ):
        return values
    return tuple(sorted(set(values)))


#: The settings that are lists whose order means nothing: compared and saved sorted (see [`normalized_grid`]).
GRID_KEYS = ("backbone_lrs", "own_lrs")
#: The settings that are paths: compared and saved as [`normalized_path`] spells them.
PATH_KEYS = ("model", "data")
#: What the launch contributes to the settings: compared as the effective batch, not one by one.
LAUNCH_KEYS = ("world_size", "effective_batch")


@dataclass(frozen=True)
class ComparisonSettings:
    """What identifies a comparison: a folder holding the same settings is resumed. (The arms and the number of seeds
    are not part of it: a rerun with more of them adds the runs it lacks.)

    ``model`` and ``data`` are kept as [`normalized_path`] spells them (an existing local path absolute, without a
    trailing separator; a Hub id as given) and the learning-rate grids sorted, each rate once
    ([`normalized_grid`]): the same comparison typed another way is the same comparison. ``world_size`` is the
    number of processes of the launch (``torchrun``, ``accelerate launch``): with ``batch_size`` (per device) it
    makes the effective batch of every optimizer step (compare accumulates no gradients), which
    [`to_dict`] records beside it.
    """

    model: str
    data: str
    split: str = "train"
    val_split: str | None = None
    test_split: str | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    split_seed: int = 0
    max_train_samples: int | None = None
    epochs: int = 3
    batch_size: int = 32
    backbone_lrs: tuple[float, ...] = (3e-5, 1e-4, 3e-4)
    own_lrs: tuple[float, ...] = (1e-3, 3e-3)
    weight_decay: float = 0.05
    warmup: float = 0.1
    world_size: int = 1

    def __post_init__(self) -> None:
        for key in PATH_KEYS:
            object.__setattr__(self, key, normalized_path(getattr(self, key)))
        for key in GRID_KEYS:
            object.__setattr__(self, key, normalized_grid(getattr(self, key)))

    @property
    def effective_batch(self) -> int:
        """Examples per optimizer step: ``world_size x batch_size`` (no gradient accumulation)."""
        return self.world_size * self.batch_size

    def to_dict(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        fields = {key: list(value) if isinstance(value, tuple) else value for key, value in fields.items()}
        return {**fields, "effective_batch": self.effective_batch}

    @property
    def budget(self) -> Budget:
        return Budget(self.epochs, self.batch_size, self.weight_decay, self.warmup)

    @property
    def grid(self) -> list[tuple[float, float]]:
        return [(backbone, own) for backbone in self.backbone_lrs for own in self.own_lrs]


def comparable_settings(saved: dict[str, Any]) -> dict[str, Any]:
    """Saved settings (of this version or an earlier one) spelled as [`ComparisonSettings`] spells them now: paths
    through [`normalized_path`], grids through [`normalized_grid`] (as lists)."""
    comparable = dict(saved)
    for key in PATH_KEYS:
        if key in comparable:
            comparable[key] = normalized_path(comparable[key])
    for key in GRID_KEYS:
        if key in comparable:
            grid = normalized_grid(comparable[key])
            comparable[key] = list(grid) if isinstance(grid, tuple) else grid
    return comparable

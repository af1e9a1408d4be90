"""The bench's arms: standard fine-tuning (a new head only) and each strategy at a small sweep of its main
hyperparameter. An arm only names a strategy and its parameters; the library builds the config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Arm:
    """One arm of the benchmark.

    Args:
        name (`str`): the arm's name in file names and tables (e.g. `"reinit_layers_k1"`).
        strategy (`str`, *optional*): the library strategy name (`None` for standard fine-tuning).
        params (`dict`, *optional*): keyword arguments of the strategy's config class.
        recalibrate_bn (`bool`, *optional*, defaults to `False`): after the restore, re-estimate the running
            statistics of the BatchNorm layers it reset from the calibration batches (instead of leaving them at
            mean 0 / variance 1, which a low BN momentum, e.g. EfficientNet's 0.01, carries for hundreds of steps).
            On a baseline arm (no strategy) every BatchNorm layer is re-estimated ("AdaBN"), a stronger baseline.
        reinit_lr (`float`, *optional*): learning rate of the parameters the restore re-drew whole (the head keeps
            the bench's head lr); None: the backbone lr, as every pretrained block.
    """

    name: str
    strategy: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    recalibrate_bn: bool = False
    reinit_lr: float | None = None

    @property
    def is_baseline(self) -> bool:
        """True for standard fine-tuning (no restore)."""
        return self.strategy is None

    def build_config(self, seed: int) -> Any:
        """The strategy's config with `params` and, where the config has one, `seed`; `None` for the baseline.

        Raises:
            `ValueError`: when the library does not know the strategy or rejects the parameters.
        """
        if self.strategy is None:
            return None
        from hf_plasticity import get_config_class

        config_class = get_config_class(self.strategy)
        kwargs = dict(self.params)
        if dataclasses.is_dataclass(config_class) and "seed" in {f.name for f in dataclasses.fields(config_class)}:
            kwargs.setdefault("seed", seed)
        try:
            return config_class(**kwargs)
        except TypeError as err:
            raise ValueError(f"Arm {self.name!r}: {config_class.__name__} rejects {kwargs}: {err}") from err


def _arms() -> dict[str, Arm]:
    arms = [
        Arm("standard"),
        Arm("standard_adabn", recalibrate_bn=True),
        Arm("reinit_layers_k1", "reinit_layers", {"num_blocks": 1}),
        Arm("reinit_layers_k2", "reinit_layers", {"num_blocks": 2}),
        Arm("reinit_layers_k3", "reinit_layers", {"num_blocks": 3}),
        Arm("reinit_layers_k1_bnfix", "reinit_layers", {"num_blocks": 1}, recalibrate_bn=True),
        Arm("reinit_layers_k1_rlr1e-3", "reinit_layers", {"num_blocks": 1}, reinit_lr=1e-3),
        Arm("reinit_layers_k2_rlr1e-3", "reinit_layers", {"num_blocks": 2}, reinit_lr=1e-3),
        Arm("reinit_layers_k2_bnfix", "reinit_layers", {"num_blocks": 2}, recalibrate_bn=True),
        Arm("selective_gxw_p0.01", "selective", {"utility": "grad_x_weight", "fraction": 0.01}),
        Arm("selective_gxw_p0.05", "selective", {"utility": "grad_x_weight", "fraction": 0.05}),
        Arm("selective_gxw_p0.2", "selective", {"utility": "grad_x_weight", "fraction": 0.2}),
        Arm("selective_mag_p0.05", "selective", {"utility": "magnitude", "fraction": 0.05}),
        Arm("shrink_perturb_0.8", "shrink_perturb", {"shrink": 0.8, "perturb": 0.1}),
        Arm("shrink_perturb_0.6", "shrink_perturb", {"shrink": 0.6, "perturb": 0.1}),
        Arm("redo_tau0.1", "redo", {"tau": 0.1}),
        Arm("redo_tau0.025", "redo", {"tau": 0.025}),
        Arm("dash", "dash", {}),
        Arm("auto", "auto", {}),
    ]
    return {arm.name: arm for arm in arms}


ARMS: dict[str, Arm] = _arms()

#: The arms of the priority measurement (EfficientNet-Lite0 on digits).
PRIORITY_ARMS = [
    "standard",
    "reinit_layers_k1",
    "reinit_layers_k1_bnfix",
    "reinit_layers_k2_bnfix",
    "selective_gxw_p0.01",
    "selective_gxw_p0.05",
]


def get_arms(names: list[str] | None = None) -> list[Arm]:
    """The arms named in `names` (all registered arms when None); `"standard"` is always included and first."""
    names = list(names) if names else list(ARMS)
    unknown = [n for n in names if n not in ARMS]
    if unknown:
        raise ValueError(f"Unknown arm(s) {unknown}; accepted values: {list(ARMS)}.")
    if "standard" not in names:
        names.insert(0, "standard")
    names.sort(key=lambda n: n != "standard")
    return [ARMS[n] for n in names]

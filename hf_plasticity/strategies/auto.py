"""``"auto"``: read [`diagnose`] on the user's data, then re-initialize the late blocks that make the task harder.

[`diagnose`] measures, per backbone block, how well the block's output separates the downstream classes (a
leave-one-out nearest-class-mean probe, [`hf_plasticity.diagnostics.probe`]). On data close to the pretraining
data this rises
to the last block, and nothing is re-initialized. On atypical data it peaks at an intermediate block and falls after
it: the blocks past the peak re-encode the input for the source task. ``"auto"`` re-initializes those blocks (as
[`LayerReinitConfig`] does), at most ``max_blocks`` of them (by default an eighth of the backbone's depth, at least
one), because re-initializing more than that lost accuracy in the benchmark (version 1, docs/BENCHMARKS.md, "The auto
strategy"). In version 2 it stayed within noise of tuned standard fine-tuning on most pairs and, unlike the data-free
default, cost in-domain data at most 0.3 points on average (on the small models' own source domain it re-initialized
nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..core.data import CalibrationDataError
from ..core.plan import Plan
from ..core.targeting import resolve_block_modules
from ..core.validators import check_number, check_positive_int
from .base import Strategy, register_strategy
from .reinit_layers import BlockReinitConfig, depth_share_of_blocks, plan_block_reinit


@dataclass
class AutoReinitConfig(BlockReinitConfig):
    """Chooses how many late blocks to re-initialize from the per-block probe accuracy of [`diagnose`].

    Needs labelled ``data=``. The choice (probe accuracy per block, the peak block, the cap, the number of blocks
    re-initialized) is in ``report.details`` and in the record saved with the model.

    Example:

    ```python
    >>> from hf_plasticity import AutoReinitConfig
    >>> AutoReinitConfig().strategy, AutoReinitConfig().tolerance
    ('auto', 0.02)
    ```
    """

    strategy = "auto"
    requires_data = True

    max_blocks: int | None = field(
        default=None,
        metadata={
            "help": "The most late blocks re-initialized; None: an eighth of the backbone's blocks (at least 1)."
        },
    )
    tolerance: float = field(
        default=0.02,
        metadata={
            "help": "Probe accuracy within this of the best block's counts as the peak (the last such block is "
            "kept): small dips are noise, not a reason to re-initialize."
        },
    )
    calibration_batches: int = field(default=8, metadata={"help": "Calibration batches read by the diagnostics."})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int("max_blocks", self.max_blocks, allow_none=True)
        check_positive_int("calibration_batches", self.calibration_batches)
        check_number("tolerance", self.tolerance, low=0, high=1, high_open=True)


def blocks_past_the_peak(accuracies: list[float | None], tolerance: float) -> tuple[int, int]:
    """The peak block of a probe-accuracy curve and how many blocks come after it.

    The peak is the last block whose accuracy is within ``tolerance`` of the best one (blocks without an accuracy
    are skipped).

    Returns:
        `(peak, blocks_after)`.

    Example:

    ```python
    >>> blocks_past_the_peak([0.5, 0.8, 0.9, 0.7, 0.6], tolerance=0.02)
    (2, 2)
    >>> blocks_past_the_peak([0.5, 0.8, 0.9, 0.89], tolerance=0.02)
    (3, 0)
    ```
    """
    scored = [(i, a) for i, a in enumerate(accuracies) if a is not None]
    if not scored:
        raise ValueError("No block has a probe accuracy.")
    best = max(a for _, a in scored)
    peak = max(i for i, a in scored if a >= best - tolerance)
    return peak, len(accuracies) - 1 - peak


class AutoReinitStrategy(Strategy):
    """Diagnoses the model on ``data``, then plans the re-initialization of the blocks past the probe's peak."""

    def validate(self, model: nn.Module) -> None:
        resolve_block_modules(model, self.config, 1, require_trainable=False)  # the blocks it re-draws come later

    def plan(self, model: nn.Module, *, data: Any = None) -> Plan:
        from ..diagnostics.diagnose import diagnose

        config = self.config
        report = diagnose(model, data, batches=config.calibration_batches)
        accuracies = report.block_probe_accuracy or []
        if not any(a is not None for a in accuracies):
            raise CalibrationDataError(
                "The auto strategy compares how well each block separates the classes, which needs at least two "
                f"classes with two samples or more in the calibration data; got {report.samples} samples."
            )
        peak, after = blocks_past_the_peak(accuracies, config.tolerance)
        cap = config.max_blocks if config.max_blocks is not None else depth_share_of_blocks(len(accuracies))
        num_blocks = min(after, cap)
        details = {
            "num_blocks": num_blocks,
            "peak_block": peak,
            "max_blocks": cap,
            "block_probe_accuracy": [None if a is None else round(a, 4) for a in accuracies],
            "samples": report.samples,
        }
        resets = plan_block_reinit(model, num_blocks, config) if num_blocks else []
        return Plan(resets, details)


register_strategy(AutoReinitConfig, AutoReinitStrategy)

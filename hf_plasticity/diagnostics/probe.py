"""How well each backbone block's output separates the downstream classes: a nearest-class-mean probe.

Pretrained features become more specific to the source task with depth. On downstream data close to the source, the
classes get easier to tell apart block after block; on atypical data, separability peaks at some intermediate block and
falls after it: the blocks past the peak re-encode the input for the source task. The probe measures that curve
cheaply, without training anything: the block outputs are averaged over space (or tokens), standardized, and each
sample is assigned to the nearest class mean computed without it (leave-one-out).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core.data import OVERFLOW_ADVICE, CalibrationDataError


def pool_block_output(output: Any) -> torch.Tensor:
    """One feature vector per sample from a block's output: NCHW maps and (N, tokens, D) sequences are averaged
    over their spatial or token axis; the first element of a tuple output is used."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        output = getattr(output, "last_hidden_state", None)
        if output is None:
            raise TypeError("A block output is neither a tensor, a tuple starting with one, nor a model output.")
    output = output.detach().float()
    if output.dim() == 4:
        return output.mean(dim=(2, 3))
    if output.dim() == 3:
        return output.mean(dim=1)
    return output.reshape(output.shape[0], -1)


def nearest_class_mean_accuracy(features: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Leave-one-out nearest-class-mean accuracy of ``features`` (N, D) for ``labels`` (N,).

    Features are standardized per dimension first. A sample counts as right when its own class's mean (without it) is
    strictly nearer than every other class's: a tie counts as wrong. Samples of a class with a single sample cannot
    be scored (their class has no mean without them) and are left out; None when fewer than two classes have two
    samples or more. Features must be finite ([`BlockFeatureProbe.accuracies`] checks them).

    Example:

    ```python
    >>> import torch
    >>> labels = torch.tensor([0, 0, 0, 1, 1, 1])
    >>> features = torch.tensor([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]])
    >>> nearest_class_mean_accuracy(features, labels)
    1.0
    ```
    """
    labels = labels.reshape(-1).to(features.device)
    classes, counts = labels.unique(return_counts=True)
    scorable = classes[counts >= 2]
    if len(scorable) < 2:
        return None
    keep = torch.isin(labels, scorable)
    features, labels = features[keep].double(), labels[keep]
    features = (features - features.mean(0)) / (features.std(0) + 1e-6)
    index = torch.searchsorted(scorable, labels)
    sums = torch.zeros(len(scorable), features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, index, features)
    counts = torch.bincount(index, minlength=len(scorable)).to(features.dtype)
    distances = torch.cdist(features, sums / counts[:, None])
    own_mean = (sums[index] - features) / (counts[index] - 1)[:, None]
    rows = torch.arange(len(labels), device=features.device)
    own = (features - own_mean).norm(dim=1)
    distances[rows, index] = torch.inf
    # A tie with another class's mean counts as wrong: constant features (a collapsed block) tell nothing apart, and
    # an argmin would credit them with the share of the first class.
    return float((own < distances.min(dim=1).values).double().mean())


class BlockFeatureProbe:
    """Context manager that records the pooled output of every named block during forward passes.

    Args:
        model: the model.
        block_names: the blocks to record, in depth order.

    Example:

    ```python
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> with BlockFeatureProbe(model, ["0", "2"]) as probe:
    ...     _ = model(torch.randn(6, 4))
    >>> [tuple(f.shape) for f in probe.features()]
    [(6, 8), (6, 2)]
    ```
    """

    def __init__(self, model: nn.Module, block_names: list[str]) -> None:
        self.model = model
        self.block_names = list(block_names)
        self._chunks: list[list[torch.Tensor]] = [[] for _ in self.block_names]
        self._handles: list[Any] = []

    def __enter__(self) -> BlockFeatureProbe:
        for index, name in enumerate(self.block_names):

            def hook(module: nn.Module, args: tuple, output: Any, index: int = index) -> None:
                self._chunks[index].append(pool_block_output(output))

            self._handles.append(self.model.get_submodule(name).register_forward_hook(hook))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def features(self) -> list[torch.Tensor]:
        """The recorded features, one (samples, dim) tensor per block."""
        return [torch.cat(chunks) if chunks else torch.empty(0) for chunks in self._chunks]

    def accuracies(self, labels: torch.Tensor) -> list[float | None]:
        """Leave-one-out nearest-class-mean accuracy of each block's features for ``labels``.

        Raises:
            CalibrationDataError: when a block's output holds NaN or infinite values (the model overflows on these
                inputs), naming the first such block: a probe of such features would measure nothing.
        """
        features = self.features()
        for name, block_features in zip(self.block_names, features):
            bad = int((~torch.isfinite(block_features)).sum())
            if bad:
                raise CalibrationDataError(
                    f"The output of block {name!r} holds {bad} NaN or infinite values (of {block_features.numel()}) "
                    "on the calibration data: the model overflows on these inputs, so the probe would measure "
                    f"nothing. {OVERFLOW_ADVICE}"
                )
        return [nearest_class_mean_accuracy(f, labels) if f.numel() else None for f in features]

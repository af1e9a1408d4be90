"""Plasticity diagnostics: what "loss of plasticity" looks like on downstream data, per layer and overall.

- tau-dormant ratio: share of hidden units whose normalized score E|h_i| / mean_k E|h_k| is <= tau (ReDo's score,
  on the units of [`hf_plasticity.core.units`]);
- mean |gradient| of the downstream loss, and the share of *insignificant* gradients: entries with
  |g| <= ``insignificant`` x the mean |g| of the whole network (a threshold relative to the network, so a restore
  that spreads the gradient shows as a falling share);
- mean |weight| (large weights with tiny gradients are the saturated signature);
- effective rank exp(-sum p_k log p_k), p_k = s_k / sum s, and stable rank (smallest k whose singular values sum to
  >= 0.99 of the total) of the penultimate features (the input of the head);
- per backbone block, the leave-one-out nearest-class-mean accuracy of its pooled output
([`hf_plasticity.diagnostics.probe`]):
  where the downstream classes are best told apart, and whether the late blocks make it worse.

Everything is streamed: per-unit sums, the gradient sums and the D x D Gram matrix of the features; activations are
never kept. Hooks are always removed; the model's gradients, ``training`` and ``requires_grad`` flags and the RNG
state are restored.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.architectures import LINEAR_OR_CONV, get_layout
from ..core.data import CalibrationDataError, downstream_loss, iter_batches
from ..core.targeting import Target
from ..core.units import ActivationMeter, normalized_scores, unit_groups
from ..core.unwrap import check_restorable, unwrap_model
from ..core.utilities import calibration_mode
from ..core.validators import check_number, check_positive_int
from .probe import BlockFeatureProbe


@dataclass
class LayerDiagnostics:
    """Diagnostics of one Linear/Conv layer. ``dormant_ratio`` and ``units`` are None for layers without units."""

    name: str
    block: int | None
    numel: int
    mean_abs_weight: float
    mean_abs_grad: float
    insignificant_grad_share: float
    dormant_ratio: float | None = None
    units: int | None = None


@dataclass
class DiagnosticsReport:
    """The result of [`diagnose`]: one row per Linear/Conv layer in depth order, and overall numbers.

    Print it for a table, call `to_dict()` / `to_json()` for data, `per_block()` for the numbers per backbone block,
    `plot(path)` for the figure.
    """

    layers: list[LayerDiagnostics]
    dormant_ratio: float | None
    mean_abs_grad: float
    insignificant_grad_share: float
    mean_abs_weight: float
    effective_rank: float | None
    stable_rank: int | None
    feature_dim: int | None
    samples: int
    batches: int
    tau: float
    insignificant: float
    seconds: float = 0.0
    block_probe_accuracy: list[float | None] | None = None
    blocks: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    def overall(self) -> dict[str, Any]:
        """The model-level numbers only."""
        keys = ("dormant_ratio", "mean_abs_grad", "insignificant_grad_share", "mean_abs_weight")
        return {k: getattr(self, k) for k in keys + ("effective_rank", "stable_rank", "feature_dim")}

    def __str__(self) -> str:
        def pct(value: float | None) -> str:
            return "-" if value is None else f"{value:.1%}"

        width = max([len("layer")] + [len(layer.name) for layer in self.layers])
        rank = "-" if self.effective_rank is None else f"{self.effective_rank:.1f}"
        lines = [
            f"Plasticity diagnostics on {self.samples} samples ({self.batches} batches), tau={self.tau}: "
            f"dormant {pct(self.dormant_ratio)}, insignificant grads {pct(self.insignificant_grad_share)}, "
            f"mean |g| {self.mean_abs_grad:.3g}, mean |w| {self.mean_abs_weight:.3g}, penultimate features: "
            f"effective rank {rank}, stable rank {self.stable_rank} of {self.feature_dim}",
            f"{'layer':<{width}}  {'block':>5}  {'dormant':>8}  {'mean|g|':>9}  {'insig.g':>8}  {'mean|w|':>9}",
        ]
        for layer in self.layers:
            block = "-" if layer.block is None else str(layer.block)
            lines.append(
                f"{layer.name:<{width}}  {block:>5}  {pct(layer.dormant_ratio):>8}  {layer.mean_abs_grad:>9.3g}  "
                f"{pct(layer.insignificant_grad_share):>8}  {layer.mean_abs_weight:>9.3g}"
            )
        if self.block_probe_accuracy:
            lines.append(
                "nearest-class-mean accuracy per block: " + " ".join(pct(a) for a in self.block_probe_accuracy)
            )
        return "\n".join(lines)

    def per_block(self) -> list[dict[str, Any]]:
        """Per backbone block (depth order): its name, the probe accuracy, and over its Linear/Conv layers the
        dormant ratio (over all their units), the insignificant-gradient share and the mean |w| (over all their
        weights). Missing values are None."""
        names = self.blocks or [str(i) for i in range(len(self.block_probe_accuracy or []))]
        rows = []
        for index, name in enumerate(names):
            layers = [layer for layer in self.layers if layer.block == index]
            numel = sum(layer.numel for layer in layers)
            units = sum(layer.units or 0 for layer in layers)

            def mean(values: list[tuple[float, int]], total: int) -> float | None:
                return sum(value * weight for value, weight in values) / total if total else None

            probe = self.block_probe_accuracy[index] if index < len(self.block_probe_accuracy or []) else None
            rows.append(
                {
                    "block": name,
                    "probe_accuracy": probe,
                    "dormant_ratio": mean([(x.dormant_ratio, x.units) for x in layers if x.units], units),
                    "insignificant_grad_share": mean([(x.insignificant_grad_share, x.numel) for x in layers], numel),
                    "mean_abs_weight": mean([(x.mean_abs_weight, x.numel) for x in layers], numel),
                }
            )
        return rows

    def plot(self, path: str | None = None, *, title: str | None = None):
        """The plasticity picture per backbone block ([`hf_plasticity.diagnostics.figure.plot_plasticity`]): saved as a
        PNG at ``path`` (returned), or the matplotlib figure when ``path`` is None (a notebook shows it)."""
        from .figure import plot_plasticity

        return plot_plasticity(self, path=path, title=title)


def effective_rank(singular_values: torch.Tensor) -> float:
    """exp of the entropy of the normalized singular values (Roy & Vetterli, 2007)."""
    s = singular_values.double().clamp_min(0)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))


def stable_rank(singular_values: torch.Tensor, threshold: float = 0.99) -> int:
    """Smallest k whose k largest singular values sum to >= ``threshold`` of the total."""
    s = singular_values.double().clamp_min(0).sort(descending=True).values
    total = s.sum()
    if total <= 0:
        return 0
    return int((torch.cumsum(s, 0) < threshold * total).sum().item()) + 1


def _penultimate(model: nn.Module, head: list[str]) -> nn.Module | None:
    linears = [m for name in head for m in model.get_submodule(name).modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def diagnose(
    model: nn.Module,
    data: Any,
    *,
    batches: int = 8,
    tau: float = 0.1,
    insignificant: float = 0.01,
    batch_size: int = 32,
) -> DiagnosticsReport:
    """Measures the plasticity of ``model`` on downstream ``data`` (one streaming pass, no optimizer step).

    Args:
        model: a transformers image classifier or any torch vision model, with its downstream head attached, or a
            wrapper of it (DDP, DataParallel, ``torch.compile``, Accelerate): the model inside is diagnosed, under
            its own layer names.
        data: a DataLoader, a `datasets.Dataset` with ``pixel_values`` and ``labels``, or an iterable of such dicts.
        batches: how many batches to read.
        tau: dormancy threshold on the normalized activation score (>= 0).
        insignificant: a gradient entry is insignificant when |g| <= this x the network's mean |g|.
        batch_size: rows per batch when ``data`` is a `datasets.Dataset`.

    Returns:
        [`DiagnosticsReport`].

    Example:

    ```python
    >>> import torch
    >>> from transformers import ViTConfig, ViTForImageClassification
    >>> from hf_plasticity import diagnose
    >>> model = ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32,
    ...     num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=3))
    >>> data = [{"pixel_values": torch.randn(4, 3, 32, 32), "labels": torch.tensor([0, 1, 2, 0])}]
    >>> report = diagnose(model, data)
    >>> 0 <= report.dormant_ratio <= 1
    True
    ```
    """
    model = unwrap_model(model)
    check_restorable(model, writes=False)
    if data is None:
        raise CalibrationDataError(
            "diagnose needs downstream data: pass a DataLoader, a datasets.Dataset with `pixel_values` and `labels`, "
            "or an iterable of such dicts."
        )
    check_number("tau", tau, low=0)
    check_number("insignificant", insignificant, low=0)
    check_positive_int("batches", batches)
    check_positive_int("batch_size", batch_size)
    start = time.perf_counter()
    layout = get_layout(model)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, LINEAR_OR_CONV)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Linear or Conv layer to diagnose.")
    targets = [Target(f"{n}.weight", n, "weight", m.weight, layout.block_of(n)) for n, m in layers]
    groups = unit_groups(model, layout)
    head = _penultimate(model, layout.head)
    grad_sums = [torch.zeros_like(t.tensor, dtype=torch.float32) for t in targets]
    gram: dict[str, Any] = {}

    def feature_hook(module: nn.Module, args: tuple) -> None:
        x = args[0].detach().double().reshape(-1, args[0].shape[-1])
        gram["G"] = gram.get("G", 0) + x.T @ x

    count = samples = 0
    labels = []
    handle = head.register_forward_pre_hook(feature_hook) if head is not None else None
    try:
        with (
            calibration_mode(model, targets),
            ActivationMeter(model, groups) as meter,
            BlockFeatureProbe(model, layout.blocks) as probe,
        ):
            for batch in iter_batches(data, batches, batch_size):
                labels.append(batch[1].reshape(-1).cpu())
                loss = downstream_loss(model, batch)
                grads = torch.autograd.grad(loss, [t.tensor for t in targets], allow_unused=True)
                for total, grad in zip(grad_sums, grads):
                    if grad is not None:
                        total += grad.float()
                count += 1
                samples += int(batch[1].shape[0])
    finally:
        if handle is not None:
            handle.remove()
    probe_accuracy = probe.accuracies(torch.cat(labels)) if labels else None
    report = _report(
        layers,
        targets,
        grad_sums,
        count,
        samples,
        meter.means(),
        groups,
        gram.get("G"),
        tau,
        insignificant,
        time.perf_counter() - start,
    )
    report.block_probe_accuracy = probe_accuracy
    report.blocks = list(layout.blocks)
    return report


def block_probe_accuracy(
    model: nn.Module, data: Any, *, batches: int = 8, batch_size: int = 32
) -> tuple[list[float | None], int, float]:
    """The probe of [`diagnose`] alone: per backbone block, the nearest-class-mean accuracy of its pooled output on
    ``data``, from forward passes only (no gradient: about half the cost of [`diagnose`]'s pass). The same features
    as [`diagnose`]'s (eval mode, the same probe); the model's modes, ``requires_grad`` flags, gradients and RNG
    state are left as they were.

    Returns:
        `(accuracies, samples, seconds)`: one accuracy (or None) per block in depth order, the images read, the time.
    """
    model = unwrap_model(model)
    check_restorable(model, writes=False)
    if data is None:
        raise CalibrationDataError("The probe needs labelled downstream data.")
    start = time.perf_counter()
    layout = get_layout(model)
    labels = []
    with calibration_mode(model, []), torch.no_grad(), BlockFeatureProbe(model, layout.blocks) as probe:
        for batch in iter_batches(data, batches, batch_size):
            labels.append(batch[1].reshape(-1).cpu())
            downstream_loss(model, batch)  # the forward pass (and the check that the labels fit the head)
    accuracies = probe.accuracies(torch.cat(labels))
    return accuracies, sum(len(chunk) for chunk in labels), time.perf_counter() - start


def _report(layers, targets, grad_sums, count, samples, means, groups, gram, tau, insignificant, seconds):
    abs_grads = [(total / max(count, 1)).abs() for total in grad_sums]
    total_numel = sum(g.numel() for g in abs_grads)
    network_mean = sum(float(g.sum()) for g in abs_grads) / max(total_numel, 1)
    threshold = insignificant * network_mean
    dormant = {}
    for group in groups:
        if group.producer in means:
            scores = normalized_scores(means[group.producer])
            dormant[group.producer] = (int((scores <= tau).sum()), scores.numel())
    rows = []
    for (name, _), target, grad in zip(layers, targets, abs_grads):
        dead, units = dormant.get(name, (None, None))
        rows.append(
            LayerDiagnostics(
                name=name,
                block=target.block,
                numel=grad.numel(),
                mean_abs_weight=float(target.tensor.detach().float().abs().mean()),
                mean_abs_grad=float(grad.mean()),
                insignificant_grad_share=float((grad <= threshold).float().mean()),
                dormant_ratio=None if units is None else dead / units,
                units=units,
            )
        )
    total_dead = sum(d for d, _ in dormant.values())
    total_units = sum(u for _, u in dormant.values())
    eff = stab = dim = None
    if gram is not None:
        singular = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt()
        eff, stab, dim = effective_rank(singular), stable_rank(singular), int(gram.shape[0])
    weights = sum(r.mean_abs_weight * r.numel for r in rows)
    return DiagnosticsReport(
        layers=rows,
        dormant_ratio=total_dead / total_units if total_units else None,
        mean_abs_grad=network_mean,
        insignificant_grad_share=sum(float((g <= threshold).sum()) for g in abs_grads) / max(total_numel, 1),
        mean_abs_weight=weights / max(total_numel, 1),
        effective_rank=None if eff is None or math.isnan(eff) else eff,
        stable_rank=stab,
        feature_dim=dim,
        samples=samples,
        batches=count,
        tau=float(tau),
        insignificant=float(insignificant),
        seconds=seconds,
    )

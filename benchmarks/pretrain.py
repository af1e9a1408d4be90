"""The source-pretraining recipe of the bench's small transformers models, and the check that they are pretrained.

A model only counts as pretrained (a model whose plasticity could have been lost) when its source test accuracy
reached [`SOURCE_ACC_THRESHOLD`] and its last [`FLAT_EPOCHS`] epochs were flat (all within [`FLAT_TOLERANCE`] of
the final accuracy). The recipe that gets small transformers there:

- AdamW over the library's [`plasticity_param_groups`] (no weight decay on biases and norms);
- a linear warmup, then a cosine decay to zero (transformers' `get_cosine_schedule_with_warmup`), stepped per batch;
- random crops (replicate padding) and horizontal flips, label smoothing;
- the source's own validation split for choices (the learning-rate sweep), its test split reported per epoch;
- a checkpoint after every epoch, so an interrupted run resumes where it stopped with the same result.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .training import augment, batches, epoch_order, evaluate, forward_logits

#: Source test accuracy a small model must reach before the bench reports restore results on it.
SOURCE_ACC_THRESHOLD = 0.90
#: The last this many epochs must be flat ...
FLAT_EPOCHS = 3
#: ... i.e. each within this much accuracy of the final epoch's.
FLAT_TOLERANCE = 0.01

CURVE_KEYS = ("epoch", "lr", "train_loss", "train_acc", "val_acc", "test_acc", "epoch_seconds")


@dataclass(frozen=True)
class PretrainConfig:
    """How the bench pretrains one small transformers model on its source.

    Args:
        epochs (`int`, *optional*, defaults to 40): passes over the source training set.
        lr (`float`, *optional*, defaults to 1e-3): peak AdamW learning rate (one value for the whole model).
        warmup_ratio (`float`, *optional*, defaults to 0.1): share of the optimizer steps spent in the linear warmup;
            a cosine decay to zero follows.
        weight_decay (`float`, *optional*, defaults to 0.05): AdamW weight decay (not on biases and norms).
        label_smoothing (`float`, *optional*, defaults to 0.1): label smoothing of the cross-entropy loss.
        batch_size (`int`, *optional*, defaults to 64): training batch size.
        crop_padding (`int`, *optional*, defaults to 4): random crops from the image padded by this many pixels
            (replicating the border); 0 turns crops off.
        hflip (`bool`, *optional*, defaults to `True`): random horizontal flips (every source class is symmetric).
        n_train (`int`, *optional*, defaults to 8000): source training images.
        seed (`int`, *optional*, defaults to 0): seed of the weights, the data order and the augmentation.
    """

    epochs: int = 40
    lr: float = 1e-3
    warmup_ratio: float = 0.1
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    batch_size: int = 64
    crop_padding: int = 4
    hflip: bool = True
    n_train: int = 8000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "n_train"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PretrainConfig.{name} must be an integer >= 1, got {value!r}.")
        if isinstance(self.crop_padding, bool) or not isinstance(self.crop_padding, int) or self.crop_padding < 0:
            raise ValueError(f"PretrainConfig.crop_padding must be an integer >= 0, got {self.crop_padding!r}.")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"PretrainConfig.lr must be a finite number > 0, got {self.lr!r}.")
        for name in ("warmup_ratio", "label_smoothing"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < 1):
                raise ValueError(f"PretrainConfig.{name} must be in [0, 1), got {value!r}.")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"PretrainConfig.weight_decay must be >= 0, got {self.weight_decay!r}.")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PretrainConfig:
        """The recipe saved with a checkpoint (unknown keys are rejected with the accepted ones)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown PretrainConfig field(s) {unknown}; accepted values: {sorted(known)}.")
        return cls(**values)


def check_source_curve(test_acc: list[float]) -> dict[str, Any]:
    """Whether a source test-accuracy curve shows a pretrained (saturated) model.

    Returns:
        `dict`: `final` (last epoch's accuracy), `spread` (largest distance of the last [`FLAT_EPOCHS`] epochs from
        the final one), `flat`, `above_threshold`, `passed` (both), `plateau_epoch` (the first epoch from which every
        epoch is within [`FLAT_TOLERANCE`] of the final one: how long before the end the curve stopped moving, which
        a cosine decay to zero alone cannot fake) and the constants used.
    """
    final = test_acc[-1] if test_acc else 0.0
    last = test_acc[-FLAT_EPOCHS:]
    spread = max(abs(a - final) for a in last) if last else math.inf
    plateau = len(test_acc)
    while plateau > 1 and abs(test_acc[plateau - 2] - final) <= FLAT_TOLERANCE + 1e-12:
        plateau -= 1
    flat = len(test_acc) >= FLAT_EPOCHS and spread <= FLAT_TOLERANCE + 1e-12
    above = final >= SOURCE_ACC_THRESHOLD
    return {
        "final": final,
        "spread": spread,
        "flat": flat,
        "above_threshold": above,
        "passed": flat and above,
        "plateau_epoch": plateau,
        "threshold": SOURCE_ACC_THRESHOLD,
        "flat_epochs": FLAT_EPOCHS,
        "flat_tolerance": FLAT_TOLERANCE,
    }


def _empty_curve() -> dict[str, list[float]]:
    return {key: [] for key in CURVE_KEYS}


def _save_state(path: Path, state: dict[str, Any]) -> None:
    """`torch.save` into a temporary file, then move it into place (a crash never leaves half a checkpoint)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train_source(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    config: PretrainConfig,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    state_dir: str | os.PathLike | None = None,
    progress: bool = False,
    desc: str = "pretrain",
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train `model` from scratch on a source with the recipe `config`; resumable from `state_dir`.

    After every epoch the accuracy on `val` and `test` (clean images, eval mode) is recorded, and, when `state_dir`
    is given, the model, optimizer, scheduler and curve are saved to `state_dir/state.pt`; a later call with the same
    `state_dir` continues after the last finished epoch (the data order and augmentation are functions of the seed
    and the epoch, so a resumed run gives the same weights as an uninterrupted one).

    Args:
        model (`nn.Module`): a freshly initialized classifier.
        train (`tuple[torch.Tensor, torch.Tensor]`): training `(pixel_values, labels)`.
        config ([`PretrainConfig`]): the recipe.
        val (`tuple[torch.Tensor, torch.Tensor]`, *optional*): the split for choices (recorded as `val_acc`).
        test (`tuple[torch.Tensor, torch.Tensor]`, *optional*): the held-out split (recorded as `test_acc`).
        state_dir (`str` or `os.PathLike`, *optional*): folder of the per-epoch checkpoint.
        progress (`bool`, *optional*, defaults to `False`): show a tqdm bar over the optimizer steps.
        desc (`str`, *optional*): the bar's label.
        on_epoch (`Callable[[dict], None]`, *optional*): called after every epoch with that epoch's curve entries.

    Returns:
        `dict`: `curve` (one entry per epoch of `CURVE_KEYS`; accuracies None for a missing split),
        `wall_seconds` (training and evaluation time over every session) and `sessions` (1 + resumes).
    """
    from transformers import get_cosine_schedule_with_warmup

    from hf_plasticity import plasticity_param_groups

    labels = train[1]
    steps_per_epoch = math.ceil(len(labels) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    groups = plasticity_param_groups(model, lr=config.lr, weight_decay=config.weight_decay)
    optimizer = torch.optim.AdamW(groups)
    scheduler = get_cosine_schedule_with_warmup(optimizer, round(config.warmup_ratio * total_steps), total_steps)
    curve, wall, sessions = _empty_curve(), 0.0, 1
    state_path = Path(state_dir) / "state.pt" if state_dir is not None else None
    if state_path is not None and state_path.exists():
        state = torch.load(state_path, weights_only=False)
        if state["config"] != asdict(config):
            raise ValueError(f"{state_path} was written by another recipe ({state['config']}), not {asdict(config)}.")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        curve, wall, sessions = state["curve"], state["wall_seconds"], state["sessions"] + 1
    start_epoch = len(curve["epoch"])
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=start_epoch * steps_per_epoch, desc=desc, dynamic_ncols=True)
    for epoch in range(start_epoch, config.epochs):
        start = time.perf_counter()
        model.train()
        order = epoch_order(len(labels), config.seed, epoch)
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch + 1_000_000)
        lr = scheduler.get_last_lr()[0]
        total_loss, correct = 0.0, 0
        for batch_images, targets in batches(train, config.batch_size, order):
            batch = augment(batch_images, generator, config.crop_padding, config.hflip)
            logits = forward_logits(model, batch)
            loss = F.cross_entropy(logits, targets, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(targets)
            correct += (logits.argmax(-1) == targets).sum().item()
            if bar is not None:
                bar.update(1)
        row = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": total_loss / len(labels),
            "train_acc": correct / len(labels),
            "val_acc": evaluate(model, *val) if val is not None else None,
            "test_acc": evaluate(model, *test) if test is not None else None,
        }
        row["epoch_seconds"] = time.perf_counter() - start
        wall += row["epoch_seconds"]
        for key in CURVE_KEYS:
            curve[key].append(row[key])
        if bar is not None:
            shown = {k: f"{row[k]:.3f}" for k in ("train_loss", "val_acc", "test_acc") if row[k] is not None}
            bar.set_postfix(epoch=epoch + 1, **shown)
        if on_epoch is not None:
            on_epoch(row)
        if state_path is not None:
            _save_state(
                state_path,
                {
                    "config": asdict(config),
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "curve": curve,
                    "wall_seconds": wall,
                    "sessions": sessions,
                },
            )
    if bar is not None:
        bar.close()
    return {"curve": curve, "wall_seconds": wall, "sessions": sessions}


def plot_source_curve(
    curves: dict[str, dict[str, list[float]]], path: str | os.PathLike, title: str | None = None
) -> Path:
    """One PNG: per model, the source test (and validation) accuracy and the training loss per epoch.

    Args:
        curves (`dict`): model name -> its `curve` (as recorded by [`train_source`]).
        path (`str` or `os.PathLike`): where the PNG goes.
        title (`str`, *optional*): the figure's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    palette = plt.get_cmap("tab10")
    for i, (name, curve) in enumerate(curves.items()):
        color = palette(i % 10)
        epochs = curve["epoch"]
        if any(v is not None for v in curve["test_acc"]):
            acc_ax.plot(epochs, [100 * v for v in curve["test_acc"]], color=color, label=f"{name} test")
        if any(v is not None for v in curve["val_acc"]):
            acc_ax.plot(epochs, [100 * v for v in curve["val_acc"]], color=color, linestyle=":", label=f"{name} val")
        loss_ax.plot(epochs, curve["train_loss"], color=color, label=name)
    acc_ax.axhline(100 * SOURCE_ACC_THRESHOLD, color="grey", linestyle="--", linewidth=1, label="threshold")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("source accuracy (%)")
    acc_ax.grid(alpha=0.3)
    acc_ax.legend(fontsize=7, loc="lower right")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("training loss (label-smoothed, augmented)")
    loss_ax.set_yscale("log")
    loss_ax.grid(alpha=0.3)
    loss_ax.legend(fontsize=7)
    fig.suptitle(title or "source pretraining")
    return save_figure(fig, path)


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Lay out a matplotlib figure, save it as a PNG at `path` (creating its folder) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_json(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Write `record` as JSON through a temporary file (never half a file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    os.replace(tmp, path)


def source_table(metrics: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown rows, one per source-pretrained model: parameters, recipe, final source test accuracy, the flatness
    check, where the curve stopped moving, and the wall time with the threads and the load it ran under."""
    lines = [
        "| model | parameters | epochs | lr | final source test acc % | spread of the last epochs (points) | "
        "plateau from epoch | passed | final val acc % | wall min (threads, 1-min load start-end) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in metrics.items():
        check = check_source_curve(m["curve"]["test_acc"])
        load = m["loadavg_1min"]
        val = m["curve"]["val_acc"][-1]
        lines.append(
            f"| {name} | {m['parameters']:,} | {m['recipe']['epochs']} | {m['recipe']['lr']:g} | "
            f"{100 * check['final']:.1f} | {100 * check['spread']:.1f} | {check['plateau_epoch']} | "
            f"{'yes' if check['passed'] else 'NO'} | {'n/a' if val is None else f'{100 * val:.1f}'} | "
            f"{m['wall_seconds'] / 60:.1f} ({m['threads']}, {load['start']:.1f}-{load['end']:.1f}) |"
        )
    return lines


def write_source_report(metrics: dict[str, dict[str, Any]], output_dir: str | os.PathLike) -> Path:
    """Write `source_pretraining.md` (the table of [`source_table`]), `source_pretraining.json` (every model's
    recorded metrics and curve, without the weights) and `source_curves.png` into `output_dir`.

    Returns:
        `Path` of `source_pretraining.md`.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "source_pretraining.json", metrics)
    curves = {name: m["curve"] for name, m in metrics.items()}
    plot_source_curve(curves, output_dir / "source_curves.png", title="source pretraining (shapes)")
    md = output_dir / "source_pretraining.md"
    md.write_text("\n".join(source_table(metrics)) + "\n")
    return md

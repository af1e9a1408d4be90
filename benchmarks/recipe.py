"""The benchmark's fine-tuning recipe (version 2): AdamW over the library's parameter groups, linear warmup then
cosine decay, light augmentation, and the accuracy on a validation split and on the test split after every epoch.

Choices (learning rates, block counts, strategy settings) are made on the validation accuracy only; the test split is
read only by the confirmation runs of the configuration validation chose (tuning runs pass ``test=None``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hf_plasticity.core.data import model_device_dtype

from .training import Split, augment, batches, epoch_order, evaluate, forward_logits


@dataclass
class Recipe:
    """One fine-tuning configuration.

    Args:
        epochs (`int`): passes over the training split.
        backbone_lr (`float`): peak learning rate of the pretrained backbone.
        head_lr (`float`): peak learning rate of the new classification head.
        reinit_lr (`float`, *optional*): peak learning rate of the blocks a restore re-drew whole (None: backbone_lr).
        boosted_blocks (`int`, *optional*, defaults to 0): the control arm: the last this many blocks get
            `reinit_lr` without being re-drawn.
        layer_decay (`float`, *optional*): layer-wise learning-rate decay over the pretrained blocks.
        probe_fraction (`float`, *optional*, defaults to 0): LP-FT (Kumar et al., ICLR 2022): the first
            ``round(probe_fraction * epochs)`` epochs train the head alone (a linear probe: every other parameter
            frozen, the model in eval mode but the head, so the features and the BatchNorm statistics stay the
            pretrained ones), with their own warmup and cosine decay; then the remaining epochs fine-tune everything
            with a fresh optimizer and schedule. 0: plain fine-tuning.
        weight_decay (`float`, *optional*, defaults to 0.05): AdamW weight decay (not on biases and norms).
        warmup (`float`, *optional*, defaults to 0.1): share of the steps with a linear warmup, then cosine decay to 0.
        shift (`int`, *optional*, defaults to 2): augmentation: random translations of up to this many pixels
            (reflect padding, then a random crop); 0 for none. No flips: they change digits.
        batch_size (`int`, *optional*, defaults to 32): training batch size.
        seed (`int`, *optional*, defaults to 0): data order, augmentation and dropout.
    """

    epochs: int
    backbone_lr: float
    head_lr: float
    reinit_lr: float | None = None
    boosted_blocks: int = 0
    layer_decay: float | None = None
    probe_fraction: float = 0.0
    weight_decay: float = 0.05
    warmup: float = 0.1
    shift: int = 2
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.probe_fraction <= 1:
            raise ValueError(f"probe_fraction is a share of the epochs, in [0, 1]; got {self.probe_fraction}.")

    @property
    def probe_epochs(self) -> int:
        """The epochs of the linear probe (the head alone) before the full fine-tuning."""
        return round(self.probe_fraction * self.epochs)

    def to_dict(self) -> dict:
        return asdict(self)


def optimizer_for(model: nn.Module, recipe: Recipe, head_only: bool = False) -> torch.optim.AdamW:
    """AdamW over [`plasticity_param_groups`]: backbone, re-drawn (or boosted) blocks and head at their own rates
    (with ``head_only``, the head's groups alone: LP-FT's linear probe)."""
    from hf_plasticity import get_layout, plasticity_param_groups

    redrawn = None
    if recipe.boosted_blocks:
        redrawn = {"whole": get_layout(model).blocks[-recipe.boosted_blocks :], "partial": []}
    groups = plasticity_param_groups(
        model,
        lr=recipe.backbone_lr,
        reinit_lr=recipe.reinit_lr,
        head_lr=recipe.head_lr,
        weight_decay=recipe.weight_decay,
        layer_decay=recipe.layer_decay,
        redrawn=redrawn,
    )
    if head_only:
        groups = [group for group in groups if group["name"].split(".")[0] == "head"]
    return torch.optim.AdamW(groups)


def fine_tune_v2(
    model: nn.Module,
    train: Split,
    val: Split | None,
    test: Split | None,
    recipe: Recipe,
    on_epoch: Callable[[int, dict[str, list[float]]], None] | None = None,
) -> dict[str, list[float] | None]:
    """Fine-tunes ``model`` with ``recipe``: the benchmark's one fine-tuning loop (the study's runs and the demo).

    Args:
        model (`nn.Module`): a transformers image classifier or a plain module returning logits.
        train (`Split`): training ``(pixel_values, labels)``; they stay on the CPU (the same random draws on any
            device), each batch goes to the model's device.
        val (`Split`, *optional*): the split choices are made on, evaluated after every epoch (None: not evaluated).
        test (`Split`, *optional*): evaluated after every epoch; tuning runs pass None, so it is never read.
        recipe ([`Recipe`]): the configuration.
        on_epoch (`Callable`, *optional*): called after every epoch with the epoch (1-based) and the history so far.

    Returns:
        `dict`: per epoch ``val_acc`` and ``test_acc`` (None for a split not given), ``train_loss`` and
        ``epoch_seconds`` (training time only).
    """
    from transformers import get_cosine_schedule_with_warmup

    torch.manual_seed(recipe.seed)
    labels = train[1]
    device, _ = model_device_dtype(model)
    per_epoch = -(-len(labels) // recipe.batch_size)
    generator = torch.Generator().manual_seed(recipe.seed * 7919 + 1)
    history: dict[str, list[float]] = {"val_acc": [], "test_acc": [], "train_loss": [], "epoch_seconds": []}
    probe = recipe.probe_epochs
    frozen: list[nn.Parameter] = []
    for epoch in range(recipe.epochs):
        if epoch in (0, probe):  # a phase starts: its own optimizer and schedule (LP-FT: the probe, then the rest)
            for param in frozen:  # the probe is over: everything trains (thawed first: the optimizer takes only
                param.requires_grad_(True)  # parameters that need a gradient)
            probing = epoch < probe
            optimizer = optimizer_for(model, recipe, head_only=probing)
            steps = ((probe if probing else recipe.epochs) - epoch) * per_epoch
            schedule = get_cosine_schedule_with_warmup(optimizer, round(recipe.warmup * steps), steps)
            frozen = _freeze_all_but(model, optimizer) if probing else []
        if frozen:
            _probe_mode(model)
        else:
            model.train()
        start, total = time.perf_counter(), 0.0
        for images, targets in batches(train, recipe.batch_size, epoch_order(len(labels), recipe.seed, epoch)):
            batch = augment(images, generator, recipe.shift, hflip=False, padding_mode="reflect")
            loss = F.cross_entropy(forward_logits(model, batch.to(device)), targets.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(targets)
        history["epoch_seconds"].append(time.perf_counter() - start)
        history["train_loss"].append(total / max(len(labels), 1))
        for name, split in (("val_acc", val), ("test_acc", test)):
            if split is not None:
                history[name].append(evaluate(model, *split))
        if on_epoch is not None:
            on_epoch(epoch + 1, history)
    for param in frozen:  # a probe that took every epoch
        param.requires_grad_(True)
    return {
        **history,
        "val_acc": history["val_acc"] if val is not None else None,
        "test_acc": history["test_acc"] if test is not None else None,
    }


def _freeze_all_but(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[nn.Parameter]:
    """Stops the gradient of every trainable parameter the optimizer does not train; returns them (to thaw)."""
    trained = {id(param) for group in optimizer.param_groups for param in group["params"]}
    frozen = [param for param in model.parameters() if param.requires_grad and id(param) not in trained]
    for param in frozen:
        param.requires_grad_(False)
    return frozen


def _probe_mode(model: nn.Module) -> None:
    """The linear probe's modes: the model in eval mode (no BatchNorm statistics updated, no dropout in the frozen
    features), the head in training mode."""
    from hf_plasticity import get_layout

    model.eval()
    modules = dict(model.named_modules())
    for name in get_layout(model).head:
        modules[name].train()


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(keep, held_out)``: ``fraction`` of each class held out (at least one example per class), seeded.

    Example:

    ```python
    >>> import torch
    >>> from benchmarks.recipe import stratified_split
    >>> keep, held = stratified_split(torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1]), 0.25, seed=0)
    >>> len(keep), len(held), sorted(torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])[held].tolist())
    (7, 3, [0, 1, 1])
    ```
    """
    generator = torch.Generator().manual_seed(seed)
    keep, held = [], []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).reshape(-1)
        members = members[torch.randperm(len(members), generator=generator)]
        cut = max(1, round(fraction * len(members)))
        held.append(members[:cut])
        keep.append(members[cut:])
    return torch.sort(torch.cat(keep)).values, torch.sort(torch.cat(held)).values

"""What every training loop of the benchmark shares (the fine-tuning recipe and the source pretraining): the seeded
data order and its batches (a torch `DataLoader`), the augmentation, the forward pass, the evaluation, the
classification head, and the calibration batches handed to a restore.

Every random draw is a function of a seed and stays on the CPU, so a run gives the same numbers on any device.
"""

from __future__ import annotations

from itertools import islice

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, TensorDataset

from hf_plasticity.core.data import model_device_dtype

Split = tuple[torch.Tensor, torch.Tensor]


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of `n` training examples for `epoch`, a function of `(seed, epoch)` only."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator)


def batches(split: Split, batch_size: int, order: torch.Tensor | None = None) -> DataLoader:
    """The `(images, labels)` batches of ``split`` in ``order`` (a permutation of its indices; None: in order), the
    last one shorter, each gathered from the tensors with one index (no per-example collation): the same batches, and
    the same random draws around them, as slicing ``order`` by hand.

    Example:

    ```python
    >>> import torch
    >>> from benchmarks.training import batches
    >>> split = (torch.arange(5.0), torch.tensor([0, 1, 0, 1, 0]))
    >>> [labels.tolist() for _, labels in batches(split, 2, order=torch.tensor([4, 3, 2, 1, 0]))]
    [[0, 1], [0, 1], [0]]
    ```
    """
    indices = range(len(split[1])) if order is None else order.tolist()
    sampler = BatchSampler(indices, batch_size, drop_last=False)
    # A generator of its own: an iterator draws its base seed from it, not from torch's global generator (which seeds
    # the head, the restore and dropout: one draw more there would change every run).
    return DataLoader(TensorDataset(*split), sampler=sampler, batch_size=None, generator=torch.Generator())


def forward_logits(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Logits of a transformers model (`model(pixel_values=...).logits`) or of a plain module (`model(x)`)."""
    from transformers import PreTrainedModel

    if isinstance(model, PreTrainedModel):
        return model(pixel_values=pixel_values).logits
    out = model(pixel_values)
    return out.logits if hasattr(out, "logits") else out


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Accuracy of `model` on `(images, labels)`, in eval mode (the previous mode is restored); the batches go to the
    model's device."""
    was_training = model.training
    model.eval()
    correct, (device, _) = 0, model_device_dtype(model)
    for batch, batch_labels in batches((images, labels), batch_size):
        correct += (forward_logits(model, batch.to(device)).argmax(-1).cpu() == batch_labels).sum().item()
    model.train(was_training)
    return correct / max(len(labels), 1)


def augment(
    images: torch.Tensor, generator: torch.Generator, crop_padding: int, hflip: bool, padding_mode: str = "replicate"
) -> torch.Tensor:
    """Random crops (of the image padded by `crop_padding`) and horizontal flips of a batch: the source pretraining's
    augmentation, and with `hflip=False` the fine-tuning recipe's random shifts.

    Args:
        images (`torch.Tensor`): `(N, C, H, W)` batch.
        generator (`torch.Generator`): the source of every random choice (seeded per epoch by the caller).
        crop_padding (`int`): maximal shift in pixels; 0 leaves the images in place.
        hflip (`bool`): flip each image with probability 1/2.
        padding_mode (`str`, *optional*, defaults to `"replicate"`): how the border is extended (`F.pad`'s mode).
    """
    n, c, h, w = images.shape
    out = images
    if crop_padding > 0:
        padded = F.pad(images, (crop_padding,) * 4, mode=padding_mode)
        dy = torch.randint(0, 2 * crop_padding + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * crop_padding + 1, (n,), generator=generator)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
        out = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    if hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    return out


def find_head(model: nn.Module) -> tuple[str, nn.Linear]:
    """The classification head: the last `nn.Linear` in module order (as in the library's structural fallback)."""
    head = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            head = (name, module)
    if head is None:
        raise ValueError(f"{type(model).__name__} has no nn.Linear to use as the classification head.")
    return head


def calibration_data(train: Split, num_batches: int, batch_size: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """The first `num_batches` training batches of a seeded order, as dicts the library's `data` accepts."""
    order = epoch_order(len(train[1]), seed, epoch=-1)
    return [
        {"pixel_values": images, "labels": labels}
        for images, labels in islice(batches(train, batch_size, order), num_batches)
    ]

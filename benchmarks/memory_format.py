"""How much faster a bench model trains channels-last (NHWC) than in PyTorch's default (contiguous) memory format.

Times one training step (forward, cross-entropy, backward, AdamW) of the same model in both formats, in interleaved
rounds so a busy machine slows both alike, and prints the median time per step of each and their ratio, measured in
one run. `ModelSpec.channels_last` keeps the models that gain from it channels-last.

Usage (from the repository root):

    python -m benchmarks.memory_format [--model efficientnet_lite0] [--threads 1] [--rounds 7] [--steps 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from .models import MODEL_SPECS, load_model, transformers_model_from_config
from .training import forward_logits

FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def step_seconds(
    model: nn.Module, image_size: int, batch_size: int = 32, rounds: int = 7, steps: int = 3
) -> dict[str, float]:
    """The median seconds of one training step of ``model`` in each of `FORMATS` (the first round is a warm-up).

    Args:
        model (`nn.Module`): an image classifier (a transformers model or a plain module); it is copied, not trained.
        image_size (`int`): side of the random images it is fed.
        batch_size (`int`, *optional*, defaults to 32): images per step.
        rounds (`int`, *optional*, defaults to 7): rounds of ``steps`` steps per format, at least 2; the formats take
            turns going first, so a machine that slows down during a round slows both.
        steps (`int`, *optional*, defaults to 3): training steps per round and format.

    Returns:
        `dict[str, float]`: seconds per step, keyed by the names of `FORMATS`.

    Example:

    ```python
    >>> from torch import nn
    >>> from benchmarks.memory_format import step_seconds
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    >>> sorted(step_seconds(model, image_size=8, batch_size=2, rounds=2, steps=1))
    ['channels_last', 'contiguous']
    ```
    """
    if rounds < 2:
        raise ValueError(f"rounds must be at least 2 (the first is a warm-up), got {rounds}.")
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
    labels = torch.randint(0, 2, (batch_size,), generator=generator)
    copies = {}
    for name, memory_format in FORMATS.items():
        copied = copy.deepcopy(model)
        forward_logits(copied, images)  # materializes lazy modules before their format and the optimizer
        copied.to(memory_format=memory_format)
        copies[name] = (copied, torch.optim.AdamW(copied.parameters(), lr=1e-4))
    times: dict[str, list[float]] = {name: [] for name in FORMATS}
    for round_index in range(rounds):
        order = list(copies.items())
        for name, (copied, optimizer) in order if round_index % 2 == 0 else reversed(order):
            start = time.perf_counter()
            for _ in range(steps):
                optimizer.zero_grad()
                F.cross_entropy(forward_logits(copied, images), labels).backward()
                optimizer.step()
            times[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(values[1:]) for name, values in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet_lite0", choices=sorted(MODEL_SPECS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the study's workers use 1).")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3, help="Training steps per round and format.")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = MODEL_SPECS[args.model]
    # The ImageNet weights for EfficientNet (they ship with a pip package); weights drawn at random for the small
    # models, whose pretraining would take up to an hour and does not change a step's time.
    if spec.family == "efficientnet":
        model = load_model(args.model, num_labels=10)
    else:
        model = transformers_model_from_config(spec, num_labels=10)
    seconds = step_seconds(model, spec.image_size, args.batch_size, args.rounds, args.steps)
    print(f"{args.model}, {spec.image_size} px, batch {args.batch_size}, {args.threads} thread(s):")
    for name, value in seconds.items():
        print(f"  {name}: {1000 * value:.0f} ms per training step")
    print(f"  channels_last / contiguous: {seconds['channels_last'] / seconds['contiguous']:.2f}")


if __name__ == "__main__":
    main()

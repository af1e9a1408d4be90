"""`hf-plasticity example`: a short offline restore of a small model, printing its report (no download)."""

from __future__ import annotations

import argparse

from ._common import CommandError, reports_errors
from .params import build_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "example",
        help="Restore a small model built from a config, offline, and print the report.",
        description="Builds a small ViT from a config, restores it with a strategy, and prints what was "
        "re-initialized. Needs no network.",
    )
    parser.add_argument("--strategy", default="reinit_layers", help="Strategy name (default: reinit_layers).")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="Seed of the model, the data and the restore (default 0; -2**63 to 2**64-1).",
    )
    parser.set_defaults(func=run)


#: The seeds ``torch.manual_seed`` takes (a larger one fails with "Overflow when unpacking long long").
TORCH_SEEDS = (-(2**63), 2**64 - 1)


@reports_errors("example")
def run(args: argparse.Namespace) -> int:
    if not TORCH_SEEDS[0] <= args.seed <= TORCH_SEEDS[1]:
        raise CommandError(f"--seed must be an integer in [-2**63, 2**64 - 1] (what torch takes), got {args.seed}.")
    config = build_config(args.strategy, [f"seed={args.seed}"])  # a bad name or seed: one line, before any work
    from ..strategies import get_strategy

    if not get_strategy(config).schedule.before_training:
        raise CommandError(f"Strategy {config.strategy!r} acts during training only: it restores nothing here.")
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    from ..pipeline.restore import prepare_pretrained

    torch.manual_seed(args.seed)
    model = ViTForImageClassification(
        ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=128,
            num_labels=10,
        )
    )
    generator = torch.Generator().manual_seed(args.seed)
    data = [
        {
            "pixel_values": torch.randn(8, 3, 32, 32, generator=generator),
            "labels": torch.randint(0, 10, (8,), generator=generator),
        }
        for _ in range(4)
    ]
    report = prepare_pretrained(model, config, data=data)
    print(report)
    return 0

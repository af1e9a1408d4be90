"""`python -m benchmarks demo`: the offline before/after comparison on an atypical target (no arguments needed)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="Offline demo: restore EfficientNet-Lite0 and fine-tune it against the baseline on digits.",
        description="Restores ImageNet-pretrained EfficientNet-Lite0 with the library's default strategy, fine-tunes "
        "it and the unrestored baseline on scikit-learn's handwritten digits with the same recipe, prints the "
        "comparison table and writes the learning-curve plot. Offline; a few minutes on 2 CPU cores.",
    )
    parser.add_argument("--tiny", action="store_true", help="A seconds-long run of the same code path (smoke test).")
    parser.add_argument("--model", default="efficientnet_lite0", help="Bench model (default efficientnet_lite0).")
    parser.add_argument("--target", default="digits", help="Bench target (default digits).")
    parser.add_argument("--strategy", help="Strategy name (default: the library's default strategy).")
    parser.add_argument("--epochs", type=int, help="Fine-tuning epochs per arm (default 6).")
    parser.add_argument("--backbone-lr", type=float, help="Backbone learning rate (default 1e-4).")
    parser.add_argument("--seed", type=int, default=0, help="Seed (default 0).")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own).")
    parser.add_argument("--output", default="hf_plasticity_demo", help="Output folder (default hf_plasticity_demo).")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .demo import DemoSettings, run_demo

    values = {"model": args.model, "target": args.target, "seed": args.seed, "threads": args.threads}
    values["strategy"] = args.strategy
    if args.epochs:
        values["epochs"] = args.epochs
    if args.backbone_lr:
        values["backbone_lr"] = args.backbone_lr
    settings = (
        DemoSettings.tiny(args.output, **values) if args.tiny else DemoSettings(output_dir=args.output, **values)
    )
    run_demo(settings)
    return 0

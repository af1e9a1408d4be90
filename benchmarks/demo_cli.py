"""`python -m benchmarks demo`: one fine-tune without a sweep against a common default and a small sweep (offline)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="Offline demo: the one-call recipe against a common default and the best of a small sweep.",
        description="Fine-tunes ImageNet-pretrained EfficientNet-Lite0 on scikit-learn's handwritten digits at a "
        "common default learning rate, at each rate of a small sweep (the best chosen on validation), and at the "
        "rates hf_plasticity.recommend_recipe reads off one diagnostic pass, then prints each one's test accuracy "
        "and its regret against the best of the sweep and writes the learning-curve plot. Offline; about 2 minutes "
        "on 2 CPU cores.",
    )
    parser.add_argument("--tiny", action="store_true", help="A seconds-long run of the same code path (smoke test).")
    parser.add_argument("--model", default="efficientnet_lite0", help="Bench model (default efficientnet_lite0).")
    parser.add_argument("--target", default="digits", help="Bench target (default digits).")
    parser.add_argument("--epochs", type=int, help="Fine-tuning epochs per run (default 3).")
    parser.add_argument("--seed", type=int, default=0, help="Seed (default 0).")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own).")
    parser.add_argument("--output", default="hf_plasticity_demo", help="Output folder (default hf_plasticity_demo).")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .demo import DemoSettings, run_demo

    values = {"model": args.model, "target": args.target, "seed": args.seed, "threads": args.threads}
    if args.epochs:
        values["epochs"] = args.epochs
    settings = (
        DemoSettings.tiny(args.output, **values) if args.tiny else DemoSettings(output_dir=args.output, **values)
    )
    run_demo(settings)
    return 0

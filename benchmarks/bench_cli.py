"""`hf-plasticity bench`: the fine-tuning benchmark (standard fine-tuning against every strategy), offline."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hf_plasticity.cli._common import CommandError, reports_errors


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="Benchmark the strategies against standard fine-tuning (offline, resumable).",
        description="Fine-tunes pretrained models (EfficientNet-Lite0 with ImageNet weights; small ViT, ConvNeXt "
        "and ResNet pretrained here on synthetic shapes) on atypical and in-domain targets, standard fine-tuning "
        "against each restore strategy, at every backbone learning rate of a grid and several seeds. Writes one "
        "JSON per run (finished runs are skipped on a second call), summary.md and learning-curve PNGs. The small "
        "models are pretrained on the source on first use (cached, resumable), and refused unless their source test "
        "accuracy reached the threshold with flat last epochs. --pretrain-only pretrains and checks them; "
        "--sweep-lrs runs the learning-rate sweep that chose their recipes.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="A small grid that finishes in a few minutes (the first call also pretrains resnet_tiny on the source, "
        "about 4 minutes on one CPU thread; it is cached after that).",
    )
    parser.add_argument("--models", nargs="+", help="Bench models (default: all; --quick: two).")
    parser.add_argument(
        "--targets", nargs="+", help="Targets (default: digits, textures, spectrograms and each model's control)."
    )
    parser.add_argument("--arms", nargs="+", help="Arms (default: all; 'standard' is always run).")
    parser.add_argument("--seeds", type=int, help="Number of seeds, 0..N-1 (default 3; --quick: 2).")
    parser.add_argument("--backbone-lrs", type=float, nargs="+", help="Backbone lr grid (default 1e-4 3e-4 1e-3).")
    parser.add_argument("--head-lr", type=float, default=1e-3, help="Head learning rate (default 1e-3).")
    parser.add_argument("--epochs", type=int, help="Fine-tuning epochs (default 8; --quick: 3).")
    parser.add_argument("--batch-size", type=int, default=32, help="Training batch size (default 32).")
    parser.add_argument("--max-train", type=int, help="Cut each training split to this many examples.")
    parser.add_argument("--max-test", type=int, help="Cut each test split to this many examples.")
    parser.add_argument("--image-size", type=int, help="Override the models' input size.")
    parser.add_argument(
        "--pretrain-epochs", type=int, help="Replace the epochs of each small model's source-pretraining recipe."
    )
    parser.add_argument(
        "--pretrain-only",
        action="store_true",
        help="Only pretrain (or read from the cache) the small models pretrained here (default: all of them), print "
        "their source accuracy and check, and write source_pretraining.md/.json and source_curves.png to --output "
        "(default bench_runs/source); exit 1 when one is below the threshold.",
    )
    parser.add_argument(
        "--sweep-lrs",
        type=float,
        nargs="+",
        metavar="LR",
        help="Run the source-pretraining learning-rate sweep (on the source's validation split) for the small models "
        "instead of the bench; results go to --output (default bench_runs/source_sweep).",
    )
    parser.add_argument("--sweep-epochs", type=int, default=15, help="Epochs of each sweep run (default 15).")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1).")
    parser.add_argument("--output", help="Output folder (default bench_runs/full, or bench_runs/quick).")
    parser.add_argument(
        "--cache-dir",
        help="Cache of pretrained source models (default $HF_PLASTICITY_BENCH_CACHE or ~/.cache/hf_plasticity/bench).",
    )
    parser.add_argument("--report-only", action="store_true", help="Only rebuild summary.md and plots from runs.")
    parser.add_argument("--no-progress", action="store_true", help="No progress bars.")
    parser.add_argument("--list", action="store_true", help="List models, targets and arms, then exit.")
    parser.set_defaults(func=run)


def _given(value: Any, default: Any) -> Any:
    """``value`` unless the option was not given (0 is a value to validate, not "unset")."""
    return default if value is None else value


def settings_from_args(args: argparse.Namespace):
    """The [`BenchSettings`] an argument namespace asks for (`--quick` fills the unset options with small values)."""
    from .runner import BenchSettings

    quick = args.quick

    return BenchSettings(
        models=args.models or (["efficientnet_lite0", "resnet_tiny"] if quick else []),
        targets=args.targets or (["digits"] if quick else []),
        arms=args.arms or (["standard", "reinit_layers_k1", "selective_gxw_p0.05"] if quick else []),
        backbone_lrs=_given(args.backbone_lrs, [1e-3] if quick else [1e-4, 3e-4, 1e-3]),
        head_lr=args.head_lr,
        seeds=_given(args.seeds, 2 if quick else 3),
        epochs=_given(args.epochs, 3 if quick else 8),
        batch_size=args.batch_size,
        max_train=_given(args.max_train, 300 if quick else None),
        max_test=_given(args.max_test, 300 if quick else None),
        image_size=_given(args.image_size, 32 if quick else None),
        threads=args.threads,
        output_dir=args.output or ("bench_runs/quick" if quick else "bench_runs/full"),
        cache_dir=args.cache_dir,
        pretrain_epochs=args.pretrain_epochs,
    )


@reports_errors("bench")
def run(args: argparse.Namespace) -> int:
    from .arms import ARMS
    from .data import TARGETS
    from .models import MODEL_SPECS
    from .report import write_report
    from .runner import run_benchmark

    if args.list:
        print("models: ", ", ".join(MODEL_SPECS))
        print("targets:", ", ".join(TARGETS))
        print("arms:   ", ", ".join(ARMS))
        return 0
    if args.pretrain_only or args.sweep_lrs:
        return _source_command(args)
    settings = settings_from_args(args)
    if not settings.models:
        settings.models = list(MODEL_SPECS)
    settings.validate()
    if not args.report_only:
        counts = run_benchmark(settings, progress=not args.no_progress)
        print(
            f"bench: {counts['done']} runs done, {counts['skipped']} already finished, "
            f"{counts['unavailable']} skipped (strategy unavailable), of {counts['planned']} planned"
        )
    summary = write_report(settings.output_dir)
    print(summary.read_text())
    print(f"wrote {summary} (and summary.json, curves_*.png)")
    return 0


def _source_models(args: argparse.Namespace) -> list[str]:
    from .models import MODEL_SPECS, is_source_pretrained

    names = args.models or [name for name in MODEL_SPECS if is_source_pretrained(name)]
    for name in names:
        if name not in MODEL_SPECS or not is_source_pretrained(name):
            accepted = [n for n in MODEL_SPECS if is_source_pretrained(n)]
            raise CommandError(
                f"--pretrain-only / --sweep-lrs take models pretrained here; accepted values: {accepted}."
            )
    return names


def _source_command(args: argparse.Namespace) -> int:
    """`--sweep-lrs`: the learning-rate sweep; `--pretrain-only`: pretrain (or read) and check each small model."""
    import torch

    from .models import (
        pretrain_recipe,
        pretrain_source_model,
        read_source_metrics,
        refusal_message,
        source_status,
    )
    from .report import write_source_report

    torch.set_num_threads(args.threads)
    names = _source_models(args)
    if args.sweep_lrs:
        from .sweep import best_learning_rate, load_sweep, sweep_learning_rates, sweep_table

        output = Path(args.output or "bench_runs/source_sweep")
        for name in names:
            rows = sweep_learning_rates(name, args.sweep_lrs, args.sweep_epochs, output, progress=not args.no_progress)
            print(
                f"{name}: best lr on the validation split at {args.sweep_epochs} epochs {best_learning_rate(rows):g}"
            )
        table = "\n".join(sweep_table(load_sweep(output)))
        (output / "sweep.md").write_text(table + "\n")
        print(table)
        print(f"wrote {output / 'sweep.md'}")
        return 0
    metrics = {}
    for name in names:
        recipe = pretrain_recipe(name, epochs=args.pretrain_epochs)
        pretrain_source_model(name, args.cache_dir, recipe, progress=not args.no_progress)
        metrics[name] = read_source_metrics(name, args.cache_dir, recipe)
    report = write_source_report(metrics, args.output or "bench_runs/source")
    print(report.read_text())
    failed = [refusal_message(name, source_status(name, m)) for name, m in metrics.items()]
    failed = [reason for reason in failed if reason is not None]
    for reason in failed:
        print(f"under-trained: {reason}")
    return 1 if failed else 0

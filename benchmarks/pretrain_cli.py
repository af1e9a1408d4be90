"""``python -m benchmarks pretrain`` and ``python -m benchmarks sweep``: the source pretraining of the small models.

``pretrain`` pretrains (or reads from the cache) the small models on the synthetic source and checks that each one
is really pretrained; ``sweep`` runs the learning-rate sweep that chose their recipes. Every argument is checked
before anything is trained or written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hf_plasticity.core.validators import check_number, check_positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``pretrain`` and ``sweep`` commands."""
    pretrain = subparsers.add_parser(
        "pretrain",
        help="Pretrain the small models on the synthetic source (cached, resumable) and check them.",
        description="Pretrains (or reads from the cache) the small models pretrained here (default: all of them) "
        "with their registered recipes, prints their source accuracy and check, and writes "
        "source_pretraining.md/.json and source_curves.png to --output; exits 1 when one is below the threshold "
        "or still rising.",
    )
    _common(pretrain, "bench_runs/source")
    pretrain.add_argument("--epochs", type=int, help="Replace the epochs of each model's registered recipe.")
    pretrain.add_argument(
        "--cache-dir",
        help="Cache of pretrained source models (default $HF_PLASTICITY_BENCH_CACHE or ~/.cache/hf_plasticity/bench).",
    )
    pretrain.set_defaults(func=run_pretrain)
    sweep = subparsers.add_parser(
        "sweep",
        help="The source-pretraining learning-rate sweep of the small models (on the source's validation split).",
        description="Short source pretrainings of each small model, one per learning rate, scored on the source's "
        "validation split (its test split is never read); one JSON per (model, lr) in --output and the table in "
        "sweep.md. Resumable: a finished value is skipped.",
    )
    _common(sweep, "bench_runs/source_sweep")
    sweep.add_argument("--lrs", type=float, nargs="+", required=True, metavar="LR", help="The learning rates tried.")
    sweep.add_argument("--epochs", type=int, default=15, help="Epochs of each sweep run (default 15).")
    sweep.set_defaults(func=run_sweep)


def _common(parser: argparse.ArgumentParser, output: str) -> None:
    parser.add_argument("--models", nargs="+", help="Small models pretrained here (default: all of them).")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1).")
    parser.add_argument("--output", default=output, help=f"Output folder (default {output}).")
    parser.add_argument("--no-progress", action="store_true", help="No progress bars.")


def source_models(names: list[str] | None) -> list[str]:
    """The small models named on the command line (all of them when None); refuses any other model."""
    from .models import MODEL_SPECS, is_source_pretrained

    accepted = [name for name in MODEL_SPECS if is_source_pretrained(name)]
    unknown = [name for name in names or [] if name not in accepted]
    if unknown:
        raise ValueError(f"--models takes the models pretrained here, not {unknown}; accepted values: {accepted}.")
    return names or accepted


def run_pretrain(args: argparse.Namespace) -> int:
    """Pretrains (or reads) and checks each small model; 1 when one is under-trained."""
    import torch

    from .models import pretrain_recipe, pretrain_source_model, read_source_metrics, refusal_message, source_status
    from .pretrain import write_source_report

    names = source_models(args.models)
    check_positive_int("--threads", args.threads)
    check_positive_int("--epochs", args.epochs, allow_none=True)
    torch.set_num_threads(args.threads)
    metrics = {}
    for name in names:
        recipe = pretrain_recipe(name, epochs=args.epochs)
        pretrain_source_model(name, args.cache_dir, recipe, progress=not args.no_progress)
        metrics[name] = read_source_metrics(name, args.cache_dir, recipe)
    report = write_source_report(metrics, args.output)
    print(report.read_text())
    failed = [refusal_message(name, source_status(name, m)) for name, m in metrics.items()]
    failed = [reason for reason in failed if reason is not None]
    for reason in failed:
        print(f"under-trained: {reason}")
    return 1 if failed else 0


def run_sweep(args: argparse.Namespace) -> int:
    """The learning-rate sweep of each small model, then its table."""
    import torch

    from .sweep import best_learning_rate, load_sweep, sweep_learning_rates, sweep_table

    names = source_models(args.models)
    for lr in args.lrs:
        check_number("--lrs", lr, low=0, low_open=True)
    check_positive_int("--epochs", args.epochs)
    check_positive_int("--threads", args.threads)
    torch.set_num_threads(args.threads)
    output = Path(args.output)
    for name in names:
        rows = sweep_learning_rates(name, args.lrs, args.epochs, output, progress=not args.no_progress)
        print(f"{name}: best lr on the validation split at {args.epochs} epochs {best_learning_rate(rows):g}")
    table = "\n".join(sweep_table(load_sweep(output)))
    (output / "sweep.md").write_text(table + "\n")
    print(table)
    print(f"wrote {output / 'sweep.md'}")
    return 0

"""`hf-plasticity diagnose`: measure the plasticity of a model on downstream images (per-layer table, plot, JSON).

Example:

```bash
hf-plasticity diagnose google/vit-base-patch16-224 --data ./my-images --plot diagnostics.png
```
"""

from __future__ import annotations

import argparse

from ..core.validators import check_int, check_number, check_positive_int
from ._common import (
    CommandError,
    add_data_arguments,
    check_file_target,
    check_plot_target,
    checked,
    data_batches,
    load_data,
    load_model,
    load_processor,
    make_parent,
    reports_errors,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "diagnose",
        help="Measure dormant units, insignificant gradients and feature rank of a model on downstream data.",
        description="Loads MODEL (with a new head sized for the data's classes when it differs), reads a few "
        "batches of --data and prints the per-layer plasticity diagnostics: tau-dormant ratio, mean |gradient|, "
        "share of insignificant gradients, mean |weight|, and the rank of the penultimate features.",
    )
    parser.add_argument("model", metavar="MODEL", help="A local model directory or a Hub model id.")
    add_data_arguments(parser, required=True)
    parser.add_argument("--batches", type=int, default=8, help="Batches to read (default 8).")
    parser.add_argument("--batch-size", type=int, default=32, help="Rows per batch (default 32).")
    parser.add_argument("--tau", type=float, default=0.1, help="Dormancy threshold on the unit score (default 0.1).")
    parser.add_argument(
        "--seed", type=int, default=0, help="Seed of the data shuffle and of a new head's weights (default 0)."
    )
    parser.add_argument(
        "--plot",
        metavar="PNG",
        help="Also draw the figure per backbone block (probe accuracy, dormant ratio, insignificant gradients, "
        "mean |w|) into this file (.png added when it has no extension; any format matplotlib saves), or into "
        "DIR/plasticity.png for a directory or a path ending with / (matplotlib).",
    )
    parser.add_argument("--json", metavar="PATH", help="Also write the full report as JSON.")
    parser.set_defaults(func=run)


@reports_errors("diagnose")
def run(args: argparse.Namespace) -> int:
    # Every check on the inputs, and on every path the command writes, runs before anything is loaded.
    checked(check_positive_int, "--batches", args.batches)
    checked(check_positive_int, "--batch-size", args.batch_size)
    checked(check_number, "--tau", args.tau, low=0)
    checked(check_int, "--seed", args.seed, low=0)
    figure = check_plot_target(args.plot)
    if args.json is not None:
        check_file_target("--json", args.json)
    try:
        from ..diagnostics.diagnose import diagnose
    except ImportError as error:
        raise CommandError(f"Diagnostics are not available in this installation ({error}).") from error
    from ..integrations.datasets_io import class_names

    dataset = load_data(args.data, args.split)
    model, new_head = load_model(args.model, num_labels=args.num_labels, labels=class_names(dataset), seed=args.seed)
    processor = load_processor(args.model, required=True)
    data = data_batches(dataset, processor, batch_size=args.batch_size, seed=args.seed, description="diagnosing")
    if new_head:
        print(f"New classification head with {model.config.num_labels} labels (freshly initialized).")
    report = diagnose(model, data, batches=args.batches, tau=args.tau)
    print(report)
    if figure is not None:
        print(f"Wrote {report.plot(make_parent(figure))}")
    if args.json:
        with open(make_parent(args.json), "w", encoding="utf-8") as f:
            f.write(report.to_json() + "\n")
        print(f"Wrote {args.json}")
    return 0

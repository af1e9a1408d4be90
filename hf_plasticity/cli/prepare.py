"""`hf-plasticity prepare`: restore a pretrained model, save it as a checkpoint with its card, optionally push it.

Example:

```bash
hf-plasticity prepare google/vit-base-patch16-224 --strategy reinit_layers --param num_blocks=1 \\
    --output vit-base-restored --push-to-hub me/vit-base-restored
hf-plasticity prepare ./my-model --strategy selective --param utility=grad_x_weight fraction=0.01 \\
    --data ./my-images --output ./my-model-restored
```
"""

from __future__ import annotations

import argparse

from ._common import (
    EXIT_FAILED,
    CommandError,
    add_data_arguments,
    check_output_dir,
    check_plot_target,
    data_batches,
    data_free_hint,
    load_data,
    load_model,
    load_processor,
    make_parent,
    one_line,
    reports_errors,
)
from .params import StrategyHelp, build_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="Restore a pretrained model's plasticity and save (and optionally push) the checkpoint.",
        description="Loads MODEL, restores its plasticity with a strategy (scoring on --data when the strategy "
        "needs data), prints the report, and saves a normal transformers checkpoint with plasticity_config.json "
        "and a model card into --output; --push-to-hub also pushes it. Nothing is written when an input is wrong.",
        add_help=False,
    )
    parser.add_argument(
        "-h", "--help", action=StrategyHelp, help="Show this help and the parameters of --strategy (given before it)."
    )
    parser.add_argument("model", metavar="MODEL", help="A local model directory or a Hub model id.")
    parser.add_argument(
        "--strategy",
        help="Strategy name, e.g. reinit_layers or selective (default: the library's default, as prepare_pretrained: "
        "reinit_layers, the last eighth of the blocks).",
    )
    parser.add_argument(
        "--param",
        dest="params",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="A strategy parameter, e.g. --param num_blocks=2 or --param utility=magnitude fraction=0.05, read as "
        "its type says (true/false, none, a,b for a list). `--strategy NAME --help` lists NAME's parameters.",
    )
    add_data_arguments(parser, when="Needed by data-dependent strategies (e.g. selective with utility grad_x_weight).")
    parser.add_argument("--output", required=True, metavar="DIR", help="Where to save the restored checkpoint.")
    parser.add_argument("--overwrite", action="store_true", help="Write into a non-empty output directory.")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="Also push the checkpoint to this Hub repository.")
    parser.add_argument("--private", action="store_true", help="Create the Hub repository as private.")
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="Seconds any one Hub request of the push may wait without progress before it fails (default 60).",
    )
    parser.add_argument(
        "--plot",
        metavar="PNG",
        help="Also draw the diagnostics before and after the restore per block into this file (.png added when it "
        "has no extension; any format matplotlib saves), or into DIR/plasticity.png for a directory or a path ending "
        "with / (needs --data; the saved checkpoint gets the same figure as plasticity.png, shown in its model card).",
    )
    parser.set_defaults(func=run)


def check_one_shot(config) -> None:
    """Refuses strategies that only act during training: a checkpoint "restored" by them would be unchanged."""
    from ..core.config import available_strategies, get_config_class
    from ..strategies import get_strategy

    if get_strategy(config).schedule.before_training:
        return
    one_shot = []
    for name in available_strategies():
        try:
            if get_strategy(get_config_class(name)()).schedule.before_training:
                one_shot.append(name)
        except Exception:  # a strategy whose defaults are not valid on their own is left out of the hint
            continue
    raise CommandError(
        f"Strategy {config.strategy!r} acts during training only (use PlasticityCallback); prepare runs the "
        f"one-shot strategies: {', '.join(one_shot)}."
    )


def check_push_target(repo_id: str) -> None:
    """Refuses an invalid ``--push-to-hub`` repository id before the restore runs."""
    from ..integrations.hub import check_repo_id

    try:
        check_repo_id(repo_id)
    except ValueError as error:
        raise CommandError(one_line(error).replace("`repo_id`", "--push-to-hub", 1)) from error


@reports_errors("prepare")
def run(args: argparse.Namespace) -> int:
    # Every check on the inputs runs before anything is loaded or written.
    from ..pipeline.restore import DEFAULT_STRATEGY

    config = build_config(args.strategy or DEFAULT_STRATEGY, args.params)
    figure = check_plot_target(args.plot)
    check_one_shot(config)
    if config.requires_data and not args.data:
        raise CommandError(
            f"Strategy {config.strategy!r} with these parameters scores weights on downstream data: pass --data "
            f"DIR_OR_DATASET, or choose {data_free_hint(config)}."
        )
    if args.data and config.seed < 0:
        raise CommandError(f"--param seed={config.seed}: the seed also shuffles --data, which needs a seed >= 0.")
    check_output_dir(args.output, args.overwrite)
    if args.private and not args.push_to_hub:
        raise CommandError("--private applies to --push-to-hub REPO_ID, which is missing.")
    if args.push_to_hub is not None:
        check_push_target(args.push_to_hub)
    if not args.timeout > 0 or args.timeout == float("inf"):
        raise CommandError(f"--timeout must be a finite number of seconds > 0, got {args.timeout}.")
    if figure is not None and not args.data:
        raise CommandError("--plot draws the diagnostics before and after the restore, which are measured on --data.")

    from ..integrations.datasets_io import class_names
    from ..integrations.hub import HubPushError, push_restored, save_restored
    from ..pipeline.restore import prepare_pretrained

    dataset = load_data(args.data, args.split) if args.data else None
    labels = class_names(dataset) if dataset is not None else None
    model, new_head = load_model(args.model, num_labels=args.num_labels, labels=labels, seed=config.seed)
    processor = load_processor(args.model, required=dataset is not None)
    data = None
    if dataset is not None:
        batch_size = getattr(config, "calibration_batch_size", 32)
        data = data_batches(dataset, processor, batch_size=batch_size, seed=config.seed, description="reading data")
    if new_head:
        print(f"New classification head with {model.config.num_labels} labels.")
    report = prepare_pretrained(model, config, data=data)
    print(report)
    if figure is not None:
        print(f"Wrote {report.plot(make_parent(figure))}")

    if args.push_to_hub:
        try:
            info = push_restored(
                model,
                args.push_to_hub,
                report=report,
                save_directory=args.output,
                private=True if args.private else None,
                image_processor=processor,
                timeout=args.timeout,
            )
        except HubPushError as error:
            raise CommandError(str(error), exit_code=EXIT_FAILED) from error
        print(f"Saved the restored checkpoint to {args.output}")
        print(f"Pushed to {info.commit_url}")
    else:
        save_restored(model, args.output, report=report, image_processor=processor)
        print(f"Saved the restored checkpoint to {args.output}")
    return 0

"""The benchmark, version 2: every arm tuned on its own grid on a validation split, then confirmed on fresh seeds.

For each (model, target, budget):

1. **Tune**: each arm runs every configuration of its grid on the tuning seeds; a learning-rate (or DASH shrink-floor)
   grid that has its best value on an edge is extended by one step outward (a grid must bracket its optimum), up to a
   limit.
2. **Choose** each arm's configuration by its mean final *validation* accuracy over the tuning seeds.
3. **Confirm**: the chosen configuration of every arm on the confirmation seeds (fresh: disjoint from the tuning
   seeds); only these runs' *test* accuracies are reported, with paired differences to the tuned standard arm.

Every run is one JSON line in ``<results>/<model>__<target>.jsonl`` (the parent process writes it, so ``--jobs 2``
is safe); a run already there is skipped, so an interrupted study resumes where it stopped. The lines are small and
committed: every table is rebuilt from them by [`benchmarks.study_report`].
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUDGETS = {"short": 3, "long": 9}
TUNING_SEEDS = (100, 101)
CONFIRMATION_SEEDS = tuple(range(10))
#: How many times a numeric knob whose best value sits on an edge of its grid is extended by one step.
MAX_EXTENSIONS = 2


@dataclass(frozen=True)
class StudyArm:
    """One arm: a restore (or none) and the grid of recipe knobs it is tuned on.

    Args:
        name: the arm's name in the results.
        strategy: the library strategy restored before fine-tuning (None: standard fine-tuning).
        params: the strategy config's keyword arguments.
        grid: knob -> values tried. A recipe knob (``backbone_lr``, ``head_lr``, ``reinit_lr``, ``layer_decay``,
            ``boosted_blocks``) goes to the fine-tuning recipe; any other knob is a field of the strategy's config
            (DASH's ``lambda_min``). Knobs not in the grid keep the recipe's (or `params`') values.
    """

    name: str
    strategy: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, tuple] = field(default_factory=dict)


LRS = (3e-4, 1e-3, 3e-3)
ARMS = {
    arm.name: arm
    for arm in (
        StudyArm("standard", grid={"backbone_lr": LRS, "head_lr": (1e-3, 3e-3)}),
        StudyArm("layer_decay", grid={"backbone_lr": LRS, "layer_decay": (0.65, 0.8)}),
        # the control: the blocks a restore would re-draw get the high lr, but keep their pretrained weights
        StudyArm("boost_top", grid={"backbone_lr": LRS, "boosted_blocks": ("default",), "reinit_lr": (3e-3, 1e-2)}),
        StudyArm("reinit_top", "reinit_layers", {}, grid={"backbone_lr": LRS, "reinit_lr": (None, 3e-3, 1e-2)}),
        # ConvNeXt only: a re-drawn block's layer scale kept from pretraining, or set, instead of the init's 1e-6
        StudyArm(
            "reinit_top_scale_keep",
            "reinit_layers",
            {"layer_scale": "keep"},
            grid={"backbone_lr": LRS, "reinit_lr": (None, 3e-3, 1e-2)},
        ),
        StudyArm(
            "reinit_top_scale_0.1",
            "reinit_layers",
            {"layer_scale": 0.1},
            grid={"backbone_lr": LRS, "reinit_lr": (None, 3e-3, 1e-2)},
        ),
        StudyArm("auto", "auto", {}, grid={"backbone_lr": LRS, "reinit_lr": (None, 3e-3)}),
        # DASH is tuned on its shrink floor too: how far a neuron not aligned with the downstream gradient shrinks
        StudyArm("dash", "dash", {}, grid={"backbone_lr": LRS, "lambda_min": (0.3, 0.6, 0.9)}),
        StudyArm("shrink_perturb", "shrink_perturb", {"shrink": 0.8, "perturb": 0.1}, grid={"backbone_lr": LRS}),
    )
}


#: The arms every model runs (the layer-scale variants only matter for ConvNeXt).
DEFAULT_ARMS = [name for name in ARMS if "_scale_" not in name]


@dataclass
class StudySettings:
    """What one study runs.

    Args:
        models: bench model names.
        targets: bench target names.
        arms: arm names (see `ARMS`); "standard" is always run.
        budgets: budget names (see `BUDGETS`).
        results: folder of the JSONL results (committed).
        tuning_seeds / confirmation_seeds: the two disjoint seed sets.
        val_fraction: share of each class of the training split held out for validation.
        max_train / max_test: cut the splits (smoke runs).
        image_size: override the models' input size.
        jobs: worker processes (each with one torch thread).
        device: where the runs train (`"cpu"`, `"cuda"`); the data stays on the CPU, so every random draw is the same.
        calibration_batches: training batches handed to data-dependent restores.
        head_lr / weight_decay: recipe defaults for arms that do not tune them.
    """

    models: list[str]
    targets: list[str]
    arms: list[str] = field(default_factory=lambda: list(DEFAULT_ARMS))
    budgets: list[str] = field(default_factory=lambda: list(BUDGETS))
    results: str = "benchmarks/results/v2"
    tuning_seeds: tuple[int, ...] = TUNING_SEEDS
    confirmation_seeds: tuple[int, ...] = CONFIRMATION_SEEDS
    val_fraction: float = 0.2
    max_train: int | None = None
    max_test: int | None = None
    image_size: int | None = None
    jobs: int = 1
    device: str = "cpu"
    calibration_batches: int = 8
    head_lr: float = 3e-3


def config_key(arm: str, knobs: dict[str, Any]) -> str:
    """A stable short id of an arm's configuration."""
    text = json.dumps({"arm": arm, **knobs}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def run_key(record: dict[str, Any]) -> str:
    return f"{record['phase']}|{record['budget']}|{record['config']}|{record['seed']}"


# ------------------------------------------------------------------------------------------------------ one run
def split_knobs(knobs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A configuration's knobs as (the recipe's, the strategy config's): a knob the recipe does not have is the
    strategy's."""
    from dataclasses import fields

    from .recipe import Recipe

    recipe_names = {f.name for f in fields(Recipe)}
    recipe = {k: v for k, v in knobs.items() if k in recipe_names}
    return recipe, {k: v for k, v in knobs.items() if k not in recipe_names}


def run_one(task: dict[str, Any]) -> dict[str, Any]:
    """Loads the model, restores it as the arm says, fine-tunes it with the recipe; returns the run's record.
    Runs in a worker process (one torch thread)."""
    import torch
    from transformers.utils import logging as transformers_logging

    from .data import as_tensors, load_target
    from .models import get_spec, load_model
    from .recipe import Recipe, fine_tune_v2, stratified_split
    from .training import calibration_data

    torch.set_num_threads(1)
    transformers_logging.disable_progress_bar()  # a loading bar per run would bury the study's own progress bar
    settings = StudySettings(**task["settings"])
    spec = get_spec(task["model"])
    size = settings.image_size or spec.image_size
    data = load_target(task["target"], size, max_train=settings.max_train, max_test=settings.max_test)
    images, labels = as_tensors(data["train"])
    if "validation" in data:  # a target with its own validation draw (photos: disjoint tiles)
        train, val = (images, labels), as_tensors(data["validation"])
    else:
        keep, held = stratified_split(labels, settings.val_fraction, seed=0)  # one split for every run of a target
        train, val = (images[keep], labels[keep]), (images[held], labels[held])
    test = as_tensors(data["test"])
    num_labels = data["train"].features["labels"].num_classes
    arm = StudyArm(task["arm"], task["strategy"], task["params"])  # from the task: workers need no global state
    knobs, strategy_knobs = split_knobs(task["knobs"])
    if strategy_knobs and arm.strategy is None:
        raise ValueError(
            f"Arm {arm.name!r} restores nothing, so it takes no strategy knobs; got {sorted(strategy_knobs)}."
        )
    if knobs.get("boosted_blocks") == "default":
        knobs["boosted_blocks"] = None  # resolved below, once the model is loaded
    start = time.perf_counter()
    model = load_model(task["model"], num_labels, seed=task["seed"]).to(settings.device)
    restore_seconds, report = 0.0, None
    if arm.strategy is not None:
        from hf_plasticity import get_config_class, prepare_pretrained

        config = get_config_class(arm.strategy)(**{**arm.params, **strategy_knobs, "seed": task["seed"]})
        batches = calibration_data(train, settings.calibration_batches, 32, task["seed"])
        batches = [{k: v.to(settings.device) for k, v in batch.items()} for batch in batches]
        t0 = time.perf_counter()
        report = prepare_pretrained(model, config, data=batches, diagnostics=False)
        restore_seconds = time.perf_counter() - t0
    if "boosted_blocks" in knobs and knobs["boosted_blocks"] is None:
        from hf_plasticity import get_layout
        from hf_plasticity.strategies.reinit_layers import depth_share_of_blocks

        knobs["boosted_blocks"] = depth_share_of_blocks(len(get_layout(model).blocks))
    recipe = Recipe(epochs=BUDGETS[task["budget"]], seed=task["seed"], **{"head_lr": settings.head_lr, **knobs})
    history = fine_tune_v2(model, train, val, test if task["phase"] == "confirm" else None, recipe)
    return {
        "model": task["model"],
        "target": task["target"],
        "arm": arm.name,
        "phase": task["phase"],
        "budget": task["budget"],
        "config": task["config"],
        "knobs": task["knobs"],
        "recipe": recipe.to_dict(),
        "seed": task["seed"],
        "val_acc": history["val_acc"],
        "test_acc": history["test_acc"],
        "train_loss": history["train_loss"],
        "restore_seconds": restore_seconds,
        "reinitialized": report.total_reinitialized if report is not None else 0,
        "details": report.details if report is not None else {},
        "epoch_seconds": sum(history["epoch_seconds"]) / len(history["epoch_seconds"]),
        "n": {"train": len(train[1]), "val": len(val[1]), "test": len(test[1])},
        "device": settings.device,
        "wall_seconds": time.perf_counter() - start,
    }


# ------------------------------------------------------------------------------------------------ the results file
def results_path(settings: StudySettings, model: str, target: str) -> Path:
    return Path(settings.results) / f"{model}__{target}.jsonl"


def load_results(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _grid(arm: StudyArm, extensions: dict[str, tuple]) -> list[dict[str, Any]]:
    """Every configuration of the arm's grid (with its extensions), as knob dicts."""
    knobs = [{}]
    for name, values in arm.grid.items():
        values = tuple(dict.fromkeys((*extensions.get(name, ()), *values)))
        knobs = [{**k, name: v} for k in knobs for v in values]
    return knobs


def mean_final_val(records: list[dict[str, Any]], config: str, budget: str) -> float | None:
    """The mean final validation accuracy of one configuration's tuning runs (None without runs)."""
    values = [r["val_acc"][-1] for r in records if (r["config"], r["budget"], r["phase"]) == (config, budget, "tune")]
    return sum(values) / len(values) if values else None


def choose(records: list[dict[str, Any]], arm: StudyArm, budget: str, extensions: dict[str, tuple]) -> dict | None:
    """The arm's configuration with the best mean final validation accuracy over the tuning seeds (None until every
    configuration has all its tuning runs)."""
    best, best_value = None, -math.inf
    for knobs in _grid(arm, extensions):
        value = mean_final_val(records, config_key(arm.name, knobs), budget)
        if value is None:
            return None
        if value > best_value:
            best, best_value = knobs, value
    return best


def _step_outward(name: str, value: float, up: bool) -> float | None:
    """The next value of a knob beyond an edge of its grid: learning rates x3 or /3; DASH's shrink floor (in (0, 1])
    half-way to 1 (1 would be no shrink: standard fine-tuning) or to 0; None for knobs that are not extended."""
    if name.endswith("_lr"):
        return round(value * 3 if up else value / 3, 10)
    if name == "lambda_min":
        return round(1 - (1 - value) / 2 if up else value / 2, 10)
    return None


def edge_extensions(arm: StudyArm, chosen: dict[str, Any], extensions: dict[str, tuple]) -> dict[str, tuple] | None:
    """When a learning-rate knob's (or DASH's ``lambda_min``'s) chosen value is the largest or smallest tried, one more
    value outward (see `_step_outward`); None when every chosen value is interior (or the extension limit is reached).
    """
    grown = dict(extensions)
    changed = False
    for name, values in arm.grid.items():
        tried = sorted(v for v in (*extensions.get(name, ()), *values) if isinstance(v, (int, float)))
        value = chosen.get(name)
        if not isinstance(value, (int, float)) or len(tried) < 2 or len(extensions.get(name, ())) >= MAX_EXTENSIONS:
            continue
        if value in (tried[-1], tried[0]) and (step := _step_outward(name, value, up=value == tried[-1])) is not None:
            grown[name] = (*extensions.get(name, ()), step)
            changed = True
    return grown if changed else None


def run_study(settings: StudySettings, progress: bool = True) -> dict[str, int]:
    """Tunes, chooses and confirms every arm on every (model, target, budget); resumable. Returns run counts."""
    from tqdm.auto import tqdm

    arms = [ARMS[name] for name in dict.fromkeys(["standard", *settings.arms])]
    counts = {"done": 0, "skipped": 0}
    # CUDA cannot be used in a forked child: workers of a GPU study are spawned
    context = multiprocessing.get_context("spawn" if settings.device != "cpu" else None)
    pool = ProcessPoolExecutor(settings.jobs, mp_context=context) if settings.jobs > 1 else None
    try:
        for model in settings.models:
            for target in settings.targets:
                path = results_path(settings, model, target)
                path.parent.mkdir(parents=True, exist_ok=True)
                records = load_results(path)
                for budget in settings.budgets:
                    extensions = {arm.name: {} for arm in arms}
                    chosen: dict[str, dict] = {}
                    pending = list(arms)
                    while pending:  # tune every pending arm, then extend the grids whose best sits on an edge
                        tasks = []
                        for arm in pending:
                            for knobs in _grid(arm, extensions[arm.name]):
                                for seed in settings.tuning_seeds:
                                    tasks.append(make_task(settings, model, target, arm, knobs, budget, "tune", seed))
                        _execute(tasks, records, path, pool, counts, progress, f"{model}/{target}/{budget} tune", tqdm)
                        still = []
                        for arm in pending:
                            best = choose(records, arm, budget, extensions[arm.name])
                            grown = edge_extensions(arm, best, extensions[arm.name])
                            if grown is None:
                                chosen[arm.name] = best
                            else:
                                extensions[arm.name] = grown
                                still.append(arm)
                        pending = still
                    tasks = [
                        make_task(settings, model, target, arm, chosen[arm.name], budget, "confirm", seed)
                        for arm in arms
                        for seed in settings.confirmation_seeds
                    ]
                    _execute(tasks, records, path, pool, counts, progress, f"{model}/{target}/{budget} confirm", tqdm)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)  # a failure or an interrupt stops the study, not after every run
    return counts


def make_task(
    settings: StudySettings, model: str, target: str, arm: StudyArm, knobs: dict, budget: str, phase: str, seed: int
) -> dict[str, Any]:
    """One run of the study, as the plain dict `run_one` takes (a worker process needs no global state).

    Example (a smoke run of one configuration):

    ```python
    >>> from benchmarks import study
    >>> settings = study.StudySettings(models=[], targets=[], max_train=64, max_test=32)
    >>> task = study.make_task(settings, "resnet_tiny", "digits", study.ARMS["reinit_top"], {"backbone_lr": 1e-3},
    ...                        "short", "tune", 100)
    >>> record = study.run_one(task)  # doctest: +SKIP
    ```
    """
    return {
        "settings": dict(settings.__dict__),
        "model": model,
        "target": target,
        "arm": arm.name,
        "strategy": arm.strategy,
        "params": arm.params,
        "knobs": knobs,
        "config": config_key(arm.name, knobs),
        "budget": budget,
        "phase": phase,
        "seed": seed,
    }


def _execute(tasks, records, path, pool, counts, progress, label, tqdm) -> None:
    """Runs the tasks not in ``records`` yet (in the pool when there is one) and appends each result to ``path``."""
    done = {run_key(r) for r in records}
    todo = [t for t in tasks if run_key(t) not in done]
    counts["skipped"] += len(tasks) - len(todo)
    if not todo:
        return
    bar = tqdm(total=len(todo), desc=label, unit="run", disable=not progress)
    results = pool.map(run_one, todo) if pool is not None else map(run_one, todo)
    with path.open("a") as f:
        for record in results:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            records.append(record)
            counts["done"] += 1
            bar.update(1)
    bar.close()


#: The command line's name (also `python -m benchmarks.study`).
PROG = "python -m benchmarks study"


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.study --models ... --targets ...``: runs (or resumes) a study."""
    import argparse

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", required=True, help="Bench model names.")
    parser.add_argument("--targets", nargs="+", required=True, help="Bench target names.")
    parser.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), help=f"Arms of {list(ARMS)}.")
    parser.add_argument("--budgets", nargs="+", default=list(BUDGETS), help=f"Budgets {BUDGETS} (default: both).")
    parser.add_argument("--results", default="benchmarks/results/v2", help="Folder of the JSONL results.")
    parser.add_argument("--jobs", type=int, default=1, help="Worker processes, one torch thread each.")
    parser.add_argument("--confirmation-seeds", type=int, default=len(CONFIRMATION_SEEDS), help="Seeds 0..N-1.")
    parser.add_argument("--device", default="cpu", help="Where the runs train: cpu (default) or cuda.")
    parser.add_argument("--max-train", type=int, help="Cut the training split (smoke runs).")
    parser.add_argument("--max-test", type=int, help="Cut the test split (smoke runs).")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.arms) - set(ARMS)) + sorted(set(args.budgets) - set(BUDGETS))
    if unknown:
        parser.error(f"unknown arms or budgets {unknown}; accepted: {list(ARMS)}, {list(BUDGETS)}")
    settings = StudySettings(
        models=args.models,
        targets=args.targets,
        arms=args.arms,
        budgets=args.budgets,
        results=args.results,
        jobs=args.jobs,
        confirmation_seeds=tuple(range(args.confirmation_seeds)),
        max_train=args.max_train,
        max_test=args.max_test,
        device=args.device,
    )
    print(run_study(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

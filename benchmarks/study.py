"""The benchmark, version 2: every arm tuned on its own grid on a validation split, then confirmed on fresh seeds.

For each (model, target, budget):

1. **Tune**: each arm runs every configuration of its grid on the tuning seeds; a learning-rate (or DASH shrink-floor)
   grid that has its best value on an edge is extended by one step outward (a grid must bracket its optimum), up to a
   limit.
2. **Choose** each arm's configuration by its mean final *validation* accuracy over the tuning seeds. A tie
   (version 3's protocol) runs the tied configurations on one more tuning seed and chooses by the mean over all of
   them; a tie that remains goes to the configuration with the smallest `config_key` (a hash of its knobs, so the
   rule favours no side of a grid). Version 2 took the first tied configuration in grid order (extended values
   first).
3. **Confirm**: the chosen configuration of every arm on the confirmation seeds (fresh: disjoint from the tuning
   seeds); only these runs' *test* accuracies are reported, with paired differences to the tuned standard arm.

Every run is one JSON line in ``<results>/<model>__<target>.jsonl`` (the parent process writes it, so ``--jobs 2``
is safe); a run already there is skipped, so an interrupted study resumes where it stopped, and a CPU run that would
train exactly what a run there trained (another arm's, the same seed) copies its curves (`benchmarks.reuse`). The
lines are small and committed: every table is rebuilt from them by [`benchmarks.study_report`].

A results folder keeps one protocol (`PROTOCOLS`: tie-break, validation fraction, whether a paired difference may
pair runs on different devices), written to ``<results>/study.json`` when a study starts in a new folder; a folder
of records without it is version 2's (``benchmarks/results/v2``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .source_identity import cached_fingerprint, refuse_another_source

BUDGETS = {"short": 3, "long": 9}
TUNING_SEEDS = (100, 101)
#: The extra tuning seed(s) run on the configurations tied on the tuning seeds' mean (version 3's protocol).
TIE_SEEDS = (102,)
#: Two mean validation accuracies closer than this are a tie.
TIE_TOLERANCE = 1e-9
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
        recommended: the arm is not tuned on a grid: each run takes its ``backbone_lr`` and ``head_lr`` from the
            library's ``recommend_recipe`` (one diagnostic pass on `RECIPE_SAMPLES` images of the run's training
            split, in the run's seed's order, for the run's budget), so the arm has one configuration (no knobs),
            which `choose` returns without reading validation, and each run's record says what the pass read and
            chose (``recommended``).
        held_out: what the arm runs on a pair is fitted on the other pairs and read from the results folder's
            `benchmarks.held_out.HELD_OUT_FILE` before its runs (`resolve_held_out`): a tuned arm's one configuration
            (its best fixed default: the arm is not tuned on the pair), or a recommended arm's rule (``rule``: the
            recipe's rule refitted without the pair, applied to each run's own diagnostic pass).
        rule: the held-out rule of a recommended arm (`benchmarks.recipe_rule.ProbeRule.to_dict`), set by
            `resolve_held_out`; None: the library's shipped rule.
    """

    name: str
    strategy: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, tuple] = field(default_factory=dict)
    recommended: bool = False
    held_out: bool = False
    rule: dict[str, Any] | None = None


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


ARMS["lp_ft"] = StudyArm(
    # LP-FT (Kumar et al., ICLR 2022): the head alone first (backbone frozen), then everything, in one budget
    "lp_ft",
    grid={"backbone_lr": LRS, "head_lr": (1e-3, 3e-3), "probe_fraction": (1 / 3, 2 / 3)},
)

ARMS["recipe"] = StudyArm(
    # the library's sweep-free recipe (issue 27): the rates recommend_recipe reads off the run's training data
    "recipe",
    recommended=True,
)
ARMS["recipe_heldout"] = StudyArm(
    # the recipe with its rule refitted without the pair (the shipped rule saw every pair's validation records)
    "recipe_heldout",
    recommended=True,
    held_out=True,
)
#: The images of the training split the recipe arm's diagnostic pass reads (the rule was fitted on 256).
RECIPE_SAMPLES = 256
#: The arms with a counterpart at its best fixed default (``<arm>_fixed``): one configuration per pair, fitted on the
#: other pairs of its family and budget (`benchmarks.held_out`), never tuned on the pair: what a user without a sweep
#: would run.
FIXED_BASES = ("standard", "boost_top", "reinit_top", "auto", "layer_decay", "dash", "shrink_perturb")
for _base in FIXED_BASES:
    ARMS[f"{_base}_fixed"] = StudyArm(
        f"{_base}_fixed", ARMS[_base].strategy, ARMS[_base].params, grid=ARMS[_base].grid, held_out=True
    )
FIXED_ARMS = [name for name in ARMS if name.endswith("_fixed")]

#: The arms every model of version 2 runs (the layer-scale variants only matter for ConvNeXt; LP-FT and the recipe
#: came after).
DEFAULT_ARMS = [
    name for name in ARMS if "_scale_" not in name and not ARMS[name].held_out and name not in ("lp_ft", "recipe")
]
#: The arms of version 3, which asks what one fine-tune without a sweep loses against the tuned standard arm: LP-FT
#: (tuned, the published anchor), the recipe and its held-out rule, and every arm at its best fixed default (on the
#: long budget only the arms version 2 ran there have one). Version 2's tuned restore arms answered version 2's
#: question and are left out (they would double a pair's runs); name them with ``--arms`` to add them.
V3_ARMS = ["standard", "lp_ft", "recipe", "recipe_heldout", *FIXED_ARMS]

#: What a results folder's runs share and a resumed study may not change. ``tie_break``: ``"first"`` (version 2: the
#: first tied configuration in grid order) or ``"third_seed"`` (`choose`); ``tie_seeds``: the seeds the tied
#: configurations run on too; ``val_fraction``: the share of each class of the training split held out for validation
#: (more validation examples, fewer ties: an accuracy on n examples moves in steps of 1/n); ``devices``: ``"mixed"``
#: (version 2: a paired difference may pair a GPU run with a CPU run of the same seed; the report lists where) or
#: ``"same"`` (the report leaves such seeds out of every paired difference).
PROTOCOLS = {
    "v2": {"tie_break": "first", "tie_seeds": [], "val_fraction": 0.2, "devices": "mixed"},
    "v3": {"tie_break": "third_seed", "tie_seeds": list(TIE_SEEDS), "val_fraction": 0.3, "devices": "same"},
}
#: The file in a results folder that holds its protocol.
PROTOCOL_FILE = "study.json"


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
        val_fraction: share of each class of the training split held out for validation (version 3: 0.3; version
            2: 0.2). A target with its own validation split (``photos``) ignores it.
        tie_break: ``"third_seed"`` (version 3: tied configurations run on `tie_seeds` too, see `choose`) or
            ``"first"`` (version 2).
        tie_seeds: the extra tuning seeds of a tie (disjoint from the other two sets).
        devices: ``"same"`` (version 3: the report pairs only runs on one device) or ``"mixed"`` (version 2).
        max_train / max_test: cut the splits (smoke runs).
        image_size: override the models' input size.
        jobs: worker processes (each with one torch thread).
        device: where the runs train (`"cpu"`, `"cuda"`); the data stays on the CPU, so every random draw is the same.
        deterministic: ask torch for deterministic algorithms (`torch.use_deterministic_algorithms`, warning where an
            operation has none, and cuBLAS's fixed workspace): a GPU run then repeats on the same machine. The CPU
            runs are deterministic without it. Recorded per run.
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
    val_fraction: float = PROTOCOLS["v3"]["val_fraction"]
    tie_break: str = PROTOCOLS["v3"]["tie_break"]
    tie_seeds: tuple[int, ...] = TIE_SEEDS
    devices: str = PROTOCOLS["v3"]["devices"]
    max_train: int | None = None
    max_test: int | None = None
    image_size: int | None = None
    jobs: int = 1
    device: str = "cpu"
    deterministic: bool = False
    calibration_batches: int = 8
    head_lr: float = 3e-3

    @classmethod
    def for_protocol(cls, name: str, **kwargs: Any) -> StudySettings:
        """Settings that follow the protocol ``name`` of `PROTOCOLS` (``"v2"`` resumes the committed study)."""
        protocol = {**PROTOCOLS[name], "tie_seeds": tuple(PROTOCOLS[name]["tie_seeds"])}
        return cls(**{**protocol, **kwargs})

    def protocol(self) -> dict[str, Any]:
        """What `PROTOCOL_FILE` holds: the settings a resumed study may not change."""
        return {
            "tie_break": self.tie_break,
            "tie_seeds": list(self.tie_seeds) if self.tie_break != "first" else [],  # "first" runs none
            "val_fraction": self.val_fraction,
            "devices": self.devices,
            "tuning_seeds": list(self.tuning_seeds),
            # what shapes every run, where a study sets it (a folder of runs at 224 px stays at 224 px)
            **{key: getattr(self, key) for key in ("image_size", "max_train", "max_test") if getattr(self, key)},
            **({"deterministic": True} if self.deterministic else {}),
        }


def folder_protocol(results: str | Path) -> dict[str, Any] | None:
    """The protocol of a results folder: its `PROTOCOL_FILE`, else version 2's when it holds records (the committed
    version-2 folder predates the file), else None (a new folder)."""
    results = Path(results)
    if (results / PROTOCOL_FILE).is_file():
        return json.loads((results / PROTOCOL_FILE).read_text())
    if any(results.glob("*__*.jsonl")):
        return {**PROTOCOLS["v2"], "tuning_seeds": list(TUNING_SEEDS)}
    return None


def claim_folder(settings: StudySettings) -> None:
    """Writes the settings' protocol into a new results folder, or checks it against the folder's.

    Raises:
        ValueError: when the folder's runs were made under another protocol (a resumed study would mix them).
    """
    results = Path(settings.results)
    stored = folder_protocol(results)
    if stored is None:
        results.mkdir(parents=True, exist_ok=True)
        (results / PROTOCOL_FILE).write_text(json.dumps(settings.protocol(), indent=1, sort_keys=True) + "\n")
        return
    if stored != settings.protocol():
        raise ValueError(
            f"{results} holds runs of the protocol {stored}; these settings are {settings.protocol()}. Resume it with "
            "its own (StudySettings.for_protocol, --protocol) or start a new results folder."
        )


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

    from .data import as_tensors
    from .models import get_spec, load_model
    from .recipe import Recipe, fine_tune_v2, stratified_split
    from .reuse import COPIED_CURVES, code_version, find_identical, training_signature
    from .training import calibration_data

    torch.set_num_threads(1)
    transformers_logging.disable_progress_bar()  # a loading bar per run would bury the study's own progress bar
    settings = StudySettings(**task["settings"])
    if settings.deterministic:  # before the first CUDA call of the process
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(settings.deterministic, warn_only=True)  # both ways: a worker runs many
    torch.backends.cudnn.benchmark = False
    spec = get_spec(task["model"])
    size = settings.image_size or spec.image_size
    data = _target(task["target"], size, settings.max_train, settings.max_test)
    images, labels = as_tensors(data["train"])
    if "validation" in data:  # a target with its own validation draw (photos: disjoint tiles)
        train, val = (images, labels), as_tensors(data["validation"])
    else:
        keep, held = stratified_split(labels, settings.val_fraction, seed=0)  # one split for every run of a target
        train, val = (images[keep], labels[keep]), (images[held], labels[held])
    test = as_tensors(data["test"])
    num_labels = data["train"].features["labels"].num_classes
    # from the task: workers need no global state
    arm = StudyArm(
        task["arm"],
        task["strategy"],
        task["params"],
        recommended=task.get("recommended", False),
        rule=task.get("rule"),
    )
    knobs, strategy_knobs = split_knobs(task["knobs"])
    if strategy_knobs and arm.strategy is None:
        raise ValueError(
            f"Arm {arm.name!r} restores nothing, so it takes no strategy knobs; got {sorted(strategy_knobs)}."
        )
    if knobs.get("boosted_blocks") == "default":
        knobs["boosted_blocks"] = None  # resolved below, once the model is loaded
    start = time.perf_counter()
    model = load_model(task["model"], num_labels, seed=task["seed"]).to(settings.device)
    pretrained_source = cached_fingerprint(task["model"])  # what load_model read (None: published weights)
    cpu = torch.backends.cpu.get_cpu_capability()  # the kernels a CPU run uses: another set trains other bits
    restore_seconds, report, recommended = 0.0, None, None
    if arm.recommended:  # the rates from one pass on training images: neither validation nor test is read to choose
        from hf_plasticity import recommend_recipe

        batches = calibration_data(train, -(-RECIPE_SAMPLES // 32), 32, task["seed"])
        batches = [{k: v.to(settings.device) for k, v in batch.items()} for batch in batches]
        found = recommend_recipe(model, batches, budget=task["budget"], samples=RECIPE_SAMPLES, record=False)
        recommended = found.to_dict()
        if arm.rule is not None:  # the rule refitted without this pair, on this run's own pass
            from .held_out import held_out_rates

            backbone_lr, head_lr = held_out_rates(arm.rule, found.last_over_peak, task["model"])
            recommended.update(
                backbone_lr=backbone_lr, head_lr=head_lr, threshold=arm.rule["threshold"], rule=arm.rule
            )
        knobs.update(backbone_lr=recommended["backbone_lr"], head_lr=recommended["head_lr"])
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
    n = {"train": len(train[1]), "val": len(val[1]), "test": len(test[1])}
    signature = training_signature({
        **{key: task[key] for key in ("model", "target", "budget", "seed")},
        "strategy": arm.strategy, "strategy_params": {**arm.params, **strategy_knobs}, "recipe": recipe.to_dict(),
        "n": n, "evaluates_test": task["phase"] == "confirm", "image_size": size,
        "val_fraction": settings.val_fraction, "calibration_batches": settings.calibration_batches,
        "device": settings.device,
        "deterministic": settings.deterministic, "code": code_version(), "pretrained_source": pretrained_source,
        "cpu": cpu,
    })  # fmt: skip
    source = None
    if settings.device == "cpu":  # deterministic: a run that trained exactly this lends its curves
        source = find_identical(results_path(settings, task["model"], task["target"]), signature)
    if source is not None:
        history = {key: source[key] for key in COPIED_CURVES}
    else:
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
        "recommended": recommended,
        "epoch_seconds": _mean_epoch_seconds(history, source),
        "n": n,
        "device": settings.device,
        **({"image_size": settings.image_size} if settings.image_size else {}),  # else the model's own
        **({"deterministic": True} if settings.deterministic else {}),
        **({"channels_last": True} if spec.channels_last else {}),  # see refuse_mixed_formats
        **({"pretrained_source": pretrained_source} if pretrained_source else {}),  # benchmarks.source_identity
        "cpu": cpu,
        "wall_seconds": time.perf_counter() - start,
        "signature": signature,
        **({"reused": run_key(source)} if source is not None else {}),
    }


@functools.lru_cache(maxsize=2)
def _target(name: str, image_size: int, max_train: int | None, max_test: int | None) -> Any:
    """`benchmarks.data.load_target`, kept for the worker's next runs: every run of a pair reads the same splits, and
    drawing them at 224 px takes tens of seconds."""
    from .data import load_target

    return load_target(name, image_size, max_train=max_train, max_test=max_test)


def _mean_epoch_seconds(history: dict[str, Any], source: dict[str, Any] | None) -> float:
    """Seconds per training epoch: measured, or the copied run's (a reused run did not train)."""
    if source is not None:
        return source["epoch_seconds"]
    return sum(history["epoch_seconds"]) / len(history["epoch_seconds"])


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


def mean_final_val(
    records: list[dict[str, Any]], config: str, budget: str, phases: tuple[str, ...] = ("tune",)
) -> float | None:
    """The mean final validation accuracy of one configuration's runs of ``phases`` (the tuning runs; with
    ``"tie"``, also those on the tie seeds); None without runs."""
    values = [
        r["val_acc"][-1] for r in records if (r["config"], r["budget"]) == (config, budget) and r["phase"] in phases
    ]
    return sum(values) / len(values) if values else None


def tied_configs(
    records: list[dict[str, Any]], arm: StudyArm, budget: str, extensions: dict[str, tuple]
) -> list[dict[str, Any]]:
    """The configurations of the arm's grid whose mean final validation accuracy over the tuning seeds ties the best
    one's (within `TIE_TOLERANCE`), when more than one does; [] when one is best or a tuning run is missing."""
    values = []
    for knobs in _grid(arm, extensions):
        value = mean_final_val(records, config_key(arm.name, knobs), budget)
        if value is None:
            return []
        values.append((knobs, value))
    best = max(value for _, value in values)
    tied = [knobs for knobs, value in values if value >= best - TIE_TOLERANCE]
    return tied if len(tied) > 1 else []


def choose(
    records: list[dict[str, Any]],
    arm: StudyArm,
    budget: str,
    extensions: dict[str, tuple],
    tie_break: str = "first",
    tie_seeds: tuple[int, ...] = (),
) -> dict | None:
    """The arm's configuration with the best mean final validation accuracy over the tuning seeds (None until every
    configuration has all its tuning runs).

    A tie: with ``tie_break="first"`` (version 2) the first tied configuration in grid order (an extended value
    comes before the grid's own: that favoured extended values). With ``"third_seed"`` (version 3) the tied
    configurations' runs on ``tie_seeds`` count too (None until they are all there), and the best mean over every
    seed wins; a tie that remains goes to the smallest `config_key`, a hash of the knobs: unrelated to which side
    of the grid a value is on, and the same whatever the order of the grid or of its extensions.

    An arm that is not tuned (``arm.recommended``: its rates come from each run's diagnostic pass) has one
    configuration, ``{}``, returned without reading ``records``.
    """
    if arm.recommended:
        return {}
    if tie_break == "third_seed":
        tied = tied_configs(records, arm, budget, extensions)
        if tied:
            keys = {config_key(arm.name, knobs): knobs for knobs in tied}
            done = {(r["config"], r["seed"]) for r in records if r["budget"] == budget and r["phase"] == "tie"}
            if any((key, seed) not in done for key in keys for seed in tie_seeds):
                return None
            means = {key: mean_final_val(records, key, budget, ("tune", "tie")) for key in keys}
            best = max(means.values())
            return keys[min(key for key, value in means.items() if value >= best - TIE_TOLERANCE)]
    elif tie_break != "first":
        raise ValueError(f"Unknown tie_break {tie_break!r}: 'first' (version 2) or 'third_seed'.")
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


def resolve_held_out(arm: StudyArm, choices: dict[str, Any], model: str, target: str, budget: str) -> StudyArm | None:
    """The arm as it runs on one pair: a `StudyArm.held_out` arm with its grid narrowed to the pair's fixed default
    (one configuration, so it is not tuned) or with its held-out ``rule``; other arms unchanged. None when ``choices``
    (the content of `benchmarks.held_out.HELD_OUT_FILE`) has nothing for the pair (no fixed default could be fitted:
    too few other pairs ran the arm)."""
    if not arm.held_out:
        return arm
    from dataclasses import replace

    from .held_out import pair_name

    key = pair_name(model, target, budget)
    if arm.recommended:
        rule = choices["recipe_rule"].get(key)
        return None if rule is None else replace(arm, rule=rule)
    knobs = choices["fixed"].get(arm.name.removesuffix("_fixed"), {}).get(key)
    return None if knobs is None else replace(arm, grid={name: (value,) for name, value in knobs.items()})


def existing_runs(settings: StudySettings) -> list[tuple[str, Path, list[dict[str, Any]]]]:
    """The model, results file and recorded runs of each of the study's (model, target) pairs, each file read once."""
    runs = []
    for model in settings.models:
        for target in settings.targets:
            path = results_path(settings, model, target)
            runs.append((model, path, load_results(path)))
    return runs


def refuse_runs_of_another_rule(
    settings: StudySettings, runs: list[tuple[str, Path, list[dict[str, Any]]]] | None = None
) -> None:
    """Refuses, before anything is written, a folder whose ``recipe`` runs were chosen by another fit of the shipped
    rule (`FITTED_RULE` refitted since): their key does not hold the rule (``recipe_heldout``'s does), so a resumed
    study would skip them and the report would pool two rules in one arm. Every such run of the study's models and
    targets counts, whatever its arms and budgets: the report reads them all.

    ``runs``: what `existing_runs` gives for these settings (None: read here).

    Raises:
        ValueError: naming the file, the runs and what to do.
    """
    from hf_plasticity import FineTuneRecipe

    for _, path, records in existing_runs(settings) if runs is None else runs:
        stale = [
            record
            for record in records
            if record.get("arm") == "recipe"
            and record.get("recommended")
            and not FineTuneRecipe.from_dict(record["recommended"]).is_from_installed_rule()
        ]
        if stale:
            raise ValueError(
                f"{path} holds {len(stale)} runs of the arm 'recipe' (the first: {stale[0]['budget']} budget, "
                f"seed {stale[0]['seed']}) whose rates this version's rule (FITTED_RULE) would not choose from "
                "what their diagnostic pass read: they were recorded with another fit of the rule. Move them out "
                "of the file, or use another --results folder, before resuming."
            )


def refuse_mixed_formats(
    settings: StudySettings, runs: list[tuple[str, Path, list[dict[str, Any]]]] | None = None
) -> None:
    """Refuses, before anything is written, a results file whose runs were made in another memory format than the
    bench's model keeps now (`ModelSpec.channels_last`, which each run records): the two formats train other bits, so
    one pair would compare runs of two kinds (EfficientNet's runs before it went channels-last are the case).

    ``runs``: what `existing_runs` gives for these settings (None: read here).

    Raises:
        ValueError: naming the file, the model, the formats and what to do.
    """
    from .models import MODEL_SPECS

    for model, path, records in existing_runs(settings) if runs is None else runs:
        expected = model in MODEL_SPECS and MODEL_SPECS[model].channels_last  # an unknown name is refused elsewhere
        other = [record for record in records if record.get("channels_last", False) != expected]
        if other:
            formats = ("contiguous", "channels-last")
            raise ValueError(
                f"{path} holds {len(other)} runs of {model} made with {formats[not expected]} weights, and the "
                f"bench keeps {model} {formats[expected]} now (ModelSpec.channels_last): resuming would mix the "
                "two in one pair. Use another --results folder."
            )


def preflight(settings: StudySettings) -> dict[str, Any]:
    """Every check a study makes before it writes anything, then its claim on the folder; returns the held-out
    choices its arms need (`benchmarks.held_out.read_held_out`; empty when no arm is held out).

    Raises:
        ValueError: the folder holds another protocol, recipe runs of another fit of the rule, or runs of a model in
            another memory format or fine-tuned from another pretrained source (`benchmarks.source_identity`).
        FileNotFoundError: a held-out arm without the folder's held-out file.
    """
    if folder_protocol(settings.results) is not None:  # a folder with runs: its protocol first (nothing written)
        claim_folder(settings)
    choices: dict[str, Any] = {}
    if any(ARMS[name].held_out for name in settings.arms):
        from .held_out import read_held_out

        choices = read_held_out(settings.results)
    runs = existing_runs(settings)  # each results file read once for the checks below
    refuse_runs_of_another_rule(settings, runs)
    refuse_mixed_formats(settings, runs)
    for model, path, records in runs:  # a source cached already is checked now; one pretrained later, run by run
        refuse_another_source(model, path, records, cached_fingerprint(model), must_be_cached=True)
    claim_folder(settings)
    return choices


def run_study(settings: StudySettings, progress: bool = True, choices: dict[str, Any] | None = None) -> dict[str, int]:
    """Tunes, chooses and confirms every arm on every (model, target, budget); resumable. Returns run counts.

    ``choices``: what `preflight` returned for these settings (None: it runs first).
    """
    from tqdm.auto import tqdm

    all_arms = [ARMS[name] for name in dict.fromkeys(["standard", *settings.arms])]
    if choices is None:
        choices = preflight(settings)
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
                    arms = [resolve_held_out(arm, choices, model, target, budget) for arm in all_arms]
                    arms = [arm for arm in arms if arm is not None]
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
                        if settings.tie_break == "third_seed":  # the tied configurations on the tie seeds too
                            tasks = [
                                make_task(settings, model, target, arm, knobs, budget, "tie", seed)
                                for arm in pending
                                for knobs in tied_configs(records, arm, budget, extensions[arm.name])
                                for seed in settings.tie_seeds
                            ]
                            _execute(tasks, records, path, pool, counts, progress, f"{model}/{target}/{budget} tie",
                                     tqdm)  # fmt: skip
                        still = []
                        for arm in pending:
                            best = choose(
                                records, arm, budget, extensions[arm.name], settings.tie_break, settings.tie_seeds
                            )
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


def _is_resolved(arm: StudyArm) -> bool:
    """Whether a held-out arm carries its pair's choice: its rule (recommended) or one value per knob (fixed)."""
    return arm.rule is not None if arm.recommended else all(len(values) == 1 for values in arm.grid.values())


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
    if arm.held_out and not _is_resolved(arm):
        raise ValueError(
            f"Arm {arm.name!r} runs what held_out.json holds for the pair: resolve it first (resolve_held_out)."
        )
    config = {**knobs, "rule": arm.rule} if arm.rule is not None else knobs  # another rule: other runs
    return {
        "settings": dict(settings.__dict__),
        "model": model,
        "target": target,
        "arm": arm.name,
        "strategy": arm.strategy,
        "params": arm.params,
        "recommended": arm.recommended,
        "rule": arm.rule,
        "knobs": knobs,
        "config": config_key(arm.name, config),
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
            if "pretrained_source" in record:  # checked against the file's own before it is written
                refuse_another_source(record["model"], path, records, record["pretrained_source"])
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
    parser.add_argument("--arms", nargs="+", help=f"Arms of {list(ARMS)} (default: the protocol's).")
    parser.add_argument("--budgets", nargs="+", default=list(BUDGETS), help=f"Budgets {BUDGETS} (default: both).")
    parser.add_argument("--results", default="benchmarks/results/v2", help="Folder of the JSONL results.")
    parser.add_argument(
        "--protocol",
        choices=list(PROTOCOLS),
        help="Tie-break, validation fraction and device rule (default: the results folder's; v3 for a new folder).",
    )
    parser.add_argument("--val-fraction", type=float, help="Share of each class held out for validation (new folder).")
    parser.add_argument("--jobs", type=int, default=1, help="Worker processes, one torch thread each.")
    parser.add_argument("--confirmation-seeds", type=int, default=len(CONFIRMATION_SEEDS), help="Seeds 0..N-1.")
    parser.add_argument("--device", default="cpu", help="Where the runs train: cpu (default) or cuda.")
    parser.add_argument("--max-train", type=int, help="Cut the training split (smoke runs).")
    parser.add_argument("--max-test", type=int, help="Cut the test split (smoke runs).")
    parser.add_argument("--image-size", type=int, help="Feed the models images of this side (default: each model's).")
    parser.add_argument(
        "--deterministic", action="store_true", help="Deterministic torch algorithms (a GPU run repeats)."
    )
    args = parser.parse_args(argv)
    stored = folder_protocol(args.results)
    if args.protocol is not None or stored is None:  # a named protocol, or version 3's in a new folder
        protocol = dict(PROTOCOLS[args.protocol or "v3"])
    else:  # the folder's own
        protocol = {key: stored[key] for key in ("tie_break", "tie_seeds", "val_fraction", "devices", "tuning_seeds")}
    if args.val_fraction is not None:
        protocol["val_fraction"] = args.val_fraction
    protocol = {key: tuple(v) if isinstance(v, list) else v for key, v in protocol.items()}
    arms = args.arms or (DEFAULT_ARMS if protocol["tie_break"] == "first" else V3_ARMS)
    unknown = sorted(set(arms) - set(ARMS)) + sorted(set(args.budgets) - set(BUDGETS))
    if unknown:
        parser.error(f"unknown arms or budgets {unknown}; accepted: {list(ARMS)}, {list(BUDGETS)}")
    settings = StudySettings(
        models=args.models,
        targets=args.targets,
        arms=arms,
        budgets=args.budgets,
        results=args.results,
        jobs=args.jobs,
        confirmation_seeds=tuple(range(args.confirmation_seeds)),
        max_train=args.max_train,
        max_test=args.max_test,
        device=args.device,
        image_size=args.image_size,
        deterministic=args.deterministic,
        **protocol,
    )
    try:
        choices = preflight(settings)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    print(run_study(settings, choices=choices))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

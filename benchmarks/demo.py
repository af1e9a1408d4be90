"""The offline demo: one fine-tune without a learning-rate sweep, against a common default and a small sweep.

The question a user asks is "if I run one fine-tune instead of a sweep, how much do I lose?". The demo answers it on
one pair, with the benchmark's fine-tuning loop ([`benchmarks.recipe.fine_tune_v2`]):

- **default**: standard fine-tuning at a common default (backbone lr 1e-4, head lr 1e-3);
- **best of the sweep**: standard fine-tuning at each backbone lr of a small sweep, the best chosen on a validation
  split carved from the training data (the test split is read only for the report);
- **recipe**: `hf_plasticity.recommend_recipe` reads one diagnostic pass on the training data and picks the learning
  rates, no sweep (when it picks a configuration the sweep ran, that run is reused).

Each arm's **regret** is the test accuracy of the best of the sweep minus its own, in points. By default:
EfficientNet-Lite0 with its real ImageNet weights on scikit-learn's handwritten digits, 3 epochs (the short budget the
recipe's rule was fitted for), one seed: an illustration, not evidence (docs/BENCHMARKS.md has the 10-seed numbers).
Everything is offline.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .data import as_tensors, load_target
from .models import get_spec, load_model
from .pretrain import save_figure
from .recipe import Recipe, fine_tune_v2, stratified_split
from .study import config_key
from .training import calibration_data

Split = tuple[torch.Tensor, torch.Tensor]


@dataclass
class DemoSettings:
    """What the demo runs.

    Args:
        model (`str`, *optional*, defaults to `"efficientnet_lite0"`): a bench model (see `MODEL_SPECS`).
        target (`str`, *optional*, defaults to `"digits"`): a bench target (see `TARGETS`).
        epochs (`int`, *optional*, defaults to 3): fine-tuning epochs per run (the recipe's rule is read for the
            short budget, about 3 epochs, up to 5; for the long one from 6).
        default_backbone_lr (`float`, *optional*, defaults to 1e-4): the common default's backbone learning rate.
        head_lr (`float`, *optional*, defaults to 1e-3): the head's learning rate in the default and the sweep.
        sweep_backbone_lrs (`tuple`, *optional*, defaults to `(1e-4, 1e-3, 3e-3)`): the sweep's backbone learning
            rates (the default's among them, so its run is shared).
        val_fraction (`float`, *optional*, defaults to 0.2): share of each class of the training split held out for
            choosing the sweep's best.
        batch_size (`int`, *optional*, defaults to 32): training batch size.
        seed (`int`, *optional*, defaults to 0): seed of the head, the data order and the augmentation.
        image_size (`int`, *optional*): input size (the model's own by default).
        max_train (`int`, *optional*): cut the training split to this many examples.
        max_test (`int`, *optional*): cut the test split to this many examples.
        threads (`int`, *optional*): `torch.set_num_threads` (torch's default when None).
        output_dir (`str`, *optional*, defaults to `"hf_plasticity_demo"`): where the table, JSON and plot go.
    """

    model: str = "efficientnet_lite0"
    target: str = "digits"
    epochs: int = 3
    default_backbone_lr: float = 1e-4
    head_lr: float = 1e-3
    sweep_backbone_lrs: tuple[float, ...] = (1e-4, 1e-3, 3e-3)
    val_fraction: float = 0.2
    batch_size: int = 32
    seed: int = 0
    image_size: int | None = None
    max_train: int | None = None
    max_test: int | None = None
    threads: int | None = None
    output_dir: str = "hf_plasticity_demo"

    def __post_init__(self) -> None:
        if self.default_backbone_lr not in self.sweep_backbone_lrs:
            raise ValueError(
                f"default_backbone_lr {self.default_backbone_lr:g} must be one of sweep_backbone_lrs "
                f"{list(self.sweep_backbone_lrs)}: the default is the sweep's run at that rate."
            )

    @classmethod
    def tiny(cls, output_dir: str = "hf_plasticity_demo", **overrides: Any) -> DemoSettings:
        """A short version of the same code path (smoke tests): 32 px, 60 training images, 2 epochs."""
        values = {"image_size": 32, "max_train": 60, "max_test": 32, "epochs": 2, "output_dir": output_dir}
        values.update(overrides)
        return cls(**values)

    @property
    def budget(self) -> str:
        """The recipe rule's budget for ``epochs``: short up to 5 epochs, long from 6."""
        return "short" if self.epochs <= 5 else "long"


def _fmt_pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _run(
    name: str, settings: DemoSettings, splits: tuple[Split, Split, Split], backbone_lr: float, head_lr: float, log
) -> dict[str, Any]:
    """One standard fine-tune (no restore) at the given rates: its validation and test curves."""
    train, val, test = splits
    num_labels = int(torch.cat([train[1], test[1]]).max().item()) + 1
    model = load_model(settings.model, num_labels, seed=settings.seed)
    recipe = Recipe(epochs=settings.epochs, backbone_lr=backbone_lr, head_lr=head_lr, batch_size=settings.batch_size,
                    seed=settings.seed)  # fmt: skip

    def show(epoch: int, history: dict[str, list[float]]) -> None:
        log(f"  {name}: epoch {epoch}: validation {history['val_acc'][-1]:.1%}, test {history['test_acc'][-1]:.1%}")

    start = time.perf_counter()
    history = fine_tune_v2(model, train, val, test, recipe, on_epoch=show)
    return {
        "backbone_lr": backbone_lr,
        "head_lr": head_lr,
        "val_acc": history["val_acc"],
        "test_acc": history["test_acc"],
        "epoch_seconds": sum(history["epoch_seconds"]) / len(history["epoch_seconds"]),
        "wall_seconds": time.perf_counter() - start,
    }


def best_of_sweep(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the best final validation accuracy; a tie goes to the smallest configuration hash, a rule that
    favours neither a low nor a high learning rate."""

    def key(run: dict[str, Any]) -> tuple[float, str]:
        knobs = {"backbone_lr": run["backbone_lr"], "head_lr": run["head_lr"]}
        return (-run["val_acc"][-1], config_key("standard", knobs))

    return min(runs, key=key)


def _recipe(settings: DemoSettings, train: Split, num_labels: int, log) -> Any:
    """The library's one-call recipe, read off a diagnostic pass on the training data (the model is not changed)."""
    from hf_plasticity import recommend_recipe

    model = load_model(settings.model, num_labels, seed=settings.seed)
    batches = -(-256 // settings.batch_size)  # the 256 images the rule was fitted on, or all there are
    data = calibration_data(train, batches, settings.batch_size, settings.seed)
    recipe = recommend_recipe(model, data, budget=settings.budget, record=False)
    log(
        f"recipe: last/peak {recipe.last_over_peak:.3f} (threshold {recipe.threshold:g}) -> backbone lr "
        f"{recipe.backbone_lr:g}, head lr {recipe.head_lr:g}; diagnostic pass {recipe.seconds:.1f} s on "
        f"{recipe.samples} images"
    )
    return recipe


def comparison_table(result: dict[str, Any]) -> str:
    """The demo's Markdown table: per arm its rates, runs, validation and test accuracy, and regret."""
    lines = [
        "| | backbone lr | head lr | fine-tunes run | final validation | final test | regret vs best of sweep |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for arm in result["arms"]:
        lines.append(
            f"| {arm['label']} | {arm['backbone_lr']:g} | {arm['head_lr']:g} | {arm['runs']} | "
            f"{_fmt_pct(arm['val_acc'][-1])} | {_fmt_pct(arm['test_acc'][-1])} | {arm['regret']:+.1f} points |"
        )
    recipe = result["recipe"]
    lines += [
        "",
        f"Recipe: last/peak {recipe['last_over_peak']:.3f} against the threshold {recipe['threshold']:g} "
        f"({recipe['budget']} budget); its diagnostic pass took {recipe['seconds']:.1f} s = "
        f"{100 * recipe['cost_epochs']:.1f}% of one epoch. Regret: the best of the sweep's test accuracy minus the "
        "arm's (points; negative: above it). One seed: an illustration, not evidence.",
    ]
    return "\n".join(lines)


def plot_learning_curves(curves: dict[str, list[float]], path: str | os.PathLike, title: str) -> Path:
    """One PNG: the test accuracy (%) per epoch of each arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 3.8))
    for i, (arm, curve) in enumerate(curves.items()):
        epochs = range(1, len(curve) + 1)
        ax.plot(epochs, [100 * v for v in curve], marker="o", markersize=3, linewidth=1.6,
                color=plt.get_cmap("tab10")(i % 10), label=arm)  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def run_demo(settings: DemoSettings | None = None, log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Run the demo and write `demo_table.md`, `demo_results.json` and `learning_curves.png` to `output_dir`.

    Args:
        settings ([`DemoSettings`], *optional*): what to run (the full default demo when None).
        log (`Callable[[str], None]`, *optional*, defaults to `print`): progress messages (None: silent).

    Returns:
        `dict` with `arms` (default, best of sweep, recipe: rates, curves, runs, regret), `sweep` (every run),
        `recipe` (what the rule read and chose), `settings`, `table` (Markdown) and the written `paths`.
    """
    settings = settings or DemoSettings()
    log = log or (lambda message: None)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    size = settings.image_size or get_spec(settings.model).image_size
    data = load_target(settings.target, size, settings.max_train, settings.max_test)
    full_train, test = as_tensors(data["train"]), as_tensors(data["test"])
    keep, held = stratified_split(full_train[1], settings.val_fraction, seed=0)
    train, val = (full_train[0][keep], full_train[1][keep]), (full_train[0][held], full_train[1][held])
    num_labels = int(torch.cat([full_train[1], test[1]]).max().item()) + 1
    log(
        f"benchmark demo: {settings.model} fine-tuned on {settings.target} ({len(train[1])} train / {len(val[1])} "
        f"validation / {len(test[1])} test images, {size} px), {settings.epochs} epochs, seed {settings.seed}"
    )
    recipe = _recipe(settings, train, num_labels, log)
    sweep = [
        _run(f"sweep, backbone lr {lr:g}", settings, (train, val, test), lr, settings.head_lr, log)
        for lr in settings.sweep_backbone_lrs
    ]
    best = best_of_sweep(sweep)
    default = next(run for run in sweep if run["backbone_lr"] == settings.default_backbone_lr)
    chosen = (recipe.backbone_lr, recipe.head_lr)
    reused = next((run for run in sweep if (run["backbone_lr"], run["head_lr"]) == chosen), None)
    if reused is None:
        recipe_run = _run("recipe", settings, (train, val, test), *chosen, log)
    else:
        log(f"recipe: the sweep ran backbone lr {chosen[0]:g}, head lr {chosen[1]:g} already; its run is reused")
        recipe_run = reused
    arms = [
        {"label": "default", **default, "runs": 1},
        {"label": "best of the sweep", **best, "runs": len(sweep)},
        {"label": "recipe (no sweep)", **recipe_run, "runs": 1},
    ]
    for arm in arms:
        arm["regret"] = 100 * (best["test_acc"][-1] - arm["test_acc"][-1])
    epoch_seconds = sum(run["epoch_seconds"] for run in sweep) / len(sweep)
    recipe_info = {
        "budget": recipe.budget,
        "last_over_peak": recipe.last_over_peak,
        "threshold": recipe.threshold,
        "backbone_lr": recipe.backbone_lr,
        "head_lr": recipe.head_lr,
        "samples": recipe.samples,
        "seconds": recipe.seconds,
        "cost_epochs": recipe.seconds / epoch_seconds,
        "reused_sweep_run": reused is not None,
    }
    result: dict[str, Any] = {"settings": asdict(settings), "arms": arms, "sweep": sweep, "recipe": recipe_info}
    result["table"] = comparison_table(result)

    out = Path(settings.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    curves = {f"{arm['label']} (backbone {arm['backbone_lr']:g})": arm["test_acc"] for arm in arms}
    plot = plot_learning_curves(curves, out / "learning_curves.png", f"{settings.model} on {settings.target}, "
                                f"seed {settings.seed}")  # fmt: skip
    table_path = out / "demo_table.md"
    table_path.write_text(result["table"] + "\n")
    json_path = out / "demo_results.json"
    result["paths"] = {"table": str(table_path), "json": str(json_path), "plot": str(plot)}
    json_path.write_text(json.dumps(result, indent=1, default=str))
    log("")
    log(result["table"])
    log("")
    log(f"wrote {table_path}, {json_path} and {plot}")
    return result


def default_output_dir() -> str:
    """Where the demo writes unless told otherwise (the current directory's `hf_plasticity_demo/`)."""
    return os.path.join(os.getcwd(), "hf_plasticity_demo")

"""The offline demo: restore a pretrained model with the library's default strategy, fine-tune it next to the
unrestored baseline on an atypical target, and compare the two learning curves.

By default: EfficientNet-Lite0 with its real ImageNet weights, scikit-learn's handwritten digits at 48 px, the
benchmark's fine-tuning recipe ([`benchmarks.recipe.fine_tune_v2`]) with the same seed and data order for both arms.
Everything is offline.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .data import as_tensors, load_target
from .models import get_spec, load_model
from .pretrain import save_figure
from .recipe import Recipe, fine_tune_v2
from .study_report import first_epoch_reaching
from .training import calibration_data


@dataclass
class DemoSettings:
    """What the demo runs.

    Args:
        model (`str`, *optional*, defaults to `"efficientnet_lite0"`): a bench model (see `MODEL_SPECS`).
        target (`str`, *optional*, defaults to `"digits"`): a bench target (see `TARGETS`).
        epochs (`int`, *optional*, defaults to 6): fine-tuning epochs per arm.
        backbone_lr (`float`, *optional*, defaults to 1e-4): backbone learning rate (the head gets `head_lr`).
        head_lr (`float`, *optional*, defaults to 1e-3): head learning rate.
        batch_size (`int`, *optional*, defaults to 32): training batch size.
        seed (`int`, *optional*, defaults to 0): seed of the head, the restore, the data order and dropout.
        calibration_batches (`int`, *optional*, defaults to 8): training batches passed to the restore as `data`.
        image_size (`int`, *optional*): input size (the model's own by default).
        max_train (`int`, *optional*): cut the training split to this many examples.
        max_test (`int`, *optional*): cut the test split to this many examples.
        threads (`int`, *optional*): `torch.set_num_threads` (torch's default when None).
        output_dir (`str`, *optional*, defaults to `"hf_plasticity_demo"`): where the table, JSON and plot go.
        strategy (`Any`, *optional*): the restore config or strategy name; None is the library default.
    """

    model: str = "efficientnet_lite0"
    target: str = "digits"
    epochs: int = 6
    backbone_lr: float = 1e-4
    head_lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0
    calibration_batches: int = 8
    image_size: int | None = None
    max_train: int | None = None
    max_test: int | None = None
    threads: int | None = None
    output_dir: str = "hf_plasticity_demo"
    strategy: Any = field(default=None)

    @classmethod
    def tiny(cls, output_dir: str = "hf_plasticity_demo", **overrides: Any) -> DemoSettings:
        """A seconds-long version of the same code path (smoke tests): 32 px, 64 training images, 2 epochs."""
        values = {"image_size": 32, "max_train": 64, "max_test": 64, "epochs": 2, "output_dir": output_dir}
        values.update(overrides)
        return cls(**values)


def _fmt_pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def comparison_table(result: dict[str, Any]) -> str:
    """The demo's Markdown table: accuracy per epoch, final and best accuracy, epochs to the baseline's final
    accuracy, and the restore's cost."""
    base, rest = result["standard"], result["restored"]
    lines = ["| | standard fine-tuning | restored + fine-tuning |", "|---|---|---|"]
    for epoch, (a, b) in enumerate(zip(base["test_acc"], rest["test_acc"]), start=1):
        lines.append(f"| test accuracy after epoch {epoch} | {_fmt_pct(a)} | {_fmt_pct(b)} |")
    lines.append(f"| final test accuracy | {_fmt_pct(base['final_acc'])} | {_fmt_pct(rest['final_acc'])} |")
    lines.append(f"| best test accuracy | {_fmt_pct(base['best_acc'])} | {_fmt_pct(rest['best_acc'])} |")

    def _reach(value: int | None) -> str:
        return "not reached" if value is None else str(value)

    lines.append(
        f"| epochs to the standard run's final accuracy | {_reach(base['epochs_to_baseline'])} | "
        f"{_reach(rest['epochs_to_baseline'])} |"
    )
    lines.append(
        f"| restore cost | none | {rest['restore_seconds']:.2f} s = {100 * rest['restore_cost_epochs']:.1f}% "
        "of one epoch |"
    )
    lines.append(
        f"| wall time (fine-tuning + restore) | {base['wall_seconds']:.0f} s | {rest['wall_seconds']:.0f} s |"
    )
    return "\n".join(lines)


def _arm(
    name: str,
    settings: DemoSettings,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    restore: bool,
    log: Callable[[str], None],
) -> dict[str, Any]:
    start = time.perf_counter()
    num_labels = int(torch.cat([train[1], test[1]]).max().item()) + 1
    model = load_model(settings.model, num_labels, seed=settings.seed)
    record: dict[str, Any] = {"arm": name, "restore_seconds": 0.0, "report": None}
    if restore:
        from hf_plasticity import prepare_pretrained

        data = calibration_data(train, settings.calibration_batches, settings.batch_size, settings.seed)
        t0 = time.perf_counter()
        report = prepare_pretrained(model, settings.strategy, data=data)
        record["restore_seconds"] = time.perf_counter() - t0
        record["report"] = report.to_dict() if hasattr(report, "to_dict") else None
        log(
            f"restore: {report.strategy} re-initialized {report.total_reinitialized:,} of "
            f"{report.total_parameters:,} parameters ({100 * report.share:.1f}%) in {record['restore_seconds']:.2f} s"
        )
    recipe = Recipe(
        epochs=settings.epochs,
        backbone_lr=settings.backbone_lr,
        head_lr=settings.head_lr,
        batch_size=settings.batch_size,
        seed=settings.seed,
    )

    def show(epoch: int, history: dict[str, list[float]]) -> None:
        log(f"  {name}: epoch {epoch}: test accuracy {history['test_acc'][-1]:.1%}")

    history = fine_tune_v2(model, train, None, test, recipe, on_epoch=show)
    acc = history["test_acc"]
    epoch_seconds = sum(history["epoch_seconds"]) / len(history["epoch_seconds"])
    record.update(
        test_acc=acc,
        train_loss=history["train_loss"],
        final_acc=acc[-1],
        best_acc=max(acc),
        epoch_seconds=epoch_seconds,
        restore_cost_epochs=record["restore_seconds"] / epoch_seconds,
        wall_seconds=time.perf_counter() - start,
    )
    return record


def plot_learning_curves(curves: dict[str, list[float]], path: str | os.PathLike, title: str) -> Path:
    """One PNG: the test accuracy (%) per epoch of each arm (standard fine-tuning in black)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 3.8))
    for i, (arm, curve) in enumerate(curves.items()):
        color = "black" if arm == "standard" else plt.get_cmap("tab10")(i % 10)
        epochs = range(1, len(curve) + 1)
        ax.plot(epochs, [100 * v for v in curve], marker="o", markersize=3, linewidth=2.2 if i == 0 else 1.4,
                color=color, label=arm)  # fmt: skip
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
        `dict` with `standard` and `restored` records (curves and metrics), `settings`, `table` (Markdown) and
        the written `paths`.
    """
    settings = settings or DemoSettings()
    log = log or (lambda message: None)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    size = settings.image_size or get_spec(settings.model).image_size
    data = load_target(settings.target, size, settings.max_train, settings.max_test)
    train, test = as_tensors(data["train"]), as_tensors(data["test"])
    log(
        f"benchmark demo: {settings.model} fine-tuned on {settings.target} ({len(train[1])} train / "
        f"{len(test[1])} test images, {size} px), backbone lr {settings.backbone_lr:g}, head lr "
        f"{settings.head_lr:g}, {settings.epochs} epochs, seed {settings.seed}"
    )
    standard = _arm("standard", settings, train, test, restore=False, log=log)
    restored = _arm("restored", settings, train, test, restore=True, log=log)
    for record in (standard, restored):
        record["epochs_to_baseline"] = first_epoch_reaching(record["test_acc"], standard["final_acc"])
    settings_dict = asdict(settings)
    settings_dict["strategy"] = restored["report"]["strategy"] if restored["report"] else str(settings.strategy)
    result: dict[str, Any] = {"settings": settings_dict, "standard": standard, "restored": restored}
    result["table"] = comparison_table(result)

    out = Path(settings.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = f"{settings.model} on {settings.target}, seed {settings.seed}"
    curves = {"standard": standard["test_acc"], f"restored ({settings_dict['strategy']})": restored["test_acc"]}
    plot = plot_learning_curves(curves, out / "learning_curves.png", title=title)
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

"""The learning-rate sweep that chooses each small model's source-pretraining lr, on the source's validation split.

Every value is a short run of the model's registered recipe (same warmup share, cosine decay, augmentation, label
smoothing, data) with `lr` and `epochs` replaced; the score is the validation accuracy after the last epoch. The
source's test split is never read here. One JSON per (model, lr) under the output folder: a finished value is
skipped on a second call, an interrupted one resumes from its last epoch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .models import SOURCE, get_spec, pretrain_recipe, train_on_source
from .pretrain import PretrainConfig, write_json


def _run_name(name: str, recipe: PretrainConfig) -> str:
    key = json.dumps({"spec": asdict(get_spec(name)), "recipe": asdict(recipe), "source": SOURCE}, sort_keys=True)
    return f"{name}__lr{recipe.lr:g}__ep{recipe.epochs}__{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def sweep_learning_rates(
    name: str,
    lrs: list[float],
    epochs: int,
    output_dir: str | os.PathLike,
    pretrain: PretrainConfig | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Short source pretrainings of `name`, one per learning rate, scored on the source's validation split.

    Args:
        name (`str`): a bench model that the bench pretrains.
        lrs (`list[float]`): the learning rates to try.
        epochs (`int`): epochs of each short run (the warmup and cosine decay span them).
        output_dir (`str` or `os.PathLike`): where the per-lr JSON files (and partial states) go.
        pretrain ([`PretrainConfig`], *optional*): the recipe whose `lr` and `epochs` are replaced (default: the
            model's registered recipe).
        progress (`bool`, *optional*, defaults to `False`): show progress bars.

    Returns:
        `list[dict]`: per lr, `model`, `lr`, `epochs`, `final_val_acc`, `best_val_acc`, `curve`, `wall_seconds`.

    Raises:
        `ValueError`: an unknown model, no learning rate, or a learning rate or epoch count the recipe refuses (not a
            finite number > 0, not an integer >= 1), before anything is written.
    """
    if not lrs:
        raise ValueError("sweep_learning_rates needs at least one learning rate.")
    base = pretrain_recipe(name, pretrain)
    recipes = [dataclasses.replace(base, lr=lr, epochs=epochs) for lr in lrs]  # a bad value is refused here, first
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for lr, recipe in zip(lrs, recipes):
        run = _run_name(name, recipe)
        path = out / f"{run}.json"
        if path.exists():
            results.append(json.loads(path.read_text()))
            continue
        state_dir = out / f"{run}.partial"
        state_dir.mkdir(exist_ok=True)
        _, result = train_on_source(
            name, recipe, state_dir, with_test=False, progress=progress, desc=f"sweep {name} lr={lr:g}"
        )
        curve = result["curve"]
        record = {
            "model": name,
            "lr": lr,
            "epochs": epochs,
            "recipe": asdict(recipe),
            "source": SOURCE,
            "final_val_acc": curve["val_acc"][-1],
            "best_val_acc": max(curve["val_acc"]),
            "curve": curve,
            "wall_seconds": result["wall_seconds"],
            "threads": torch.get_num_threads(),
        }
        write_json(path, record)
        (state_dir / "state.pt").unlink(missing_ok=True)
        state_dir.rmdir()
        results.append(record)
    return results


def load_sweep(output_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every finished sweep run under `output_dir` (all models, all lengths)."""
    return [json.loads(p.read_text()) for p in sorted(Path(output_dir).glob("*.json"))]


def best_learning_rate(results: list[dict[str, Any]]) -> float:
    """The swept lr with the highest final validation accuracy (the smaller lr on a tie)."""
    return max(results, key=lambda r: (r["final_val_acc"], -r["lr"]))["lr"]


def sweep_table(results: list[dict[str, Any]]) -> list[str]:
    """Markdown rows: model, sweep length, lr, final and best validation accuracy, wall time; per model and length
    the best final validation accuracy marked."""
    lines = [
        "| model | epochs | lr | final val acc % | best val acc % | wall s | best of its length |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, epochs in sorted({(r["model"], r["epochs"]) for r in results}):
        rows = sorted((r for r in results if r["model"] == model and r["epochs"] == epochs), key=lambda r: r["lr"])
        best = best_learning_rate(rows)
        for r in rows:
            lines.append(
                f"| {model} | {r['epochs']} | {r['lr']:g} | {100 * r['final_val_acc']:.1f} | "
                f"{100 * r['best_val_acc']:.1f} | {r['wall_seconds']:.0f} | {'yes' if r['lr'] == best else ''} |"
            )
    return lines

"""Turn the bench's per-run JSON files into tables (Markdown, JSON) and learning-curve plots (PNG).

Metrics per group of seeds (model, target, arm, backbone lr), as mean +- std over seeds:
- `final` / `best`: test accuracy after the last epoch / at the best epoch;
- `auc`: mean test accuracy over the epochs (the area under the per-epoch curve divided by the epoch count);
- `ep1`: test accuracy after the first epoch;
- `to_base`: the first epoch at which a run reaches the standard arm's mean final accuracy (same model, target and
  learning rate), averaged over the runs that reach it, with the count of those runs;
- `cost`: the restore's wall time as a share of one training epoch; `wall`: seconds per run, everything included.

Runs on a small model pretrained here are reported only when their record shows a source check that passes today's
rule (`SOURCE_ACC_THRESHOLD`, flat last epochs); the others are refused and listed, never tabulated.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from .models import MODEL_SPECS, is_source_pretrained, refusal_message
from .pretrain import check_source_curve, plot_source_curve, save_figure, write_json
from .runner import load_runs

logger = logging.getLogger(__name__)

BASELINE = "standard"


def source_refusal(run: dict[str, Any]) -> str | None:
    """Why a run cannot stand as evidence (its model is not a really pretrained one), or None when it can.

    Published pretrained models (EfficientNet-Lite0) are exempt; a model pretrained here needs the source check
    recorded with the run, re-evaluated with the current threshold and flatness rule.
    """
    model = run["model"]
    if model in MODEL_SPECS and not is_source_pretrained(model):
        return None
    source = run.get("source") or {}
    if "test_acc" not in source:
        return f"{model}: its runs record no source check (they predate the check, or the model is unknown)"
    return refusal_message(model, {**check_source_curve(source["test_acc"]), "exempt": False})


def screen_runs(runs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Split runs into those that can be reported and the refused ones.

    Returns:
        `(accepted, refused)`: the runs to report, and per refused model the reason (see [`source_refusal`]).
    """
    accepted, refused = [], {}
    for run in runs:
        reason = source_refusal(run)
        if reason is None:
            accepted.append(run)
        else:
            refused.setdefault(run["model"], reason)
    return accepted, refused


def _mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def first_epoch_reaching(curve: list[float], level: float) -> int | None:
    """1-based epoch at which `curve` first reaches `level` (a tolerance of 1e-9 for ties), or None."""
    for epoch, acc in enumerate(curve, start=1):
        if acc >= level - 1e-9:
            return epoch
    return None


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group runs by (model, target, arm, backbone_lr) and summarise each group over its seeds.

    Returns:
        `list[dict]`: one summary per group, with `(mean, std)` pairs for every metric, the mean and std curves,
        `seeds`, and `to_base` (epochs to the baseline's final accuracy) with `to_base_reached` / `n`.
    """
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[(run["model"], run["target"], run["arm"], run["backbone_lr"])].append(run)
    baseline_final = {
        (m, t, lr): _mean_std([r["final_acc"] for r in rs])[0] for (m, t, a, lr), rs in groups.items() if a == BASELINE
    }
    summaries = []
    for (model, target, arm, lr), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][3])):
        rs = sorted(rs, key=lambda r: r["seed"])
        epochs = min(len(r["test_acc"]) for r in rs)
        curves = [r["test_acc"][:epochs] for r in rs]
        summary: dict[str, Any] = {
            "model": model,
            "target": target,
            "arm": arm,
            "backbone_lr": lr,
            "n": len(rs),
            "seeds": [r["seed"] for r in rs],
            "epochs": epochs,
            "final": _mean_std([r["final_acc"] for r in rs]),
            "best": _mean_std([r["best_acc"] for r in rs]),
            "auc": _mean_std([r["auc"] for r in rs]),
            "ep1": _mean_std([r["test_acc"][0] for r in rs]),
            "cost": _mean_std([r["restore_cost_epochs"] for r in rs]),
            "wall": _mean_std([r["wall_seconds"] for r in rs]),
            "curve_mean": [_mean_std([c[e] for c in curves])[0] for e in range(epochs)],
            "curve_std": [_mean_std([c[e] for c in curves])[1] for e in range(epochs)],
        }
        level = baseline_final.get((model, target, lr))
        reached = [first_epoch_reaching(c, level) for c in curves] if level is not None else []
        hits = [e for e in reached if e is not None]
        summary["baseline_final"] = level
        summary["to_base"] = _mean_std([float(e) for e in hits]) if hits else (math.nan, math.nan)
        summary["to_base_reached"] = len(hits)
        summaries.append(summary)
    return summaries


def _pct(pair: tuple[float, float]) -> str:
    mean, std = pair
    return "n/a" if math.isnan(mean) else f"{100 * mean:.1f} ± {100 * std:.1f}"


def _num(pair: tuple[float, float], digits: int = 2) -> str:
    mean, std = pair
    return "n/a" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _epochs(summary: dict[str, Any]) -> str:
    mean, _ = summary["to_base"]
    hit = f"{summary['to_base_reached']}/{summary['n']}"
    return f"never ({hit})" if math.isnan(mean) else f"{mean:.1f} ({hit})"


def best_lr_summaries(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each (model, target, arm), the summary at the backbone lr with the highest mean final accuracy."""
    best: dict[tuple, dict[str, Any]] = {}
    for s in summaries:
        key = (s["model"], s["target"], s["arm"])
        if key not in best or s["final"][0] > best[key]["final"][0]:
            best[key] = s
    return list(best.values())


def _best_table(summaries: list[dict[str, Any]], model: str, target: str) -> list[str]:
    rows = [s for s in best_lr_summaries(summaries) if s["model"] == model and s["target"] == target]
    base = next((s for s in rows if s["arm"] == BASELINE), None)
    lines = [
        "| arm (at its best backbone lr) | lr | final acc % | Δ vs standard | best acc % | AUC % | epoch-1 acc % "
        "| epochs to standard's final (mean curve) | restore cost (epochs) | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sorted(rows, key=lambda s: (s["arm"] != BASELINE, -s["final"][0])):
        delta = "" if base is None else f"{100 * (s['final'][0] - base['final'][0]):+.1f}"
        to_base = "n/a"
        if base is not None:
            epoch = first_epoch_reaching(s["curve_mean"], base["final"][0])
            to_base = "never" if epoch is None else str(epoch)
        lines.append(
            f"| {s['arm']} | {s['backbone_lr']:g} | {_pct(s['final'])} | {delta} | {_pct(s['best'])} | "
            f"{_pct(s['auc'])} | {_pct(s['ep1'])} | {to_base} | {_num(s['cost'])} | {s['n']} |"
        )
    return lines


def _grid_table(summaries: list[dict[str, Any]], model: str, target: str) -> list[str]:
    rows = [s for s in summaries if s["model"] == model and s["target"] == target]
    lines = [
        "| arm | backbone lr | final acc % | best acc % | AUC % | epoch-1 acc % | epochs to standard's final "
        "(runs reaching it) | restore cost (epochs) | wall s/run | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sorted(rows, key=lambda s: (s["backbone_lr"], s["arm"] != BASELINE, s["arm"])):
        lines.append(
            f"| {s['arm']} | {s['backbone_lr']:g} | {_pct(s['final'])} | {_pct(s['best'])} | {_pct(s['auc'])} | "
            f"{_pct(s['ep1'])} | {_epochs(s)} | {_num(s['cost'])} | {s['wall'][0]:.0f} | {s['n']} |"
        )
    return lines


def overview_table(summaries: list[dict[str, Any]], backbone_lr: float | None = None) -> list[str]:
    """One row per (model, target), one column per arm: mean ± std final accuracy and the seed count.

    Args:
        summaries: the per (model, target, arm, lr) summaries of [`aggregate`].
        backbone_lr: compare every arm at this backbone lr; None: each arm at its own best lr (the lr is shown).
    """
    chosen = (
        best_lr_summaries(summaries)
        if backbone_lr is None
        else [s for s in summaries if math.isclose(s["backbone_lr"], backbone_lr)]
    )
    arms = sorted({s["arm"] for s in chosen}, key=lambda a: (a != BASELINE, a))
    cells = {(s["model"], s["target"], s["arm"]): s for s in chosen}
    lines = ["| model | target | " + " | ".join(arms) + " |", "|---|---|" + "---|" * len(arms)]
    for model, target in sorted({(s["model"], s["target"]) for s in chosen}):
        row = []
        for arm in arms:
            s = cells.get((model, target, arm))
            lr = "" if s is None or backbone_lr is not None else f" @ {s['backbone_lr']:g}"
            row.append("" if s is None else f"{_pct(s['final'])} ({s['n']}){lr}")
        lines.append(f"| {model} | {target} | " + " | ".join(row) + " |")
    return lines


def markdown_report(summaries: list[dict[str, Any]], plot_names: dict[tuple[str, str], str] | None = None) -> str:
    """The Markdown tables: an overview of every pair, then per (model, target) each arm at its best lr and the full
    lr grid."""
    lines: list[str] = ["### Overview: final test accuracy % (seeds)", ""]
    lines += ["Each arm at its own best backbone learning rate:", ""] + overview_table(summaries) + [""]
    for lr in sorted({s["backbone_lr"] for s in summaries}):
        lines += [f"Every arm at backbone lr {lr:g}:", ""] + overview_table(summaries, lr) + [""]
    pairs = sorted({(s["model"], s["target"]) for s in summaries})
    for model, target in pairs:
        lines += [f"### {model} on {target}", ""]
        lines += ["Each arm at its own best backbone learning rate (by mean final accuracy):", ""]
        lines += _best_table(summaries, model, target) + [""]
        lines += [
            "Every arm at every backbone learning rate (epochs to the standard arm's final accuracy at the same lr):"
        ]
        lines += [""] + _grid_table(summaries, model, target) + [""]
        if plot_names and (model, target) in plot_names:
            lines += [f"![{model} on {target}]({plot_names[(model, target)]})", ""]
    return "\n".join(lines)


def plot_curves(
    summaries: list[dict[str, Any]],
    model: str,
    target: str,
    path: str | os.PathLike,
    arms: list[str] | None = None,
    title: str | None = None,
) -> Path:
    """One PNG per (model, target): a panel per backbone lr, the mean test-accuracy curve and a std band per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [s for s in summaries if s["model"] == model and s["target"] == target and (not arms or s["arm"] in arms)]
    lrs = sorted({s["backbone_lr"] for s in rows})
    names = sorted({s["arm"] for s in rows}, key=lambda a: (a != BASELINE, a))
    palette = plt.get_cmap("tab10")
    colors = {arm: "black" if arm == BASELINE else palette(i % 10) for i, arm in enumerate(names)}
    fig, axes = plt.subplots(1, len(lrs), figsize=(4.6 * len(lrs), 3.8), squeeze=False, sharey=True)
    for ax, lr in zip(axes[0], lrs):
        for s in sorted((s for s in rows if s["backbone_lr"] == lr), key=lambda s: names.index(s["arm"])):
            x = list(range(1, len(s["curve_mean"]) + 1))
            mean = [100 * v for v in s["curve_mean"]]
            std = [100 * v for v in s["curve_std"]]
            width = 2.2 if s["arm"] == BASELINE else 1.4
            color = colors[s["arm"]]
            ax.plot(x, mean, marker="o", markersize=3, linewidth=width, color=color, label=f"{s['arm']} (n={s['n']})")
            lower = [m - d for m, d in zip(mean, std)]
            upper = [m + d for m, d in zip(mean, std)]
            ax.fill_between(x, lower, upper, alpha=0.15, color=color)
        ax.set_title(f"backbone lr {lr:g}")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel("test accuracy (%)")
    fig.suptitle(title or f"{model} on {target}: mean ± std over seeds")
    return save_figure(fig, path)


def write_report(output_dir: str | os.PathLike) -> Path:
    """Read `output_dir/runs/*.json`, write `summary.md`, `summary.json` and `curves_<model>_<target>.png`.

    Runs refused by [`screen_runs`] (a model pretrained here whose source check fails or is missing) are left out of
    every table and plot; `summary.md` opens with the list of refused models and why.

    Returns:
        `Path` of `summary.md`.
    """
    output_dir = Path(output_dir)
    runs, refused = screen_runs(load_runs(output_dir))
    for reason in refused.values():
        logger.warning("Not reporting the runs of %s", reason)
    summaries = aggregate(runs)
    plots = {}
    for model, target in sorted({(s["model"], s["target"]) for s in summaries}):
        name = f"curves_{model}_{target}.png"
        plot_curves(summaries, model, target, output_dir / name)
        plots[(model, target)] = name
    md = output_dir / "summary.md"
    head = ["# hf-plasticity bench results", ""]
    if refused:
        head += ["## Refused: not pretrained models (no result on them is evidence)", ""]
        head += [f"- {reason}" for _, reason in sorted(refused.items())] + [""]
    md.write_text("\n".join(head) + "\n" + markdown_report(summaries, plots))
    (output_dir / "summary.json").write_text(json.dumps(summaries, indent=1))
    return md


def source_table(metrics: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown rows, one per source-pretrained model: parameters, recipe, final source test accuracy, the flatness
    check, where the curve stopped moving, and the wall time with the threads and the load it ran under."""
    lines = [
        "| model | parameters | epochs | lr | final source test acc % | spread of the last epochs (points) | "
        "plateau from epoch | passed | final val acc % | wall min (threads, 1-min load start-end) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in metrics.items():
        check = check_source_curve(m["curve"]["test_acc"])
        load = m["loadavg_1min"]
        val = m["curve"]["val_acc"][-1]
        lines.append(
            f"| {name} | {m['parameters']:,} | {m['recipe']['epochs']} | {m['recipe']['lr']:g} | "
            f"{100 * check['final']:.1f} | {100 * check['spread']:.1f} | {check['plateau_epoch']} | "
            f"{'yes' if check['passed'] else 'NO'} | {'n/a' if val is None else f'{100 * val:.1f}'} | "
            f"{m['wall_seconds'] / 60:.1f} ({m['threads']}, {load['start']:.1f}-{load['end']:.1f}) |"
        )
    return lines


def write_source_report(metrics: dict[str, dict[str, Any]], output_dir: str | os.PathLike) -> Path:
    """Write `source_pretraining.md` (the table of [`source_table`]), `source_pretraining.json` (every model's
    recorded metrics and curve, without the weights) and `source_curves.png` into `output_dir`.

    Returns:
        `Path` of `source_pretraining.md`.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "source_pretraining.json", metrics)
    curves = {name: m["curve"] for name, m in metrics.items()}
    plot_source_curve(curves, output_dir / "source_curves.png", title="source pretraining (shapes)")
    md = output_dir / "source_pretraining.md"
    md.write_text("\n".join(source_table(metrics)) + "\n")
    return md

"""The plasticity picture: where a model has lost plasticity on the user's data, and what a restore changed.

One figure, one column per backbone block (named on the axis, in depth order), four panels: how well each block's
output separates the downstream classes (the nearest-class-mean probe that ``"auto"`` decides on), the dormant ratio,
the insignificant-gradient share and the mean |w| (from 0, so a 1% change looks like one). Re-drawn blocks are shaded
(also when the record names the stage that holds them); when before/after diagnostics exist, before is grey and dashed,
after blue and solid. Needs matplotlib (the ``plot`` extra).
"""

from __future__ import annotations

import math
import os
from typing import Any

#: Line colours: before the restore, after it; the shading of re-drawn blocks.
BEFORE_COLOR, AFTER_COLOR, REDRAWN_COLOR = "tab:gray", "tab:blue", "tab:orange"
PANELS = (
    ("probe_accuracy", "probe accuracy\n(nearest class mean)"),
    ("dormant_ratio", "dormant ratio"),
    ("insignificant_grad_share", "insignificant\ngradient share"),
    ("mean_abs_weight", "mean |w|"),
)
FIGURE_NAME = "plasticity.png"


def short_names(names: list[str]) -> list[str]:
    """Block names without the dotted prefix they all share, keeping its last part for context.

    Example:

    ```python
    >>> short_names(["vit.layers.0", "vit.layers.1"])
    ['layers.0', 'layers.1']
    ```
    """
    if len(names) < 2:
        return list(names)
    parts = [name.split(".") for name in names]
    common = 0
    while all(len(p) > common + 1 and p[common] == parts[0][common] for p in parts):
        common += 1
    keep = max(common - 1, 0)
    return [".".join(p[keep:]) for p in parts]


def blocks_redrawn(block_names: list[str], redrawn: dict[str, list[str]] | None) -> dict[int, float]:
    """``{block index: shade}``: 1 for a block re-drawn whole (the record names the block, or a module containing
    it: ConvNeXt's stage, a ``layers`` list), 0.4 for a block with partly re-drawn tensors or re-drawn submodules.

    Example:

    ```python
    >>> blocks_redrawn(["s.0.layers.0", "s.1.layers.0", "s.1.layers.1"], {"whole": ["s.1"], "partial": []})
    {1: 1.0, 2: 1.0}
    ```
    """
    shades: dict[int, float] = {}
    for name, whole in [(n, False) for n in (redrawn or {}).get("partial", [])] + [
        (n, True) for n in (redrawn or {}).get("whole", [])
    ]:
        for index, block in enumerate(block_names):
            if whole and (name == block or block.startswith(name + ".")):
                shades[index] = 1.0  # the block, or a module holding it, re-drawn whole
            elif name.startswith(block + "."):
                shades[index] = max(shades.get(index, 0.0), 0.4)  # a part of the block
    return dict(sorted(shades.items()))


def _three(value: Any) -> str:
    return "–" if value is None else f"{value:.3g}"


def plot_plasticity(
    after: Any,
    *,
    before: Any = None,
    redrawn: dict[str, list[str]] | None = None,
    path: str | os.PathLike | None = None,
    title: str | None = None,
):
    """Draws the plasticity picture of a [`DiagnosticsReport`] (``after``), optionally against an earlier one.

    Args:
        after: the diagnostics to draw (solid lines).
        before: earlier diagnostics of the same model (grey dashed lines), e.g. before a restore.
        redrawn: what a restore re-drew (a report's or record's ``redrawn``): the blocks it names, or holds inside a
            module it names, are shaded.
        path: where to save the PNG; None returns the figure instead.
        title: the figure's title (default: samples and penultimate feature ranks, 3 significant digits).

    Returns:
        `str` (the path) when ``path`` is given, else the `matplotlib.figure.Figure`.
    """
    from matplotlib.figure import Figure  # not pyplot: no global state, and a notebook shows the figure once
    from matplotlib.patches import Patch

    rows_after = after.per_block()
    rows_before = before.per_block() if before is not None else None
    names = [row["block"] for row in rows_after]
    x = list(range(len(names)))
    shades = blocks_redrawn(names, redrawn)
    fig = Figure(figsize=(max(6.0, 0.45 * len(names) + 3.0), 8.5))
    axes = fig.subplots(len(PANELS), 1, sharex=True)
    for ax, (key, label) in zip(axes, PANELS):
        for index, shade in shades.items():
            ax.axvspan(index - 0.5, index + 0.5, color=REDRAWN_COLOR, alpha=0.12 + 0.18 * shade, lw=0)
        drawn: list[float] = []
        if rows_before is not None:
            values = [float("nan") if r[key] is None else r[key] for r in rows_before]
            ax.plot(x, values, "--", marker="o", markersize=3, color=BEFORE_COLOR, label="before")
            drawn += values
        values = [float("nan") if r[key] is None else r[key] for r in rows_after]
        ax.plot(x, values, "-", marker="o", markersize=4, color=AFTER_COLOR, label="after" if before else None)
        drawn += values
        ax.set_ylabel(label, fontsize=9)
        ax.grid(alpha=0.3)
        if key in ("probe_accuracy", "dormant_ratio", "insignificant_grad_share"):
            ax.set_ylim(-0.03, 1.03)
        else:  # a magnitude: from 0, so a change of 1% is not drawn as one across the whole panel
            top = max((v for v in drawn if math.isfinite(v)), default=0.0)
            ax.set_ylim(0.0, 1.1 * top if top > 0 else 1.0)
    axes[-1].set_xticks(x, short_names(names), rotation=45, ha="right", fontsize=8)
    axes[-1].set_xlim(-0.5, len(names) - 0.5)
    axes[-1].set_xlabel("backbone block (depth order)")
    handles = []
    if before is not None:
        handles += axes[0].get_legend_handles_labels()[0]
    if shades:
        handles.append(Patch(color=REDRAWN_COLOR, alpha=0.3, label="re-drawn"))
    if handles:
        axes[0].legend(handles=handles, fontsize=8, loc="best")
    if title is None:
        rank = f"effective rank {_three(after.effective_rank)}, stable rank {_three(after.stable_rank)}"
        if before is not None:
            rank = (
                f"effective rank {_three(before.effective_rank)} -> {_three(after.effective_rank)}, "
                f"stable rank {_three(before.stable_rank)} -> {_three(after.stable_rank)}"
            )
        title = f"Plasticity by block on {after.samples} samples\n(penultimate features: {rank})"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if path is None:
        return fig
    fig.savefig(path, dpi=100)
    return str(path)

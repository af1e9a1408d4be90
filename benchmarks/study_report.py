"""Tables of the benchmark, version 2, rebuilt from the committed per-run results (``benchmarks/results/v2``).

Per (model, target, budget) and arm: the configuration chosen on validation, its validation accuracy, and on the
confirmation seeds the test accuracy (mean and 95% CI), the paired difference to the tuned standard arm (mean and 95%
CI), the epochs to reach the tuned standard arm's final test accuracy, the area under the test curve, the robustness
to the backbone learning rate (mean and worst validation accuracy over the shared backbone lr grid, each lr at its
best other knobs) and the restore cost in epochs (CPU runs). After the tally, the same tally with Holm's correction
over each row's pairs, and the paired differences whose two runs of a seed ran on different devices (version 3's
protocol leaves those seeds out; version 2 paired them).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .pretrain import save_figure
from .source_identity import recorded_sources
from .stats import holm, mean_interval, paired_difference, paired_p_value
from .study import ARMS, LRS, folder_protocol, load_results, mean_final_val

Row = dict[str, Any]


def _by(records: list[Row], **match: Any) -> list[Row]:
    return [r for r in records if all(r[k] == v for k, v in match.items())]


def first_epoch_reaching(curve: list[float], level: float) -> int | None:
    """1-based epoch at which `curve` first reaches `level` (a tolerance of 1e-9 for ties), or None."""
    for epoch, acc in enumerate(curve, start=1):
        if acc >= level - 1e-9:
            return epoch
    return None


def result_files(results: str | Path) -> Iterator[tuple[str, str, list[Row]]]:
    """``(model, target, records)`` of every ``<model>__<target>.jsonl`` in ``results``, in name order.

    Raises:
        ValueError: a file whose runs were fine-tuned from two pretrained sources (records merged from another
            machine's study, `benchmarks.source_identity`): its seeds cannot be paired.
    """
    for path in sorted(Path(results).glob("*__*.jsonl")):
        model, target = path.stem.split("__")
        records = load_results(path)
        sources = recorded_sources(model, records, path.parent)
        if len(sources) > 1:
            raise ValueError(
                f"{path} holds runs of {model} fine-tuned from {len(sources)} pretrained sources {sorted(sources)}: "
                "a pair's seeds are paired only from one. Keep each source's runs in a results folder of their own."
            )
        yield model, target, records


def chosen_config(records: list[Row], arm: str, budget: str) -> tuple[str, dict, float] | None:
    """The arm's configuration with the best mean final validation accuracy over its tuning runs."""
    means: dict[str, list[float]] = defaultdict(list)
    knobs: dict[str, dict] = {}
    for r in _by(records, arm=arm, budget=budget, phase="tune"):
        means[r["config"]].append(r["val_acc"][-1])
        knobs[r["config"]] = r["knobs"]
    if not means:
        return None
    config = max(means, key=lambda c: sum(means[c]) / len(means[c]))
    return config, knobs[config], sum(means[config]) / len(means[config])


def confirmed_config(records: list[Row], runs: Any, budget: str) -> tuple[str, dict, float]:
    """The configuration the confirmation ``runs`` used (the one the study chose; ties on validation are broken by the
    study, so it is read from the runs, not chosen again), with its mean final validation accuracy over its tuning
    runs."""
    configs = {r["config"]: r["knobs"] for r in runs}
    if len(configs) != 1:
        raise ValueError(f"The confirmation runs of one arm used {len(configs)} configurations; expected one.")
    ((config, knobs),) = configs.items()
    value = mean_final_val(records, config, budget)
    return config, knobs, math.nan if value is None else value


def edge_knobs(records: list[Row], arm: str, budget: str, knobs: dict) -> set[str]:
    """The numeric knobs of ``knobs`` whose value is the smallest or largest the arm's tuning tried: its optimum may
    lie outside the grid (the study extends an edge a limited number of times)."""
    tried: dict[str, set[float]] = defaultdict(set)
    for r in _by(records, arm=arm, budget=budget, phase="tune"):
        for name, value in r["knobs"].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                tried[name].add(value)
    return {
        name
        for name, value in knobs.items()
        if len(tried.get(name, ())) > 1 and value in (min(tried[name]), max(tried[name]))
    }


def lr_robustness(records: list[Row], arm: str, budget: str) -> tuple[float, float] | None:
    """Mean and worst, over the backbone learning rates of the shared grid ([`LRS`], the same for every arm; the
    extensions differ between arms), of the best mean validation accuracy at that lr."""
    per_lr: dict[float, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in _by(records, arm=arm, budget=budget, phase="tune"):
        if r.get("recommended"):  # the recipe arm is not tuned: its rates are the pass's, not a grid's
            continue
        if any(math.isclose(r["recipe"]["backbone_lr"], lr) for lr in LRS):
            per_lr[r["recipe"]["backbone_lr"]][r["config"]].append(r["val_acc"][-1])
    if not per_lr:
        return None
    best = [max(sum(v) / len(v) for v in configs.values()) for configs in per_lr.values()]
    return sum(best) / len(best), min(best)


def restore_epochs(runs: Any) -> float | None:
    """The restore's mean cost in training epochs over the CPU runs (a GPU run's clock does not wait for the GPU, and
    its epochs cost something else); None without CPU runs."""
    ratios = [r["restore_seconds"] / r["epoch_seconds"] for r in runs if r.get("device", "cpu") == "cpu"]
    return sum(ratios) / len(ratios) if ratios else None


def same_device(results: str | Path) -> bool:
    """Whether the folder's protocol pairs only runs on one device (version 3); version 2's paired a GPU run with a CPU
    run of the same seed (they differ by floating-point rounding)."""
    protocol = folder_protocol(results)
    return protocol is not None and protocol.get("devices") == "same"


def device_of(run: Row) -> str:
    """Where a run trained: its record's ``device``; runs from before the study could use a GPU ran on the CPU."""
    return run.get("device", "cpu")


def mixed_seeds(treatment: dict[int, str], control: dict[int, str]) -> set[int]:
    """The seeds both arms ran whose two runs (seed -> device) trained on different devices."""
    return {seed for seed in set(treatment) & set(control) if treatment[seed] != control[seed]}


def confirmation_runs(records: list[Row], budget: str) -> dict[str, dict[int, Row]]:
    """Arm -> seed -> confirmation run, of the configuration each arm confirmed last: a grid extended after a first
    confirmation confirms its new choice on the same seeds, and the earlier runs (kept in the file) no longer count."""
    confirmed = _by(records, budget=budget, phase="confirm")
    last = {r["arm"]: r["config"] for r in confirmed}
    runs: dict[str, dict[int, Row]] = defaultdict(dict)
    for r in confirmed:
        if r["config"] == last[r["arm"]]:
            runs[r["arm"]][r["seed"]] = r
    return runs


def recommended_cell(runs: Any) -> str | None:
    """What the recipe arm's runs read and chose (`StudyArm.recommended`): the rates with their number of runs, the
    range of the last block's probe accuracy over the best block's, the rule's threshold and the pass's mean time;
    None for a tuned arm."""
    found = [r["recommended"] for r in runs if r.get("recommended")]
    if not found:
        return None

    def counted(name: str) -> str:
        values = [f[name] for f in found]
        return ", ".join(f"{v:g} x{values.count(v)}" for v in sorted(set(values)))

    ratios = [f["last_over_peak"] for f in found]
    thresholds = ", ".join(f"{t:g}" for t in sorted({f["threshold"] for f in found}))
    return (
        f"recommend_recipe: backbone_lr {counted('backbone_lr')}; head_lr {counted('head_lr')} (last/peak "
        f"{min(ratios):.3f}-{max(ratios):.3f}, threshold {thresholds}; pass "
        f"{sum(f['seconds'] for f in found) / len(found):.1f} s)"
    )


def summarize(records: list[Row], budget: str, one_device: bool = False) -> list[Row]:
    """One row per arm for one (model, target) and budget; accuracies in percent. With ``one_device``, the paired
    difference to standard leaves out the seeds whose two runs trained on different devices."""
    confirmed = confirmation_runs(records, budget)
    standard = confirmed.get("standard", {})
    standard_devices = {seed: device_of(r) for seed, r in standard.items()}
    baseline = mean_interval([100 * r["test_acc"][-1] for r in standard.values()]).mean if standard else None
    rows = []
    for arm in dict.fromkeys(r["arm"] for r in records):
        runs = confirmed.get(arm)
        if not runs:
            continue
        choice = confirmed_config(records, runs.values(), budget)
        final = {s: 100 * r["test_acc"][-1] for s, r in runs.items()}
        if one_device:
            mixed = mixed_seeds({s: device_of(r) for s, r in runs.items()}, standard_devices)
            paired = {s: acc for s, acc in final.items() if s not in mixed}
        else:
            paired = final
        reach = [first_epoch_reaching([100 * a for a in r["test_acc"]], baseline) for r in runs.values()]
        fixed = arm in ARMS and ARMS[arm].held_out and not ARMS[arm].recommended  # `<arm>_fixed`: not tuned here
        robustness = None if fixed else lr_robustness(records, arm, budget)
        rows.append(
            {
                "arm": arm,
                "knobs": choice[1],
                "recommended": recommended_cell(runs.values())
                or (f"fixed default, fitted on other pairs: {_knobs(choice[1])}" if fixed else None),
                "edges": edge_knobs(records, arm, budget, choice[1]),
                "val": 100 * choice[2],
                "test": mean_interval(list(final.values())),
                "diff": paired_difference(paired, {s: 100 * r["test_acc"][-1] for s, r in standard.items()})
                if standard and arm != "standard" and set(paired) & set(standard)
                else None,
                "reach": [e for e in reach if e is not None],
                "never": sum(e is None for e in reach),
                "epochs": len(next(iter(runs.values()))["test_acc"]),
                "auc": sum(100 * sum(r["test_acc"]) / len(r["test_acc"]) for r in runs.values()) / len(runs),
                "robustness": None if robustness is None else tuple(100 * v for v in robustness),
                "restore_epochs": restore_epochs(runs.values()),
                "seeds": len(runs),
            }
        )
    return rows


def tuning_table(records: list[Row], model: str, target: str, budget: str) -> list[str]:
    """Markdown lines for a (model, target, budget) still in tuning: each arm's best configuration so far on
    validation (no test number: the test split is read only for the confirmed configurations)."""
    tuned = _by(records, budget=budget, phase="tune")
    if not tuned:
        return []
    lines = [
        f"### {model} on {target}, {budget} budget ({len(tuned[0]['val_acc'])} epochs): tuning, not confirmed",
        "",
        "| arm | best so far on validation | val % | configurations tried | runs |",
        "|---|---|---:|---:|---:|",
    ]
    for arm in dict.fromkeys(r["arm"] for r in tuned):
        config, knobs, val = chosen_config(records, arm, budget)
        runs = _by(tuned, arm=arm)
        tried = len({r["config"] for r in runs})
        edges = edge_knobs(records, arm, budget, knobs)
        shown = recommended_cell(runs) or _knobs(knobs, edges)
        lines.append(f"| {arm} | {shown} | {100 * val:.1f} | {tried} | {len(runs)} |")
    return [*lines, ""]


def _knobs(knobs: dict, edges: set[str] = frozenset()) -> str:
    """``knob=value`` pairs; a value on the edge of the tried grid is marked with ``(edge)``."""
    return ", ".join(
        (f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}") + (" (edge)" if k in edges else "")
        for k, v in sorted(knobs.items())
    )


#: The overview's comparisons: (column, treatment arm, control arm).
OVERVIEW_PAIRS = (
    ("restore - standard", "reinit_top", "standard"),
    ("control - standard", "boost_top", "standard"),
    ("restore - control", "reinit_top", "boost_top"),
    ("auto - standard", "auto", "standard"),
)
#: The overview's column of the recipe arm (its test regret: negative when it loses to the tuned standard arm), shown
#: once a pair confirms the arm (version 2's overview stays as it was).
RECIPE_PAIR = ("recipe - standard", "recipe", "standard")


#: The arms whose worst validation accuracy over the lr grid the overview and the tally compare.
ROBUSTNESS_ARMS = ("standard", "reinit_top", "boost_top")


def confirmed_pairs(files: list[tuple[str, str, list[Row]]], one_device: bool = False) -> list[Row]:
    """One row per (model, target, budget) whose standard arm is confirmed: ``final`` (arm -> seed -> final test %),
    ``devices`` (arm -> seed -> device), ``worst`` (arm of `ROBUSTNESS_ARMS` -> worst validation % over the shared
    backbone lr grid, or None), whether the target is atypical and the model a ViT, and ``one_device`` (a paired
    difference leaves out the seeds whose two runs trained on different devices)."""
    from .models import ATYPICAL_TARGETS, get_spec

    pairs = []
    for model, target, records in files:
        for budget in dict.fromkeys(r["budget"] for r in records):
            confirmed = confirmation_runs(records, budget)
            final = {
                arm: {seed: 100 * r["test_acc"][-1] for seed, r in runs.items()} for arm, runs in confirmed.items()
            }
            if "standard" not in final:
                continue
            worst = {arm: lr_robustness(records, arm, budget) for arm in ROBUSTNESS_ARMS if arm in final}
            pairs.append(
                {
                    "model": model,
                    "target": target,
                    "budget": budget,
                    "atypical": target in ATYPICAL_TARGETS,
                    "vit": get_spec(model).family == "vit",
                    "final": final,
                    "devices": {
                        arm: {seed: device_of(r) for seed, r in runs.items()} for arm, runs in confirmed.items()
                    },
                    "one_device": one_device,
                    "worst": {arm: None if w is None else 100 * w[1] for arm, w in worst.items()},
                }
            )
    return pairs


def _difference(pair: Row, treatment: str, control: str, complete: bool = False) -> tuple[Any, int]:
    """The paired difference (None under 2 shared seeds, or, with ``complete``, unless both arms have as many seeds as
    the pair's most confirmed arm: a confirmation still running does not count) and the number of shared seeds. With
    the pair's ``one_device``, a seed whose two runs trained on different devices is not shared (so such a
    difference never counts as complete)."""
    final = pair["final"]
    seeds = _paired_seeds(pair, treatment, control)
    shared = len(seeds)
    if shared < 2 or (complete and shared < max(len(arm_seeds) for arm_seeds in final.values())):
        return None, shared
    return paired_difference({s: final[treatment][s] for s in seeds}, final[control]), shared


def overview(results: str | Path) -> list[str]:
    """Markdown lines of one row per confirmed (model, target, budget): the tuned standard arm's test accuracy, the
    paired differences of the default restore (`reinit_top`), the high-lr control (`boost_top`) and `auto` (mean and
    95% CI, in points, over the seeds both arms share; their number when fewer than standard's; – under 2), and the
    worst validation accuracy over the shared backbone lr grid of standard, restore and control. Empty when nothing
    is confirmed."""
    return _overview_lines(confirmed_pairs(list(result_files(results)), same_device(results)))


def _overview_lines(pairs: list[Row]) -> list[str]:
    lines = []
    columns = OVERVIEW_PAIRS + ((RECIPE_PAIR,) if any(RECIPE_PAIR[1] in pair["final"] for pair in pairs) else ())
    for pair in pairs:
        standard = pair["final"]["standard"]
        cells = [f"{pair['model']} | {pair['target']} ({'atypical' if pair['atypical'] else 'control'})"]
        cells += [pair["budget"], f"{mean_interval(list(standard.values())).mean:.1f} ({len(standard)})"]
        for _, treatment, control in columns:
            diff, shared = _difference(pair, treatment, control)
            cells.append(
                ("–" if diff is None else str(diff))
                + (f" ({shared} seeds)" if diff is not None and shared < len(standard) else "")
            )
        worst = [pair["worst"].get(arm) for arm in ROBUSTNESS_ARMS]
        cells.append(" / ".join("–" if w is None else f"{w:.1f}" for w in worst))
        lines.append("| " + " | ".join(cells) + " |")
    if not lines:
        return []
    header = " | ".join(column for column, _, _ in columns)
    return [
        "### Overview: the default restore and the high-lr control against the tuned standard arm",
        "",
        "Paired differences in final test accuracy (points, mean [95% CI] over the confirmation seeds); standard's "
        "test % with its number of seeds; the last column is the worst validation % over the shared backbone lr grid.",
        "",
        f"| model | target | budget | standard test % (seeds) | {header} | worst over lr grid: standard / restore / "
        "control |",
        "|---|---|---|---:|" + "---:|" * len(columns) + "---:|",
        *lines,
        "",
    ]


#: The tally's gain in the worst validation accuracy over the lr grid that counts as robustness (points).
ROBUSTNESS_GAIN = 3.0


def tally(results: str | Path) -> list[str]:
    """Markdown lines counting, per budget and kind of target, the pairs on which each arm's paired difference to the
    tuned standard arm (and the restore's to the control) has its 95% CI above 0, across 0 or below 0, naming the
    pairs off 0; then the pairs on which the restore's and the control's worst validation accuracy over the lr grid
    is at least `ROBUSTNESS_GAIN` points above standard's, CNNs and ViTs apart. Only pairs on which both arms have
    every seed count. Empty when nothing is confirmed."""
    return _tally_lines(confirmed_pairs(list(result_files(results)), same_device(results)))


def _tally_row(group: list[Row], treatment: str, control: str) -> str | None:
    """One tally row: the pairs of ``group`` whose paired CI of ``treatment - control`` lies above, across, below 0."""
    above, across, below = [], [], []
    for pair in group:
        diff, _ = _difference(pair, treatment, control, complete=True)
        if diff is not None:
            name = f"{pair['model']} {pair['target']} {diff.mean:+.2f}"
            (above if diff.low > 0 else below if diff.high < 0 else across).append(name)
    count = len(above) + len(across) + len(below)
    if not count:
        return None
    return (
        f"| {treatment} - {control} | {count} | {len(above)}: {', '.join(above) or '–'} | {len(across)} | "
        f"{len(below)}: {', '.join(below) or '–'} |"
    )


def _robustness_line(pairs: list[Row], budget: str) -> str | None:
    """How many atypical pairs of ``budget`` have the restore's and the control's worst validation % over the lr grid
    at least `ROBUSTNESS_GAIN` points above standard's, CNNs and ViTs apart."""
    counts = []
    for arm in (arm for arm in ROBUSTNESS_ARMS if arm != "standard"):
        for vit in (False, True):
            gains = [
                p["worst"][arm] - p["worst"]["standard"]
                for p in pairs
                if p["budget"] == budget and p["atypical"] and p["vit"] == vit
                if p["worst"].get(arm) is not None and p["worst"].get("standard") is not None
            ]
            if gains:
                met = sum(gain >= ROBUSTNESS_GAIN for gain in gains)
                counts.append(f"{arm} on {'ViT' if vit else 'CNN'} pairs: {met} of {len(gains)}")
    if not counts:
        return None
    return (
        f"Worst validation % over the lr grid at least {ROBUSTNESS_GAIN:g} points above standard's ({budget} budget, "
        "atypical targets): " + "; ".join(counts) + "."
    )


def _tally_groups(pairs: list[Row], budget: str) -> Iterator[tuple[bool, list[Row], list[tuple[str, str]]]]:
    """The tally's groups of one budget: (atypical, the group's pairs, its comparisons as (treatment, control))."""
    for atypical in (True, False):
        group = [p for p in pairs if p["budget"] == budget and p["atypical"] == atypical]
        arms = dict.fromkeys(arm for p in group for arm in p["final"] if arm != "standard")
        yield atypical, group, [(arm, "standard") for arm in arms] + [("reinit_top", "boost_top")]


def _tally_tables(pairs: list[Row], budget: str, row: Any, columns: str, suffix: str = "") -> list[str]:
    """One table per group of the tally (`_tally_groups`) of ``budget``, a line per comparison from ``row``."""
    lines = []
    for atypical, group, comparisons in _tally_groups(pairs, budget):
        rows = [line for line in (row(group, *c) for c in comparisons) if line is not None]
        if rows:
            kind = "atypical targets" if atypical else "in-domain controls"
            header = f"| comparison | pairs | {columns} |"
            lines += [f"#### {budget} budget, {kind}{suffix}", "", header, "|---|---:|---|---:|---|", *rows, ""]
    return lines


def _tally_lines(pairs: list[Row]) -> list[str]:
    lines = []
    for budget in dict.fromkeys(pair["budget"] for pair in pairs):
        lines += _tally_tables(pairs, budget, _tally_row, "CI above 0 | CI across 0 | CI below 0")
        robustness = _robustness_line(pairs, budget)
        if robustness:
            lines += [robustness, ""]
    if not lines:
        return []
    title = "### Tally: on how many pairs each arm beats or loses to the tuned standard arm"
    legend = "Paired 95% CI of the difference in final test accuracy (points; pairs named with their mean)."
    return [title, "", legend, "", *lines]


#: The family-wise error rate of the Holm-corrected tally.
ALPHA = 0.05


def _holm_row(group: list[Row], treatment: str, control: str) -> str | None:
    """One row of the Holm-corrected tally: the pairs of ``group`` (every seed confirmed) whose paired t-test of
    ``treatment - control`` rejects 0 after Holm's correction over the row's pairs, above and below 0."""
    named = []
    for pair in group:
        diff, _ = _difference(pair, treatment, control, complete=True)
        if diff is not None:
            seeds = _paired_seeds(pair, treatment, control)
            p = paired_p_value({s: pair["final"][treatment][s] for s in seeds}, pair["final"][control])
            named.append((f"{pair['model']} {pair['target']} {diff.mean:+.2f}", diff.mean, p))
    if not named:
        return None
    adjusted = holm([p for _, _, p in named])
    above = [name for (name, mean, _), q in zip(named, adjusted) if q < ALPHA and mean > 0]
    below = [name for (name, mean, _), q in zip(named, adjusted) if q < ALPHA and mean < 0]
    return (
        f"| {treatment} - {control} | {len(named)} | {len(above)}: {', '.join(above) or '–'} | "
        f"{len(named) - len(above) - len(below)} | {len(below)}: {', '.join(below) or '–'} |"
    )


def _paired_seeds(pair: Row, treatment: str, control: str) -> set[int]:
    """The seeds `_difference` pairs on."""
    seeds = set(pair["final"].get(treatment, {})) & set(pair["final"].get(control, {}))
    if pair.get("one_device") and seeds:
        seeds -= mixed_seeds(pair["devices"][treatment], pair["devices"][control])
    return seeds


def _holm_lines(pairs: list[Row]) -> list[str]:
    """The tally again, each row's tests corrected with Holm's step-down procedure over the row's pairs."""
    columns = "above 0 (Holm) | not rejected | below 0 (Holm)"
    lines = []
    for budget in dict.fromkeys(pair["budget"] for pair in pairs):
        lines += _tally_tables(pairs, budget, _holm_row, columns, ", Holm")
    if not lines:
        return []
    title = "### Tally with Holm's correction for the pairs of a row"
    legend = (
        "The tally's rows again, counting a pair above or below 0 only when its paired t-test (two-sided; p < 0.05 "
        "exactly when the 95% CI excludes 0) still rejects a zero difference after Holm's step-down correction over "
        f"the row's pairs (family-wise error {ALPHA:g} per row). The estimates are the tally's, uncorrected."
    )
    return [title, "", legend, "", *lines]


def _device_lines(pairs: list[Row]) -> list[str]:
    """The tally's comparisons whose two runs of a seed trained on different devices: left out of every paired
    difference under version 3's protocol, listed under version 2's (which paired them)."""
    rows = []
    for pair in pairs:
        arms = [arm for arm in pair["final"] if arm != "standard"]
        comparisons = [(arm, "standard") for arm in arms] + [("reinit_top", "boost_top")]
        cells = []
        for treatment, control in comparisons:
            if treatment in pair["devices"] and control in pair["devices"]:
                mixed = mixed_seeds(pair["devices"][treatment], pair["devices"][control])
                if mixed:
                    cells.append(f"{treatment} - {control} ({len(mixed)})")
        if cells:
            rows.append(f"| {pair['model']} | {pair['target']} | {pair['budget']} | {', '.join(cells)} |")
    if not rows:
        return []
    one_device = any(pair.get("one_device") for pair in pairs)
    legend = "Comparisons with seeds whose two runs trained on different devices (their number in brackets); " + (
        "this study's protocol leaves those seeds out of every paired difference, so such a comparison counts in "
        "no tally."
        if one_device
        else "version 2's protocol paired them (a GPU run differs from the CPU run of the same seed by "
        "floating-point rounding); version 3's leaves them out."
    )
    return [
        "### Paired differences across devices",
        "",
        legend,
        "",
        "| model | target | budget | comparisons (seeds on two devices) |",
        "|---|---|---|---|",
        *rows,
        "",
    ]


def markdown(results: str | Path) -> str:
    """The tables of every results file in ``results``, as Markdown: the overview first, then one table per
    (model, target, budget)."""
    files = list(result_files(results))
    one_device = same_device(results)
    pairs = confirmed_pairs(files, one_device)
    lines = _overview_lines(pairs) + _tally_lines(pairs) + _holm_lines(pairs) + _device_lines(pairs)
    for model, target, records in files:
        for budget in dict.fromkeys(r["budget"] for r in records):
            rows = summarize(records, budget, one_device)
            if not rows:
                lines += tuning_table(records, model, target, budget)
                continue
            lines += [
                f"### {model} on {target}, {budget} budget ({rows[0]['epochs']} epochs)",
                "",
                "| arm | chosen on validation | val % | test % (95% CI) | vs standard, paired (95% CI) | epochs to "
                "standard's final | AUC % | lr robustness mean / worst (val %) | restore (epochs) | seeds |",
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for row in rows:
                test, diff = row["test"], row["diff"]
                reach = (f"{sum(row['reach']) / len(row['reach']):.1f}" if row["reach"] else "–") + (
                    f" ({row['never']} never)" if row["never"] else ""
                )
                robust = (
                    "–" if row["robustness"] is None else f"{row['robustness'][0]:.1f} / {row['robustness'][1]:.1f}"
                )
                cost = "–" if row["restore_epochs"] is None else f"{row['restore_epochs']:.2f}"
                lines.append(
                    f"| {row['arm']} | {row['recommended'] or _knobs(row['knobs'], row['edges'])} | "
                    f"{row['val']:.1f} | {test.mean:.1f} "
                    f"[{test.low:.1f}, {test.high:.1f}] | {'–' if diff is None else str(diff)} | {reach} | "
                    f"{row['auc']:.1f} | {robust} | {cost} | {row['seeds']} |"
                )
            lines.append("")
    return "\n".join(lines)


def plot_differences(results: str | Path, path: str | Path) -> Path | None:
    """One panel per confirmed (model, target, budget): each arm's paired difference in final test accuracy to the
    tuned standard arm, with its 95% confidence interval (points right of 0: better than standard). Returns the PNG's
    path, or None when nothing is confirmed yet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels, one_device = [], same_device(results)
    for model, target, records in result_files(results):
        for budget in dict.fromkeys(r["budget"] for r in records):
            rows = [row for row in summarize(records, budget, one_device) if row["diff"] is not None]
            if rows:
                panels.append((f"{model} / {target} / {budget}", rows))
    if not panels:
        return None
    columns = min(3, len(panels))
    rows_of_panels = math.ceil(len(panels) / columns)
    height = 0.5 + 0.45 * max(len(rows) for _, rows in panels)
    fig, axes = plt.subplots(rows_of_panels, columns, figsize=(4.6 * columns, height * rows_of_panels), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (title, rows) in zip(axes.flat, panels):
        for y, row in enumerate(rows):
            diff = row["diff"]
            color = "tab:green" if diff.low > 0 else "tab:red" if diff.high < 0 else "tab:gray"
            ax.errorbar(diff.mean, y, xerr=[[diff.mean - diff.low], [diff.high - diff.mean]], fmt="o", color=color,
                        capsize=3)  # fmt: skip
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(rows)), [row["arm"] for row in rows])
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("test acc. vs tuned standard (points, 95% CI)")
        ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)


#: The markers in a Markdown document between which `write_into_doc` puts the tables.
DOC_MARKERS = ("<!-- study tables -->", "<!-- /study tables -->")


def _doc_span(content: str, doc: str | Path) -> tuple[int, int]:
    """Where the tables go in a document's text: from after the first marker to the second."""
    start, end = (content.find(marker) for marker in DOC_MARKERS)
    if start < 0 or end < start:
        raise ValueError(f"{doc} needs the lines {DOC_MARKERS[0]!r} and then {DOC_MARKERS[1]!r} around the tables.")
    return start + len(DOC_MARKERS[0]), end


def doc_tables(text: str) -> str:
    """The report's Markdown as a document holds it: every heading one level deeper, between two newlines."""
    return "\n" + "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines()).strip() + "\n"


def tables_in_doc(doc: str | Path) -> str:
    """The text between the `DOC_MARKERS` of ``doc`` (what `write_into_doc` put there)."""
    content = Path(doc).read_text()
    start, end = _doc_span(content, doc)
    return content[start:end]


def write_into_doc(text: str, doc: str | Path) -> Path:
    """Puts ``text`` (the report's Markdown) into ``doc`` between the `DOC_MARKERS`, every heading one level deeper,
    so the document's tables are the report's. Raises ValueError, leaving the document unchanged, when the markers
    are missing or out of order."""
    doc = Path(doc)
    content = doc.read_text()
    start, end = _doc_span(content, doc)
    doc.write_text(content[:start] + doc_tables(text) + content[end:])
    return doc


#: The command line's name (also `python -m benchmarks.study_report`).
PROG = "python -m benchmarks report"


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.study_report [RESULTS] [--doc DOC]``: prints the tables, writes
    RESULTS/summary.md, once a pair is confirmed RESULTS/differences.png, and with ``--doc`` the tables into DOC."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="?", default="benchmarks/results/v2", help="Folder of the JSONL results.")
    parser.add_argument("--doc", help=f"A Markdown file whose tables between {DOC_MARKERS} are replaced.")
    args = parser.parse_args(argv)
    results = Path(args.results)
    if not results.is_dir():
        print(
            f"No results folder {results}: give the folder of the study's <model>__<target>.jsonl files.",
            file=sys.stderr,
        )
        return 2
    text = markdown(results)
    if args.doc:
        try:
            print(f"wrote the tables into {write_into_doc(text, args.doc)}")
        except (OSError, ValueError) as error:
            print(f"Cannot write the tables into {args.doc}: {error}", file=sys.stderr)
            return 2
    (results / "summary.md").write_text(text + "\n")
    print(text)
    figure = plot_differences(results, results / "differences.png")
    if figure is not None:
        print(f"wrote {figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

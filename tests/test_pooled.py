"""The benchmark's pooled estimates: the mean over pairs of each pair's paired difference, with the t-interval across
pairs, only on pairs where both arms have every seed; the doc holds the table of the committed records."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from benchmarks.pooled import pool, table, table_in_doc
from benchmarks.study_report import confirmed_pairs, result_files

ROOT = Path(__file__).resolve().parents[1]


def pair(name: str, standard: list[float], restore: list[float], budget="short", atypical=True) -> dict:
    return {
        "model": name,
        "target": "digits",
        "budget": budget,
        "atypical": atypical,
        "vit": False,
        "final": {"standard": dict(enumerate(standard)), "reinit_top": dict(enumerate(restore))},
        "worst": {},
    }


@settings(max_examples=40, deadline=None)
@given(
    gaps=st.lists(st.floats(-5, 5, allow_nan=False), min_size=3, max_size=8),
    noise=st.lists(st.floats(-1, 1, allow_nan=False), min_size=3, max_size=3),
)
def test_the_pooled_estimate_is_the_t_interval_of_the_per_pair_means(gaps, noise):
    base = [80.0, 82.0, 81.0]
    pairs = [pair(f"m{i}", base, [b + gap + n for b, n in zip(base, noise)]) for i, gap in enumerate(gaps)]
    (row,) = pool(pairs, arms=("reinit_top",))
    means = [gap + sum(noise) / 3 for gap in gaps]
    assert row.estimate.mean == pytest.approx(sum(means) / len(means), abs=1e-9)
    if max(means) - min(means) > 1e-6:  # equal means: no spread, the interval is the mean
        low, high = stats.ttest_1samp(means, 0.0).confidence_interval(0.95)
        assert (row.estimate.low, row.estimate.high) == (pytest.approx(low, abs=1e-6), pytest.approx(high, abs=1e-6))
    assert len(row.pairs) == len(gaps) and row.group == "short / atypical"


def test_incomplete_pairs_small_groups_and_other_kinds_are_kept_apart():
    full = [80.0, 81.0, 82.0]
    pairs = [pair(f"m{i}", full, [v + 1 for v in full]) for i in range(3)]
    pairs.append(pair("half", full, [90.0, 91.0]))  # a confirmation still running: not counted
    pairs += [pair(f"c{i}", full, [v - 2 for v in full], atypical=False) for i in range(2)]  # 2 pairs: too few
    (row,) = pool(pairs, arms=("reinit_top",))
    assert row.pairs == ["m0 digits", "m1 digits", "m2 digits"] and row.estimate.mean == pytest.approx(1.0)
    assert len(pool(pairs, arms=("reinit_top",), min_pairs=2)) == 2  # the in-domain group appears with 2 allowed


def test_the_benchmark_doc_holds_the_pooled_table_of_the_committed_records():
    expected = table(pool(confirmed_pairs(list(result_files(ROOT / "benchmarks/results/v2")))))
    assert table_in_doc(ROOT / "docs/BENCHMARKS.md") == expected, (
        "docs/BENCHMARKS.md's pooled table is stale: run python -m benchmarks.pooled benchmarks/results/v2 "
        "--plot benchmarks/results/v2/pooled.png --doc docs/BENCHMARKS.md"
    )


@pytest.mark.parametrize("protocol", ["v3", None])
def test_the_command_pairs_only_runs_from_one_device_under_version_3_s_protocol(tmp_path, capsys, protocol):
    """Three atypical pairs where the recipe loses 1 point, but 5 on a seed trained on the GPU: version 3 leaves that
    seed out (the pair no longer counts as complete, so no group of 3 is left), version 2 pairs it."""
    from benchmarks.pooled import main

    from .test_regret import STANDARD, minus, runs, write_study

    files = [
        (model, "digits", [*runs("standard", STANDARD, [0.5]), *runs("recipe", minus(gaps), [0.5], devices=devices)])
        for model, gaps, devices in [
            ("resnet_tiny", [1, 1, 5, 1], ["cpu", "cpu", "cuda", "cpu"]),
            ("convnext_tiny", [1, 1, 1, 1], None),
            ("efficientnet_lite0", [1, 1, 1, 1], None),
        ]
    ]
    folder = write_study(tmp_path / "results", protocol, files)
    assert main([str(folder)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "| recipe |" in line]
    if protocol:
        assert rows == []
    else:
        (row,) = rows
        assert row.startswith("| short / atypical | recipe | 3 | -1.33 [")

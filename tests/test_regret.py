"""The recipe's regret report: per-pair regrets paired by seed on complete confirmations (one device under version 3's
protocol), pooled per group across pairs, epochs to reach the tuned standard's final mean, the issue's target verdicts;
the doc holds the tables of the committed records."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from benchmarks import regret
from benchmarks.regret import (
    DOC_MARKERS,
    doc_block,
    groups,
    main,
    markdown,
    pair_regrets,
    pooled_cell,
    regret_pairs,
    report,
    select,
    targets,
)
from benchmarks.stats import Interval
from benchmarks.study import PROTOCOL_FILE, PROTOCOLS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def four_seeds(monkeypatch, request):
    """The synthetic pairs confirm on 4 seeds; a pair counts from `MIN_SEEDS` (the study's 10 for the records)."""
    if "committed" not in request.node.name:
        monkeypatch.setattr(regret, "MIN_SEEDS", 2)


#: The tuned standard arm's final test accuracy on seeds 0-3 of every synthetic pair (mean 83%).
STANDARD = (0.80, 0.82, 0.84, 0.86)


def runs(arm, finals, early, budget="short", devices=None):
    """Confirmation records of ``arm``: seed ``i`` ends at ``finals[i]`` after the epochs ``early`` (every seed)."""
    devices = devices or ["cpu"] * len(finals)
    return [
        {"arm": arm, "budget": budget, "phase": "confirm", "config": arm, "knobs": {}, "seed": seed,
         "test_acc": [*early, final], "val_acc": [0.5], "device": device}
        for seed, (final, device) in enumerate(zip(finals, devices))
    ]  # fmt: skip


def minus(points):
    """The finals of an arm whose regret on seed ``i`` is ``points[i]``."""
    return [s - p / 100 for s, p in zip(STANDARD, points)]


def study_files():
    """(model, target, records) of the synthetic study. Short budget: the recipe on three atypical CNN pairs (regret
    0.5, 2.5 and -1.5; the second never reaches standard's final mean), one ViT pair (regret 3) and two in-domain
    CNN pairs; an incomplete LP-FT and a held-out recipe with one seed on the GPU; a long pair, written first."""
    standard = runs("standard", STANDARD, [0.5, 0.7])
    return [
        ("resnet_tiny", "digits", [
            *runs("standard", STANDARD, [0.5] * 8, budget="long"),
            *runs("recipe", minus([1, 1, 1, 1]), [0.5] * 8, budget="long"),  # never reaches 83
            *standard,
            *runs("recipe", minus([1, -1, 2, 0]), [0.6, 0.84]),  # mean curve 84 at epoch 2: reaches 83
            *runs("lp_ft", STANDARD[:3], [0.5, 0.7]),  # 3 of 4 seeds: incomplete
            *runs("recipe_heldout", minus([0, 0, 5, 0]), [0.5, 0.7], devices=["cpu", "cpu", "cuda", "cpu"]),
        ]),
        ("resnet_tiny", "textures", [*standard, *runs("recipe", minus([3, 2, 3, 2]), [0.4, 0.6])]),  # never
        ("convnext_tiny", "digits", [
            *standard, *runs("recipe", minus([-1, -1, -2, -2]), [0.82, 0.85]),
            *runs("auto", minus([1, 1, 1, 1]), [0.5, 0.7]), *runs("lp_ft", minus([0, 1, 0, 1]), [0.5, 0.7]),
        ]),
        ("vit_tiny", "digits", [*standard, *runs("recipe", minus([3, 3, 4, 2]), [0.5, 0.7])]),
        ("resnet_tiny", "shapes_ctrl", [*standard, *runs("recipe", minus([1, 1, 1, 1]), [0.5, 0.7])]),
        ("convnext_tiny", "shapes_ctrl", [*standard, *runs("recipe", minus([0, 0, 0, 0]), [0.5, 0.7])]),
    ]  # fmt: skip


def write_study(folder: Path, protocol: str | None, files: list | None = None) -> Path:
    """The synthetic study (or ``files``) as a results folder; ``protocol`` "v3" writes its protocol file (None:
    version 2's)."""
    folder.mkdir()
    if protocol:
        (folder / PROTOCOL_FILE).write_text(json.dumps(PROTOCOLS[protocol]))
    for model, target, records in files or study_files():
        (folder / f"{model}__{target}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def t_interval(values):
    """Mean and 95% t-interval, written out."""
    n, mean = len(values), sum(values) / len(values)
    half = stats.t.ppf(0.975, n - 1) * math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)
    return mean, mean - half, mean + half


def test_regrets_worst_pairs_epochs_and_verdicts_have_known_answers(tmp_path):
    regrets, notes = report(write_study(tmp_path / "v3", "v3"))
    by = {(r.model, r.target, r.budget, r.arm): r for r in regrets}
    digits = by["resnet_tiny", "digits", "short", "recipe"]
    mean, low, high = t_interval([1, -1, 2, 0])
    assert (digits.regret.mean, digits.regret.low, digits.regret.high) == pytest.approx((mean, low, high), abs=1e-9)
    assert (digits.epochs, digits.standard_epochs, digits.never) == (2, 3, False)
    textures = by["resnet_tiny", "textures", "short", "recipe"]
    assert textures.regret.mean == pytest.approx(2.5) and (textures.epochs, textures.never) == (4, True)
    assert by["convnext_tiny", "digits", "short", "recipe"].epochs == 2  # 82 at epoch 1, 85 at epoch 2
    assert by["resnet_tiny", "digits", "long", "recipe"].epochs == 10  # never in 9 epochs

    # the incomplete LP-FT and the held-out recipe with a seed on another device are left out of that pair, and said
    assert ("resnet_tiny", "digits", "short", "lp_ft") not in by
    assert ("resnet_tiny", "digits", "short", "recipe_heldout") not in by
    assert notes == [
        "recipe_heldout on resnet_tiny digits (short): 3 of 4 seeds, 1 on another device",
        "lp_ft on resnet_tiny digits (short): 3 of 4 seeds",
    ]

    found = {(g.label, g.arm): g for g in groups(regrets)}
    cnn = found["short | atypical | CNN", "recipe"]
    mean, low, high = t_interval([0.5, 2.5, -1.5])  # resnet_tiny digits, textures, convnext_tiny digits
    assert (cnn.pooled.mean, cnn.pooled.low, cnn.pooled.high) == pytest.approx((mean, low, high), abs=1e-9)
    assert cnn.worst.name == "resnet_tiny textures" and cnn.epochs == pytest.approx(((2 + 4 + 2) / 3, 3.0))
    assert targets(cnn) == (f"missed by {high - 1.0:.2f}", "missed by 0.50", "met")

    vit = found["short | atypical | ViT", "recipe"]  # one pair: its CI over seeds; its worst is already a miss
    assert vit.pooled == by["vit_tiny", "digits", "short", "recipe"].regret and "(1 pair: CI over seeds)" in (
        pooled_cell(vit)
    )
    assert targets(vit) == ("not enough pairs", "missed by 1.00", "not enough pairs")
    domain = found["short | in-domain | CNN", "recipe"]  # two pairs: their mean, no CI, no verdict
    assert pooled_cell(domain) == "+0.50 (2 pairs: no CI)" and set(targets(domain)) == {"not enough pairs"}
    assert list(dict.fromkeys(g.label for g in groups(regrets))) == [  # short first, whatever the file order
        "short | atypical | CNN", "short | atypical | ViT", "short | in-domain | CNN", "long | atypical | CNN"
    ]  # fmt: skip
    # the headline figure's rows: the arms asked for, in that order within each group, groups in order
    every = [(g.label, g.arm) for g in groups(regrets)]
    labels = list(dict.fromkeys(label for label, _ in every))
    expected = [(label, arm) for label in labels for arm in ("lp_ft", "recipe") if (label, arm) in every]
    assert [(g.label, g.arm) for g in select(groups(regrets), ["lp_ft", "recipe", "nowhere"])] == expected
    assert ("short | atypical | CNN", "lp_ft") in expected  # the fixture has both arms somewhere
    with pytest.raises(ValueError, match=r"No regret of the arms \['nowhere'\] to plot"):
        regret.plot(groups(regrets), tmp_path / "none.png", ["nowhere"])
    assert not (tmp_path / "none.png").exists()


def test_version_2_s_protocol_pairs_the_seed_run_on_another_device(tmp_path):
    regrets, notes = report(write_study(tmp_path / "v2", None))
    (heldout,) = [r for r in regrets if r.arm == "recipe_heldout"]
    assert heldout.regret.n == 4 and heldout.regret.mean == pytest.approx(5 / 4)
    assert notes == ["lp_ft on resnet_tiny digits (short): 3 of 4 seeds"]


def test_the_tables_order_the_arms_and_flag_what_never_reached(tmp_path):
    lines = markdown(*report(write_study(tmp_path / "v3", "v3")))
    text = "\n".join(lines)
    assert "| pair | budget | data | family | recipe | lp_ft | auto |" in lines  # known arms first, then by name
    assert "| resnet_tiny textures | short | atypical | CNN | 3 | 4 (never) | – | – |" in lines
    assert "| short | atypical | CNN | recipe | 3 | +0.50 [" in text and "4 (never)" in text
    assert "| 2.67 (1 never) / 3.00 |" in text


def test_the_command_writes_the_tables_into_the_doc_and_the_figure(tmp_path, capsys):
    from benchmarks.__main__ import main as benchmarks_main

    folder = write_study(tmp_path / "v3", "v3")
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{DOC_MARKERS[0]}\nold\n{DOC_MARKERS[1]}\nafter\n")
    argv = ["regret", str(folder), "--doc", str(doc), "--plot", str(tmp_path / "r.png"), "--headline",
            str(tmp_path / "h.png")]  # fmt: skip
    assert benchmarks_main(argv) == 0
    assert doc_block(doc) == markdown(*report(folder)) and doc.read_text().startswith("before\n")
    assert doc.read_text().endswith(f"{DOC_MARKERS[1]}\nafter\n")
    assert (tmp_path / "r.png").read_bytes()[:8] == (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([str(tmp_path / "missing")]) == 2 and "No results folder" in capsys.readouterr().err


curves = st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=3, max_size=3)
#: Three atypical CNN pairs, as (model, target).
PAIRS = (("resnet_tiny", "digits"), ("resnet_tiny", "textures"), ("convnext_tiny", "digits"))


def files_of(standard, arm):
    """In-memory files: on every pair of `PAIRS`, standard's and the recipe's confirmation runs from the curves."""

    def confirm(name, per_seed):
        return [{**runs(name, [c[-1]], c[:-1])[0], "seed": seed} for seed, c in enumerate(per_seed)]

    return [(m, t, confirm("standard", s) + confirm("recipe", a)) for (m, t), s, a in zip(PAIRS, standard, arm)]


@settings(max_examples=25, deadline=None)
@given(standard=st.lists(st.lists(curves, min_size=2, max_size=5), min_size=3, max_size=3))
def test_an_arm_identical_to_standard_has_no_regret_and_meets_every_target(standard):
    regrets = pair_regrets(regret_pairs(files_of(standard, standard), one_device=True))
    assert len(regrets) == 3 and all(r.regret.mean == r.regret.low == r.regret.high == 0 for r in regrets)
    assert all(r.epochs == r.standard_epochs <= 3 for r in regrets)
    (group,) = groups(regrets)
    assert targets(group) == ("met", "met", "met")


@settings(max_examples=25, deadline=None)
@given(
    data=st.lists(st.tuples(curves, curves), min_size=2, max_size=5).map(lambda seeds: list(zip(*seeds))),
    c=st.floats(-5, 5, allow_nan=False),
)
def test_adding_c_points_to_the_arm_shifts_its_regret_by_minus_c(data, c):
    standard, arm = [list(data[0])] * 3, [list(data[1])] * 3
    shifted = [[[a + c / 100 for a in curve] for curve in pair] for pair in arm]
    before = pair_regrets(regret_pairs(files_of(standard, arm), one_device=True))
    after = pair_regrets(regret_pairs(files_of(standard, shifted), one_device=True))
    for old, new in zip(before, after):
        assert (new.regret.mean, new.regret.low, new.regret.high) == pytest.approx(
            (old.regret.mean - c, old.regret.low - c, old.regret.high - c), abs=1e-6
        )
        assert (new.epochs <= old.epochs) if c > 1e-6 else (new.epochs >= old.epochs) if c < -1e-6 else True
    (old_group,), (new_group,) = groups(before), groups(after)
    assert new_group.pooled.mean == pytest.approx(old_group.pooled.mean - c, abs=1e-6)


def test_the_benchmark_doc_holds_the_regret_tables_of_the_committed_records():
    expected = markdown(*report(ROOT / "benchmarks/results/v3"))
    assert doc_block(ROOT / "docs/BENCHMARKS.md") == expected, (
        "docs/BENCHMARKS.md's regret tables are stale: run python -m benchmarks regret benchmarks/results/v3 --doc "
        "docs/BENCHMARKS.md --plot benchmarks/results/v3/regret.png --headline benchmarks/results/v3/headline.png"
    )


def test_a_pair_part_way_through_its_confirmation_is_left_out_and_named(tmp_path, monkeypatch):
    monkeypatch.setattr(regret, "MIN_SEEDS", 5)  # the synthetic standard arm has 4 seeds: not yet confirmed
    regrets, notes = report(write_study(tmp_path / "v3", "v3"))
    assert regrets == [] and any("confirmed on 4 of 5 seeds so far" in note for note in notes)


_ends = st.floats(-100, 100, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_ends, _ends, _ends).map(sorted), min_size=1, max_size=4))
def test_a_panel_reaches_at_most_its_reach_and_writes_what_lies_beyond(ends):
    """The figure's axis: 0 and every value within the reach stay in view; what leaves it is written, no more."""
    intervals = [Interval(mean, low, high, 3, 1.0) for low, mean, high in ends]
    limits = regret.axis_limits(intervals, reach=12.0)
    values = [0.0, *(v for i in intervals for v in (i.low, i.mean, i.high))]
    if all(-12.0 <= v <= 12.0 for v in values):
        assert limits is None  # matplotlib's own limits show everything
        return
    left, right = limits
    assert -12.0 <= left <= 0.0 <= right <= 12.0
    assert all(left <= v <= right for v in values if -12.0 <= v <= 12.0)
    for interval in intervals:
        beyond = regret.beyond_reach(interval, limits)
        inside = left <= interval.low and interval.high <= right
        assert (beyond is None) == inside
        if beyond is not None:
            note, at_right = beyond
            assert note == f"{interval.mean:+.1f} [{interval.low:+.1f}, {interval.high:+.1f}]"
            if (interval.low < left) != (interval.high > right):  # one side: the note is written on it
                assert at_right == (interval.high > right)
            else:
                assert at_right == (interval.mean > 0)


def test_a_study_on_fewer_seeds_counts_its_pairs_when_the_command_is_told_how_many(tmp_path, monkeypatch, capsys):
    """The synthetic pairs confirm on 4 seeds: at the study's 10 none counts, with ``--seeds 4`` they all do."""
    monkeypatch.setattr(regret, "MIN_SEEDS", 10)
    folder = write_study(tmp_path / "v3", "v3")
    assert main([str(folder)]) == 0
    assert "confirmed on 4 of 10 seeds so far" in capsys.readouterr().out
    assert main([str(folder), "--seeds", "4"]) == 0
    assert markdown(*report(folder, 4)) == capsys.readouterr().out.rstrip("\n").split("\n")
    assert report(folder, 4)[0] and not report(folder)[0]
    with pytest.raises(SystemExit):
        main([str(folder), "--seeds", "1"])
    assert "--seeds is 1: a paired interval needs at least 2 seeds" in capsys.readouterr().err

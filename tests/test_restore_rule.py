"""The pre-registered candidate rule (`benchmarks.restore_rule`): below the shipped rule's threshold a CNN takes the
`auto` restore at the configuration fitted on the other CNN pairs below it; elsewhere the shipped rule's rates; the
doc holds its table of the committed records."""

from __future__ import annotations

import json

import pytest

from benchmarks.recipe_rule import Pair, load_pairs
from benchmarks.restore_rule import candidate_regrets, lines, main

from .test_regret import runs

LRS = (3e-4, 1e-3, 3e-3)
HEAD = 1e-3
GOOD, BAD = json.dumps({"reinit_lr": 1}), json.dumps({"reinit_lr": 2})


def grid(best: float) -> dict[tuple[float, float], float]:
    """Standard's validation accuracy: 90 at ``best``, 10 points less per grid step away."""
    return {(lr, HEAD): 90.0 - 10 * abs(LRS.index(lr) - LRS.index(best)) for lr in LRS}


def study(own_auto: dict[str, float] | None = None):
    """Three CNN pairs that read high (best at the small rate), five that read low (best at the large one; the first
    four ran `auto`, whose GOOD configuration beats the tuned standard by 2), one low ViT pair that ran `auto` too."""
    pairs = [Pair(f"cnn_h{i}", "digits", "short", grid(3e-4), 0.99) for i in range(3)]
    pairs += [Pair(f"cnn_l{i}", "digits", "short", grid(3e-3), 0.7) for i in range(5)]
    pairs += [Pair("vit_l", "digits", "short", grid(1e-3), 0.7)]
    tables = {(p.model, p.target, p.budget): {"standard": {"x": 90.0}} for p in pairs}
    for name in ("cnn_l0", "cnn_l1", "cnn_l2", "cnn_l3", "vit_l"):
        tables[name, "digits", "short"]["auto"] = {GOOD: 92.0, BAD: 85.0}
    if own_auto is not None:
        tables["cnn_l0", "digits", "short"]["auto"] = own_auto
    return pairs, tables


def test_a_cnn_below_the_threshold_takes_the_restore_fitted_on_the_others_and_nothing_else_changes():
    pairs, tables = study()
    regrets = {p.model: r for p, r in candidate_regrets(pairs, tables).items()}
    assert all(regrets[f"cnn_l{i}"] == (0.0, -2.0) for i in range(4))
    assert regrets["cnn_l4"][0] == regrets["cnn_l4"][1]  # never ran auto: the shipped rule's rates
    assert regrets["vit_l"][0] == regrets["vit_l"][1]  # the ViT keeps the shipped rule
    assert all(regrets[f"cnn_h{i}"][0] == regrets[f"cnn_h{i}"][1] for i in range(3))


def test_a_held_out_pair_s_own_records_never_choose_its_configuration():
    pairs, tables = study(own_auto={GOOD: 50.0, BAD: 99.0})
    regrets = {p.model: r for p, r in candidate_regrets(pairs, tables).items()}
    assert regrets["cnn_l0"] == (0.0, 40.0)  # GOOD, chosen on the other pairs, scored on its own 50


def test_the_benchmark_doc_holds_the_candidate_s_table_of_the_committed_records(capsys):
    from benchmarks.held_out import tuning_tables

    table = lines(candidate_regrets(load_pairs("benchmarks/results/v2"), tuning_tables("benchmarks/results/v2")))
    assert "\n".join(table) in open("docs/BENCHMARKS.md", encoding="utf-8").read()
    assert main(["benchmarks/results/v2"]) == 0 and capsys.readouterr().out.splitlines() == table
    assert main(["nowhere"]) == 2 and "no results folder" in capsys.readouterr().err


def _run(arm: str, seed: int, final: float, read: float | None = None) -> dict:
    """`test_regret.runs`' record of one seed, with the recipe's reading (``recommended``) when ``read`` is given."""
    (run,) = runs(arm, [final], [0.5])
    run["seed"] = seed
    if read is not None:
        run["recommended"] = {"last_over_peak": read, "threshold": 0.98}
    return run


def test_the_candidate_s_runs_are_auto_fixed_s_where_the_recipe_read_below_its_threshold_on_a_cnn():
    from benchmarks.restore_rule import candidate_runs

    runs = {
        "recipe": {0: _run("recipe", 0, 0.8, read=0.7), 1: _run("recipe", 1, 0.8, read=0.99)},
        "auto_fixed": {0: _run("auto_fixed", 0, 0.9), 1: _run("auto_fixed", 1, 0.9)},
    }
    chosen = candidate_runs(runs, vit=False)
    assert chosen[0] is runs["auto_fixed"][0] and chosen[1] is runs["recipe"][1]
    assert candidate_runs(runs, vit=True) == runs["recipe"]  # the ViT keeps the shipped rule
    del runs["auto_fixed"][0]
    assert candidate_runs(runs, vit=False) is None  # a seed lacks the run it needs
    assert candidate_runs({"recipe": {0: _run("recipe", 0, 0.8)}}, vit=False) is None  # no reading recorded


def test_the_regret_report_shows_the_candidate_as_an_arm():
    from benchmarks.regret import pair_regrets, regret_pairs

    standard = [_run("standard", s, 0.85) for s in range(4)]
    recipe = [_run("recipe", s, 0.80, read=0.7 if s < 2 else 0.99) for s in range(4)]
    auto = [_run("auto_fixed", s, 0.86) for s in range(4)]
    files = [("resnet_tiny", "digits", standard + recipe + auto)]
    regrets = {r.arm: r for r in pair_regrets(regret_pairs(files, one_device=True), min_seeds=4)}
    assert regrets["recipe"].regret.mean == pytest.approx(5.0)
    assert regrets["restore_below"].regret.mean == pytest.approx((-1 - 1 + 5 + 5) / 4)

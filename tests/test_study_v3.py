"""The study's version-3 settings (issue 27): validation ties broken by a third tuning seed and a hash, Holm's
correction of the tally, no paired difference across devices, the validation fraction, and the LP-FT arm."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from benchmarks import study
from benchmarks.stats import holm, mean_interval, paired_difference, paired_p_value

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ Holm, p-values
def test_holm_adjusts_a_hand_checked_example():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06 (never below the one before)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1, non-decreasing
    assert holm([0.04]) == [0.04] and holm([]) == []


@pytest.mark.parametrize(
    "differences", [[0.5, 1.5, -0.2, 0.9, 1.1], [0.1, -0.1, 0.2, 0.0], [-2.0, -1.5, -2.5], [1.0, 1.0], [0.0, 0.0]]
)
def test_a_paired_p_value_rejects_exactly_when_the_interval_excludes_zero(differences):
    control = {seed: 80.0 for seed in range(len(differences))}
    treatment = {seed: 80.0 + d for seed, d in enumerate(differences)}
    p = paired_p_value(treatment, control)
    assert (p < 0.05) == paired_difference(treatment, control).excludes_zero
    assert (p < 0.05) == mean_interval(differences).excludes_zero


def test_the_holm_tally_of_the_committed_records_keeps_the_tally_s_pairs_and_names_a_subset():
    from benchmarks.study_report import markdown

    text = markdown(ROOT / "benchmarks/results/v2")
    plain = text.split("### Tally: ")[1].split("### Tally with Holm")[0]
    corrected = text.split("### Tally with Holm")[1].split("### Paired differences across devices")[0]

    def rows(section):
        found = {}
        for heading in section.split("#### ")[1:]:
            group = heading.split("\n")[0].removesuffix(", Holm")
            for line in heading.splitlines():
                if line.startswith("| ") and " - " in line.split("|")[1]:
                    cells = [c.strip() for c in line.strip("|").split("|")]
                    found[group, cells[0]] = cells
        return found

    plain, corrected = rows(plain), rows(corrected)
    assert plain.keys() == corrected.keys() and len(plain) > 20
    fewer = {2: 0, 4: 0}
    for key, cells in plain.items():
        holm_cells = corrected[key]
        assert holm_cells[1] == cells[1]  # the same pairs
        for column in (2, 4):  # above, below: what survives Holm is among what the interval names
            named = set(cells[column].split(": ", 1)[1].split(", ")) - {"–"}
            survived = set(holm_cells[column].split(": ", 1)[1].split(", ")) - {"–"}
            assert survived <= named
            fewer[column] += len(named) - len(survived)
    assert fewer[2] > 0 and fewer[4] > 0  # the correction takes pairs off both sides


# ------------------------------------------------------------------------------------------------------ ties
ARM = study.StudyArm("standard", grid={"backbone_lr": (1e-3, 3e-3), "head_lr": (1e-3,)})


def _record(knobs, seed, val, phase="tune", arm="standard"):
    return {"config": study.config_key(arm, knobs), "budget": "short", "phase": phase, "seed": seed,
            "val_acc": [val], "knobs": knobs}  # fmt: skip


def test_a_tie_runs_a_third_seed_and_a_remaining_tie_goes_to_the_hash_whatever_the_grid_order():
    low, high, ext = ({"backbone_lr": lr, "head_lr": 1e-3} for lr in (1e-3, 3e-3, 9e-3))
    records = [_record(k, seed, v) for k, v in ((low, 0.8), (high, 0.9), (ext, 0.9)) for seed in (100, 101)]
    extensions = {"backbone_lr": (9e-3,)}
    assert study.tied_configs(records, ARM, "short", extensions) == [ext, high]
    # version 2's rule: the first in grid order, and an extension comes first
    assert study.choose(records, ARM, "short", extensions) == ext
    assert study.choose(records, ARM, "short", extensions, "third_seed", (102,)) is None  # the tie runs are missing
    decided = [*records, _record(high, 102, 0.95, "tie"), _record(ext, 102, 0.9, "tie")]
    assert study.choose(decided, ARM, "short", extensions, "third_seed", (102,)) == high
    still = [*records, _record(high, 102, 0.9, "tie"), _record(ext, 102, 0.9, "tie")]
    by_hash = min((high, ext), key=lambda k: study.config_key("standard", k))
    reversed_arm = study.StudyArm("standard", grid={"backbone_lr": (3e-3, 1e-3), "head_lr": (1e-3,)})
    for arm in (ARM, reversed_arm):
        assert study.choose(still, arm, "short", extensions, "third_seed", (102,)) == by_hash
    # the same configurations reached the other way round: 9e-3 in the grid, 3e-3 its extension
    other = study.StudyArm("standard", grid={"backbone_lr": (9e-3, 1e-3), "head_lr": (1e-3,)})
    assert study.choose(still, other, "short", {"backbone_lr": (3e-3,)}, "third_seed", (102,)) == by_hash
    unrun = [r for r in records if r["knobs"] != ext]
    assert study.tied_configs(unrun, ARM, "short", extensions) == []  # a configuration not run yet: no tie yet
    with pytest.raises(ValueError, match="tie_break"):
        study.choose(records, ARM, "short", extensions, "coin")


def test_the_hash_tie_break_favours_neither_end_of_the_grids():
    """Over the adjacent pairs of values of the study's grids, the hash picks the upper value about as often as the
    lower one (version 2's rule picked an extension, an outer value, every time)."""
    upper = total = 0
    values = [3.3e-5 * 3**i for i in range(8)]
    for head_lr in (1e-3, 3e-3):
        for a, b in zip(values, values[1:]):
            low, high = ({"backbone_lr": round(v, 10), "head_lr": head_lr} for v in (a, b))
            upper += study.config_key("standard", high) < study.config_key("standard", low)
            total += 1
    assert 0.25 * total <= upper <= 0.75 * total


def _fake_run(task):
    """A study run without a model: validation accuracy from the knobs and the seed (ties on the tuning seeds
    between backbone lr 1e-3 and 3e-3; the tie seed prefers 1e-3)."""
    lr = task["knobs"]["backbone_lr"]
    val = {3e-4: 0.5, 1e-3: 0.9, 3e-3: 0.9}[lr] + (0.01 if task["seed"] == 102 and lr == 1e-3 else 0.0)
    return {**{k: task[k] for k in ("model", "target", "arm", "phase", "budget", "config", "knobs", "seed")},
            "val_acc": [val], "test_acc": [0.8] if task["phase"] == "confirm" else None,
            "device": task["settings"]["device"]}  # fmt: skip


@pytest.mark.parametrize("protocol", ["v3", "v2"])
def test_the_study_runs_the_tie_seed_on_the_tied_configurations_only_and_resumes(tmp_path, monkeypatch, protocol):
    monkeypatch.setattr(study, "ARMS", {"standard": study.StudyArm("standard", grid={"backbone_lr": study.LRS})})
    monkeypatch.setattr(study, "run_one", _fake_run)
    settings = study.StudySettings.for_protocol(
        protocol, models=["m"], targets=["t"], arms=["standard"], budgets=["short"], results=str(tmp_path),
        confirmation_seeds=(0, 1),
    )  # fmt: skip
    counts = study.run_study(settings, progress=False)
    records = study.load_results(tmp_path / "m__t.jsonl")
    ties = [r for r in records if r["phase"] == "tie"]
    confirmed = {r["knobs"]["backbone_lr"] for r in records if r["phase"] == "confirm"}
    if protocol == "v3":
        assert sorted((r["knobs"]["backbone_lr"], r["seed"]) for r in ties) == [(1e-3, 102), (3e-3, 102)]
        assert confirmed == {1e-3} and counts["done"] == 6 + 2 + 2
    else:  # version 2: the first of the tied configurations in grid order, no tie runs
        assert ties == [] and confirmed == {1e-3} and counts["done"] == 6 + 2
    assert study.run_study(settings, progress=False)["done"] == 0  # resumable, tie runs included


# ------------------------------------------------------------------------------------------------ protocols
def test_a_results_folder_keeps_its_protocol(tmp_path):
    assert study.folder_protocol(ROOT / "benchmarks/results/v2") == {
        **study.PROTOCOLS["v2"],
        "tuning_seeds": [100, 101],
    }
    new = study.StudySettings(models=[], targets=[], results=str(tmp_path / "v3"))
    assert new.tie_break == "third_seed" and new.val_fraction == 0.3 and new.devices == "same"  # the defaults
    study.claim_folder(new)
    assert study.folder_protocol(tmp_path / "v3")["tie_seeds"] == [102]
    study.claim_folder(new)  # resumed with the same protocol
    with pytest.raises(ValueError, match="holds runs of the protocol"):
        study.claim_folder(study.StudySettings(models=[], targets=[], results=str(tmp_path / "v3"), val_fraction=0.2))
    legacy = tmp_path / "v2"
    legacy.mkdir()
    (legacy / "m__t.jsonl").write_text("{}\n")  # records without study.json: version 2's
    with pytest.raises(ValueError, match="holds runs of the protocol"):
        study.claim_folder(study.StudySettings(models=[], targets=[], results=str(legacy)))
    study.claim_folder(study.StudySettings.for_protocol("v2", models=[], targets=[], results=str(legacy)))
    assert not (legacy / study.PROTOCOL_FILE).exists()  # the committed folder stays as it is


def test_the_command_line_follows_the_folder_s_protocol(tmp_path, monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(study, "run_study", lambda settings, choices: seen.append(settings) or {})
    with pytest.raises(SystemExit):  # version 3's arms include the held-out ones: a new folder needs their choices
        study.main(["--models", "m", "--targets", "t", "--results", str(tmp_path / "new")])
    assert "held_out.json is missing" in capsys.readouterr().err and not (tmp_path / "new" / "study.json").exists()
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "held_out.json").write_text('{"fixed": {}, "recipe_rule": {}}')
    assert study.main(["--models", "m", "--targets", "t", "--results", str(tmp_path / "new")]) == 0
    assert seen[-1].arms == study.V3_ARMS and "lp_ft" in seen[-1].arms and seen[-1].tie_break == "third_seed"
    assert "lp_ft" in study.ARMS and "lp_ft" not in study.DEFAULT_ARMS  # version 2's default arms stay
    legacy = tmp_path / "v2"
    legacy.mkdir()
    (legacy / "m__t.jsonl").write_text("{}\n")
    assert study.main(["--models", "m", "--targets", "t", "--results", str(legacy)]) == 0
    assert seen[-1].arms == study.DEFAULT_ARMS and (seen[-1].tie_break, seen[-1].val_fraction) == ("first", 0.2)
    with pytest.raises(SystemExit):
        study.main(["--models", "m", "--targets", "t", "--results", str(legacy), "--protocol", "v3"])
    assert "holds runs of the protocol" in capsys.readouterr().err
    study.main(["--models", "m", "--targets", "t", "--results", str(tmp_path / "wide"), "--val-fraction", "0.4",
                "--arms", "standard", "lp_ft"])  # fmt: skip
    assert study.folder_protocol(tmp_path / "wide")["val_fraction"] == 0.4


# ------------------------------------------------------------------------------------------------- devices
def _confirm(arm, seed, test, device):
    return {"arm": arm, "budget": "short", "phase": "confirm", "config": arm, "knobs": {"backbone_lr": 1e-3},
            "seed": seed, "val_acc": [0.5], "test_acc": [test], "recipe": {"backbone_lr": 1e-3},
            "restore_seconds": 0.0, "epoch_seconds": 1.0, "device": device}  # fmt: skip


@pytest.mark.parametrize("protocol", ["v3", "v2"])
def test_a_paired_difference_leaves_out_seeds_run_on_two_devices(tmp_path, protocol):
    from benchmarks.study_report import markdown, overview, summarize, tally

    records = [_confirm("standard", s, acc, "cuda") for s, acc in enumerate((0.5, 0.6, 0.7))]
    records += [_confirm("reinit_top", 0, 0.6, "cuda"), _confirm("reinit_top", 1, 0.8, "cuda")]
    records += [{k: v for k, v in _confirm("reinit_top", 2, 0.2, "cpu").items() if k != "device"}]  # an older run
    (tmp_path / "resnet_tiny__digits.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if protocol == "v3":
        (tmp_path / study.PROTOCOL_FILE).write_text(json.dumps(study.StudySettings([], []).protocol()))
    (row,) = [line for line in overview(tmp_path) if line.startswith("| resnet_tiny")]
    cell = [c.strip() for c in row.strip("|").split("|")][4]
    restore = next(r for r in summarize(records, "short", protocol == "v3") if r["arm"] == "reinit_top")
    tallied = "\n".join(tally(tmp_path))
    text = markdown(tmp_path)
    assert "| resnet_tiny | digits | short | reinit_top - standard (1) |" in text
    if protocol == "v3":  # seed 2 (standard on the GPU, the restore on the CPU) is left out
        assert cell.startswith("+15.00 [") and cell.endswith("(2 seeds)")
        assert restore["diff"].n == 2 and "| reinit_top - standard |" not in tallied  # incomplete: not tallied
        assert "leaves those seeds out" in text
    else:  # version 2 paired it, and the report lists it
        assert cell.startswith("-6.67 [") and restore["diff"].n == 3  # (+10 + 20 - 50) / 3
        assert "| reinit_top - standard | 1 |" in tallied and "version 2's protocol paired them" in text


# --------------------------------------------------------------------------------------------------- LP-FT
def _tiny_resnet():
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)
    return ResNetForImageClassification(config)


@pytest.mark.parametrize("probe_fraction", [1 / 3, 0.0])
def test_lp_ft_trains_the_head_alone_first_then_everything(probe_fraction):
    from benchmarks.recipe import Recipe, fine_tune_v2

    model = _tiny_resnet()
    head = "classifier.1."
    initial = copy.deepcopy(model.state_dict())
    states = {}

    def snapshot(epoch, history):
        states[epoch] = copy.deepcopy(model.state_dict())
        if epoch == 1:
            states["grad"] = {name for name, p in model.named_parameters() if p.requires_grad}

    images, labels = torch.randn(48, 3, 16, 16), torch.randint(0, 3, (48,))
    recipe = Recipe(epochs=3, backbone_lr=1e-2, head_lr=1e-2, batch_size=16, probe_fraction=probe_fraction)
    fine_tune_v2(model, (images, labels), (images[:8], labels[:8]), None, recipe, on_epoch=snapshot)

    def changed(a, b, in_head):
        return {name for name in a if name.startswith(head) == in_head and not torch.equal(a[name], b[name])}

    assert changed(initial, states[1], in_head=True)  # the head trains in the probe
    assert changed(states[1], states[3], in_head=True)  # and after it
    assert changed(states[1], states[3], in_head=False)  # the backbone trains after the probe
    weights = {name for name, _ in model.named_parameters() if not name.startswith(head)}
    assert weights <= changed(states[1], states[3], in_head=False)  # every weight, not only BatchNorm statistics
    if probe_fraction:
        assert recipe.probe_epochs == 1
        assert not changed(initial, states[1], in_head=False)  # weights and BatchNorm statistics: untouched
        assert states["grad"] == {name for name, _ in model.named_parameters() if name.startswith(head)}
    else:
        assert changed(initial, states[1], in_head=False)
    assert all(p.requires_grad for p in model.parameters())  # thawed
    with pytest.raises(ValueError, match="probe_fraction"):
        Recipe(epochs=3, backbone_lr=1e-3, head_lr=1e-3, probe_fraction=1.5)


def test_the_lp_ft_arm_is_tuned_and_confirmed_by_the_study(tmp_path, monkeypatch):
    from benchmarks.data import as_tensors, load_target
    from benchmarks.recipe import stratified_split
    from benchmarks.study_report import markdown

    assert study.ARMS["lp_ft"].grid == {
        "backbone_lr": study.LRS,
        "head_lr": (1e-3, 3e-3),
        "probe_fraction": (1 / 3, 2 / 3),
    }
    assert study.ARMS["lp_ft"].strategy is None
    monkeypatch.setattr(study, "ARMS", {
        "standard": study.StudyArm("standard", grid={"backbone_lr": (1e-3,)}),
        "lp_ft": study.StudyArm("lp_ft", grid={"backbone_lr": (1e-3,), "head_lr": (3e-3,), "probe_fraction": (0.5,)}),
    })  # fmt: skip
    monkeypatch.setattr(study, "BUDGETS", {"short": 2})
    settings = study.StudySettings(
        models=["efficientnet_lite0"], targets=["digits"], arms=["lp_ft"], budgets=["short"], results=str(tmp_path),
        tuning_seeds=(100,), confirmation_seeds=(0, 1), max_train=60, max_test=20, image_size=32,
    )  # fmt: skip
    assert study.run_study(settings, progress=False)["done"] == 2 + 4
    records = study.load_results(tmp_path / "efficientnet_lite0__digits.jsonl")
    lp_ft = [r for r in records if r["arm"] == "lp_ft"]
    assert {r["phase"] for r in lp_ft} == {"tune", "confirm"} and all(
        r["recipe"]["probe_fraction"] == 0.5 for r in lp_ft
    )
    labels = as_tensors(load_target("digits", 32, max_train=60)["train"])[1]
    held = {fraction: len(stratified_split(labels, fraction, seed=0)[1]) for fraction in (0.2, 0.3)}
    assert held[0.2] < held[0.3] and {r["n"]["val"] for r in records} == {held[0.3]}  # version 3's fraction
    assert "| lp_ft | backbone_lr=0.001, head_lr=0.003, probe_fraction=0.5 |" in markdown(tmp_path)
    assert all(r["channels_last"] is True for r in records)  # EfficientNet's format, recorded per run


@pytest.mark.parametrize(
    "model, recorded, refused",
    [
        (
            "efficientnet_lite0",
            {},
            "made with contiguous weights, and the bench keeps efficientnet_lite0 channels-last",
        ),
        ("efficientnet_lite0", {"channels_last": True}, None),
        (
            "resnet_tiny",
            {"channels_last": True},
            "made with channels-last weights, and the bench keeps resnet_tiny contig",
        ),
        ("resnet_tiny", {}, None),
    ],
)
def test_a_pair_is_never_resumed_in_another_memory_format(tmp_path, model, recorded, refused):
    path = tmp_path / f"{model}__digits.jsonl"
    path.write_text(json.dumps({"model": model, "target": "digits", "arm": "standard", **recorded}) + "\n")
    # a folder of records without study.json is version 2's (EfficientNet's v2 records are contiguous)
    settings = study.StudySettings.for_protocol(
        "v2", models=[model], targets=["digits", "textures"], results=str(tmp_path)
    )
    if refused is None:
        study.refuse_mixed_formats(settings)
    else:
        with pytest.raises(ValueError, match=refused):
            study.refuse_mixed_formats(settings)
        with pytest.raises(ValueError, match=refused):  # the study's checks before it writes run it
            study.preflight(settings)
        assert path.read_text().count("\n") == 1 and not (tmp_path / "study.json").exists()

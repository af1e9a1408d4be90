"""The ``lp_ft`` arm of `hf_plasticity.compare` (LP-FT, Kumar et al., ICLR 2022: the head alone with the backbone
frozen, then everything), on a tiny local ResNet (BatchNorm: the probe must keep its statistics too) and an imagefolder
of generated PNGs. Each `Trainer.train` call of the comparison is watched (its parameters and buffers before and after,
which parameters need a gradient, the images of its training steps in order, the modules' modes in its training
forward passes): during the probe the backbone does not change and the head does, after it both do; every epoch of an
lp_ft run reads the images in the order the same epoch of standard's run of the seed reads them; and the records,
the summary and the report say what the arm did."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModelForImageClassification, Trainer, ViTImageProcessor

from hf_plasticity import compare, get_layout
from hf_plasticity.cli.main import main
from hf_plasticity.comparison import arms
from hf_plasticity.comparison.arms import PROBE_FRACTION, check_lp_ft, probe_epochs
from hf_plasticity.comparison.report import ARM_TITLES, markdown, summarize

from .models import IMAGE_SIZE, pretrained
from .test_compare import records
from .test_compare_arms import _imagefolder

EPOCHS, PROBE = 3, 1  # a probe of round(3 / 3) = 1 epoch, then 2 epochs of fine-tuning
BUDGET = dict(seeds=2, epochs=EPOCHS, batch_size=8, backbone_lrs=(1e-3,), own_lrs=(1e-2,))
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny 'pretrained' ResNet (BatchNorm) with an image processor, and an imagefolder of 2 classes x 14 images."""
    root = tmp_path_factory.mktemp("compare-lpft")
    pretrained("resnet", root / "tiny-resnet")
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(root / "tiny-resnet")
    _imagefolder(root / "images", ("circle", "square"), 14, seed=0)
    return root


@pytest.fixture(scope="module")
def watched(workspace, tmp_path_factory):
    """One comparison of standard and lp_ft (one configuration each, 2 seeds, 3 epochs), with every `Trainer.train`
    call watched; returns ``(summary, output folder, calls)``."""
    calls: list[dict] = []
    train, training_step, compute_loss = Trainer.train, Trainer.training_step, Trainer.compute_loss

    def watched_train(self, *args, **kwargs):
        model = self.model
        before = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        call = {
            "kind": type(self).__name__,
            "seed": self.args.seed,
            "epochs": self.args.num_train_epochs,
            "trainable": {name for name, param in model.named_parameters() if param.requires_grad},
            "optimized": {id(param) for group in self.optimizer.param_groups for param in group["params"]},
            "parameters": {id(param): name for name, param in model.named_parameters()},
            "images": [],
            "modes": set(),
        }
        calls.append(call)
        result = train(self, *args, **kwargs)
        after = model.state_dict()
        call["changed"] = {name for name, tensor in after.items() if not torch.equal(tensor, before[name])}
        return result

    def watched_step(self, model, inputs, *args, **kwargs):
        calls[-1]["images"] += [round(float(s), 2) for s in inputs["pixel_values"].sum(dim=(1, 2, 3))]
        return training_step(self, model, inputs, *args, **kwargs)

    def watched_loss(self, model, inputs, *args, **kwargs):
        head = dict(self.model.named_modules())[get_layout(self.model).head[0]]
        if self.model.training or head.training:  # a training step (evaluation runs everything in eval mode)
            backbone_modes = {m.training for n, m in self.model.named_modules() if n.startswith("resnet.")}
            calls[-1]["modes"].add((frozenset(backbone_modes), head.training))
        return compute_loss(self, model, inputs, *args, **kwargs)

    output = tmp_path_factory.mktemp("lpft-out") / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "train", watched_train)
        patch.setattr(Trainer, "training_step", watched_step)
        patch.setattr(Trainer, "compute_loss", watched_loss)
        summary = compare(str(workspace / "tiny-resnet"), str(workspace / "images"), output=str(output),
                          progress=False, arms=("standard", "lp_ft"), **BUDGET)  # fmt: skip
    return summary, output, calls


def _runs(calls: list[dict], seed: int) -> tuple[dict, dict, dict]:
    """Standard's one `Trainer.train` call of ``seed``, and lp_ft's two: the probe, then the fine-tuning."""
    of_seed = [call for call in calls if call["seed"] == seed]
    (standard,) = [call for call in of_seed if call["kind"] == "Trainer" and call["epochs"] == EPOCHS]
    (probe,) = [call for call in of_seed if call["kind"] == "ProbeTrainer"]
    (fine_tune,) = [call for call in of_seed if call["kind"] == "Trainer" and call["epochs"] == EPOCHS - PROBE]
    assert of_seed.index(fine_tune) == of_seed.index(probe) + 1
    return standard, probe, fine_tune


def _head_and_backbone(workspace) -> tuple[set[str], set[str], set[str]]:
    """The names of the head's parameters, the backbone's parameters and the backbone's buffers (state dict keys)."""
    model = AutoModelForImageClassification.from_pretrained(workspace / "tiny-resnet")
    layout = get_layout(model)
    parameters = {name for name, _ in model.named_parameters()}
    head = {name for name in parameters if layout.in_head(name)}
    buffers = {name for name in model.state_dict() if name not in parameters}
    assert head and buffers and all(not layout.in_head(name) for name in buffers)
    return head, parameters - head, buffers


def test_the_probe_trains_the_head_alone_then_everything_trains(workspace, watched):
    _, _, calls = watched
    head, backbone, buffers = _head_and_backbone(workspace)
    for seed in SEEDS:
        standard, probe, fine_tune = _runs(calls, seed)
        # the probe: only the head needs a gradient and is optimized; it changes, the backbone (weights and BatchNorm
        # statistics) does not, and the backbone runs in eval mode in its training steps
        assert probe["trainable"] == head
        assert {probe["parameters"][i] for i in probe["optimized"]} == head
        assert head <= probe["changed"] and not probe["changed"] & (backbone | buffers)
        assert probe["modes"] == {(frozenset({False}), True)}
        # then everything needs a gradient again, is optimized and changes, in training mode
        assert fine_tune["trainable"] == head | backbone == standard["trainable"]
        assert {fine_tune["parameters"][i] for i in fine_tune["optimized"]} == head | backbone
        assert head | backbone <= fine_tune["changed"] and buffers & fine_tune["changed"]
        assert fine_tune["modes"] == standard["modes"] == {(frozenset({True}), True)}


def test_every_epoch_reads_the_seed_s_order_as_standard_s_same_epoch(watched):
    """The fine-tuning phase's Trainer continues the seed's data order (it does not repeat the probe's epoch)."""
    _, _, calls = watched
    for seed in SEEDS:
        standard, probe, fine_tune = _runs(calls, seed)
        per_epoch = len(standard["images"]) // EPOCHS
        assert len(set(standard["images"])) == per_epoch  # every training image once per epoch, told apart
        assert probe["images"] + fine_tune["images"] == standard["images"]
        assert standard["images"][:per_epoch] != standard["images"][per_epoch : 2 * per_epoch]  # orders differ


def test_records_paired_heads_one_curve_and_the_probe_epochs(watched):
    _, output, _ = watched
    runs = records(output)
    assert {r["arm"] for r in runs} == {"standard", "lp_ft"}
    for run in runs:
        assert len(run["val_curve"]) == len(run["train_loss"]) == EPOCHS  # one entry per epoch, over both phases
        assert run["val_accuracy"] == run["val_curve"][-1]
        assert run["probe_epochs"] == (PROBE if run["arm"] == "lp_ft" else None)
        assert (run["test_accuracy"] is not None) == (run["phase"] == "confirm")  # the test, once, confirming only
    confirm = {(r["arm"], r["seed"]): r for r in runs if r["phase"] == "confirm"}
    for seed in SEEDS:
        assert confirm[("lp_ft", seed)]["head_init"] == confirm[("standard", seed)]["head_init"]  # the same new head
    assert confirm[("standard", 0)]["head_init"] != confirm[("standard", 1)]["head_init"]
    tune = [r for r in runs if r["phase"] == "tune" and r["arm"] == "lp_ft"]
    assert [(r["config"]["backbone_lr"], r["config"]["own_lr"]) for r in tune] == [(1e-3, 1e-2)]


def test_the_report_names_lp_ft_as_the_published_anchor(watched):
    summary, output, _ = watched
    entry = summary["arms"]["lp_ft"]
    assert entry["tuned"] and entry["probe_epochs"] == PROBE and "difference_to_standard" in entry
    assert (entry["backbone_lr"], entry["own_lr"]) == (1e-3, 1e-2)
    assert ARM_TITLES["lp_ft"] in summary["verdict"] and "published anchor" in summary["verdict"]
    report = (output / "report.md").read_text()
    assert "| lp_ft | 0.001 | 0.01 |" in report
    assert f"for {PROBE} of the {EPOCHS} epochs" in report and "the published anchor" in report
    assert ARM_TITLES["lp_ft"] in report


def _resume(workspace, output) -> dict:
    """The `watched` comparison again, into ``output``."""
    return compare(str(workspace / "tiny-resnet"), str(workspace / "images"), output=str(output), progress=False,
                   arms=("standard", "lp_ft"), **BUDGET)  # fmt: skip


def _files(output) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in output.iterdir()}


@pytest.mark.parametrize("written_before_the_field", [False, True])
def test_runs_of_another_probe_fraction_are_refused_not_mixed(workspace, watched, tmp_path, monkeypatch,
                                                              written_before_the_field):  # fmt: skip
    """The run key does not hold the probe fraction, so each lp_ft record does, and a resume under another
    PROBE_FRACTION is refused (naming the problem and --overwrite; the files are left as they were) instead of pooling
    runs of two probe lengths in one arm. A record without the field (written before it existed) probed for 1/3, the
    only fraction compare ever had: it resumes under 1/3 and is refused under another."""
    output = tmp_path / "earlier"
    shutil.copytree(watched[1], output)
    runs = records(output)
    assert all(r["probe_fraction"] == (PROBE_FRACTION if r["arm"] == "lp_ft" else None) for r in runs)
    if written_before_the_field:
        lines = [json.dumps({k: v for k, v in r.items() if k != "probe_fraction"}, sort_keys=True) for r in runs]
        (output / "runs.jsonl").write_text("\n".join(lines) + "\n")
    before = _files(output)
    monkeypatch.setattr(arms, "PROBE_FRACTION", 2 / 3)
    refusal = r"runs of the arm 'lp_ft' whose linear probe took another share of the epochs \(0\.3333\) than this "
    with pytest.raises(ValueError, match=refusal) as raised:
        _resume(workspace, output)
    assert "PROBE_FRACTION 0.6667" in str(raised.value) and "Pass --overwrite" in str(raised.value)
    assert _files(output) == before
    monkeypatch.setattr(arms, "PROBE_FRACTION", 1 / 3)  # the fraction the runs were recorded with: resumed
    summary = _resume(workspace, output)
    assert summary["arms"]["lp_ft"]["test_accuracy"] == watched[0]["arms"]["lp_ft"]["test_accuracy"]
    assert (output / "runs.jsonl").read_bytes() == before["runs.jsonl"]  # nothing trained again


def test_too_few_epochs_for_both_phases_is_refused_before_anything_is_written(workspace, tmp_path, capsys):
    output = tmp_path / "out"
    with pytest.raises(ValueError, match="Arm 'lp_ft' cannot run its two phases in 1 epoch:") as raised:
        compare(str(workspace / "tiny-resnet"), str(workspace / "images"), output=str(output), progress=False,
                **{**BUDGET, "arms": ("standard", "lp_ft"), "epochs": 1})  # fmt: skip
    assert "--epochs 2 or more" in str(raised.value) and "drop lp_ft from --arms" in str(raised.value)
    assert not output.exists()
    argv = ["compare", str(workspace / "tiny-resnet"), "--data", str(workspace / "images"), "--arms", "standard",
            "lp_ft", "--epochs", "1", "--output", str(output)]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "Arm 'lp_ft' cannot run its two phases" in error
    assert not output.exists()


def test_probe_epochs_are_a_third_and_two_epochs_hold_both_phases():
    assert PROBE_FRACTION == 1 / 3
    assert [probe_epochs(epochs) for epochs in (2, 3, 4, 5, 9)] == [1, 1, 1, 2, 3]
    check_lp_ft(["standard", "lp_ft"], 2)  # a probe of 1 epoch, then 1
    check_lp_ft(["standard", "restore"], 1)  # without lp_ft, one epoch is fine
    with pytest.raises(ValueError, match="in 1 epoch"):
        check_lp_ft(["standard", "lp_ft"], 1)


def _record(arm: str, seed: int, accuracy: float, **extra) -> dict:
    return {"arm": arm, "seed": seed, "config": {"backbone_lr": 1e-4, "own_lr": 1e-3}, "test_accuracy": accuracy,
            "val_curve": [0.5, 0.6, 0.7], "recipe": None, **extra}  # fmt: skip


def test_the_recommended_recipe_is_compared_with_the_anchor_when_both_ran():
    """With ``recommended`` and ``lp_ft`` both run, the summary, the verdict and the report hold the recipe minus
    LP-FT, paired by seed."""
    recipe = {"backbone_lr": 3e-3, "head_lr": 1e-2, "samples": 256, "budget": "short", "last_over_peak": 0.9,
              "threshold": 0.95}  # fmt: skip
    runs = []
    accuracies = [(0.80, 0.84, 0.82), (0.78, 0.83, 0.80), (0.81, 0.85, 0.81)]  # standard, lp_ft, recommended
    for seed, (standard, lp_ft, recommended) in enumerate(accuracies):
        runs += [_record("standard", seed, standard), _record("lp_ft", seed, lp_ft, probe_epochs=1),
                 {**_record("recommended", seed, recommended), "recipe": recipe}]  # fmt: skip
    chosen = {"standard": (1e-4, 1e-3), "lp_ft": (1e-4, 1e-3), "recommended": None}
    summary = summarize(["standard", "lp_ft", "recommended"], chosen, runs)
    difference = summary["arms"]["recommended"]["difference_to_lp_ft"]
    assert difference["n"] == 3 and difference["mean"] == pytest.approx(-0.03)
    assert summary["arms"]["lp_ft"]["probe_epochs"] == 1
    assert summary["arms"]["lp_ft"]["probe_fraction"] == pytest.approx(1 / 3)  # recorded before the field: the first
    assert "Against LP-FT, the published anchor, the recommended recipe is 3.00 points below it" in summary["verdict"]
    summary["settings"] = {"model": "m", "data": "d", "epochs": 3}
    assert "recommended minus lp_ft, paired by seed" in markdown(summary)


def test_two_processes_run_both_phases_as_one_ddp_run(workspace, tmp_path):
    """Under `accelerate launch` (two CPU processes, gloo) each phase is a DDP run: the probe's over the head alone
    (the frozen backbone is no DDP parameter), then everything; one record per run."""
    import subprocess

    from .test_compare import env
    from .test_distributed import accelerate_cli, free_port

    output = tmp_path / "out"
    command = [
        accelerate_cli(), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        "-m", "hf_plasticity.cli.main", "compare", str(workspace / "tiny-resnet"), "--data", str(workspace / "images"),
        "--arms", "standard", "lp_ft", "--seeds", "1", "--epochs", "2", "--batch-size", "4", "--backbone-lrs",
        "0.001", "--own-lrs", "0.01", "--output", str(output), "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(command, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = records(output)
    assert len(runs) == 4 and all(r["device"].endswith("x 2") for r in runs)
    for run in runs:
        assert len(run["val_curve"]) == 2 and run["probe_epochs"] == (1 if run["arm"] == "lp_ft" else None)
    confirm = {r["arm"]: r for r in runs if r["phase"] == "confirm"}
    assert confirm["lp_ft"]["head_init"] == confirm["standard"]["head_init"]
    assert "published anchor" in (output / "report.md").read_text()

"""What a Trainer user sees with `PlasticityCallback` attached and nothing else changed: one console line for the
restore (or why it was skipped) under the default logging and progress bar, the same facts in the logged metrics,
the plasticity card section and `plasticity_config.json` in the output folder and in the pushed repository, and a
warning when several processes run without a process group."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard
from transformers import Trainer, TrainingArguments

from hf_plasticity import (
    AutoReinitConfig,
    LayerReinitConfig,
    PlasticityCallback,
    PlasticityConfig,
    PlasticityTrainer,
    prepare_pretrained,
)
from hf_plasticity.integrations.modelcard import SECTION_END, SECTION_START

from .hub_server import LocalHub, point_client_at
from .test_training import learnable_dataset


def default_args(tmp_path, **overrides) -> TrainingArguments:
    """The Trainer's defaults (logging, progress bar on), only made small and offline."""
    settings = dict(
        output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=16, use_cpu=True, report_to=[]
    )
    settings.update(overrides)
    return TrainingArguments(**settings)


def logged(trainer: Trainer, key: str) -> list[float]:
    return [log[key] for log in trainer.state.log_history if key in log]


def test_the_restore_is_one_line_on_the_console(make_model, tmp_path, capsys):
    model = make_model("convnext")
    trainer = PlasticityTrainer(model=model, args=default_args(tmp_path), train_dataset=learnable_dataset(64),
                      callbacks=[PlasticityCallback()])  # fmt: skip
    trainer.train()
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("hf-plasticity:")]
    assert len(lines) == 1, out
    record = model.config.plasticity
    assert f"reinit_layers re-initialized {record['total_reinitialized']:,} of" in lines[0]
    assert "convnext.encoder.stages.1.layers.1, convnext.layernorm" in lines[0] and "s:" in lines[0]  # what, how long
    assert logged(trainer, "plasticity/restore/reinitialized") == [record["total_reinitialized"]]


def test_a_skipped_restore_says_why(make_model, tmp_path, capsys):
    model = make_model("convnext")
    prepare_pretrained(model, LayerReinitConfig(num_blocks=1))
    trainer = PlasticityTrainer(model=model, args=default_args(tmp_path), train_dataset=learnable_dataset(64),
                      callbacks=[PlasticityCallback()])  # fmt: skip
    trainer.train()
    out = capsys.readouterr().out
    assert "hf-plasticity: no one-shot restore: the model was already restored (reinit_layers" in out
    assert logged(trainer, "plasticity/restore/skipped") == [1.0]
    assert not logged(trainer, "plasticity/restore/reinitialized")


def test_auto_choosing_nothing_is_recorded_and_does_not_block_a_later_restore(make_model, monkeypatch):
    from .models import batches

    model = make_model("resnet")
    monkeypatch.setattr("hf_plasticity.strategies.auto.blocks_past_the_peak", lambda acc, tol: (len(acc) - 1, 0))
    report = prepare_pretrained(model, AutoReinitConfig(calibration_batches=2), data=batches())
    assert report.total_reinitialized == 0 and "nothing to re-initialize" in report.one_line()
    record = model.config.plasticity
    assert record["strategy"] == "auto" and record["details"]["num_blocks"] == 0  # it looked, and chose nothing
    again = prepare_pretrained(model, LayerReinitConfig(num_blocks=1))  # no `force` needed
    assert again.total_reinitialized > 0 and model.config.plasticity["strategy"] == "reinit_layers"


def test_the_output_folder_and_the_pushed_repository_carry_the_plasticity_files(make_model, tmp_path, monkeypatch):
    with LocalHub() as hub:
        point_client_at(hub, monkeypatch, tmp_path / "hf-cache")
        model = make_model("convnext")
        args = default_args(
            tmp_path, push_to_hub=True, hub_model_id="user/restored-run", hub_token="hf_local_test_token",
            save_strategy="steps", save_steps=2,
        )  # fmt: skip
        trainer = PlasticityTrainer(model=model, args=args, train_dataset=learnable_dataset(64),
                          callbacks=[PlasticityCallback()])  # fmt: skip
        trainer.train()
        out = tmp_path / "out"
        checkpoint = out / "checkpoint-2"
        assert json.loads((checkpoint / "plasticity_config.json").read_text())["strategy"] == "reinit_layers"
        trainer.save_model()
        assert PlasticityConfig.from_pretrained(out).strategy == "reinit_layers"
        assert SECTION_START in (out / "README.md").read_text()
        trainer.push_to_hub()  # the Trainer rewrites README.md (create_model_card), then uploads
        files = hub.repos["user/restored-run"].head.files
        assert "plasticity_config.json" in files
        card = ModelCard(files["README.md"].decode())
        assert SECTION_START in card.text and card.text.rstrip().endswith(SECTION_END)
        assert "reinit_layers" in card.data.tags and "plasticity" in card.data.tags
        assert "generated_from_trainer" in card.data.tags  # the Trainer's own card text and tags stay


@pytest.mark.parametrize("hub_strategy", ["every_save", "checkpoint"])
def test_a_push_during_training_carries_the_plasticity_files(make_model, tmp_path, monkeypatch, hub_strategy):
    """`Trainer._push_from_checkpoint` copies only transformers' own files from the checkpoint into the output folder
    it uploads; the pushed repository still gets `plasticity_config.json` and the card section, before any final
    `save_model` or `push_to_hub`."""
    with LocalHub() as hub:
        point_client_at(hub, monkeypatch, tmp_path / "hf-cache")
        args = default_args(
            tmp_path, push_to_hub=True, hub_model_id="user/mid-run", hub_token="hf_local_test_token",
            save_strategy="steps", save_steps=2, hub_strategy=hub_strategy,
        )  # fmt: skip
        trainer = PlasticityTrainer(model=make_model("convnext"), args=args, train_dataset=learnable_dataset(64),
                                    callbacks=[PlasticityCallback()])  # fmt: skip
        trainer.train()
        if trainer.push_in_progress is not None:
            trainer.push_in_progress.wait_until_done()
        files = hub.repos["user/mid-run"].head.files
        assert json.loads(files["plasticity_config.json"])["strategy"] == "reinit_layers"
        assert json.loads(files["config.json"])["plasticity"]["strategy"] == "reinit_layers"
        card = ModelCard(files["README.md"].decode())
        assert SECTION_START in card.text and "reinit_layers" in card.data.tags


def test_processes_that_would_not_train_together_are_warned(make_model, tmp_path, monkeypatch):
    """`torchrun --nproc_per_node 2` on CPU without `use_cpu`: WORLD_SIZE is 2 but the Trainer is not distributed
    (tests/test_distributed.py launches two real processes)."""
    callback = PlasticityCallback()
    trainer = PlasticityTrainer(model=make_model("convnext"), args=default_args(tmp_path),
                                train_dataset=learnable_dataset(32), callbacks=[callback])  # fmt: skip
    assert trainer.args.world_size == 1
    monkeypatch.setenv("WORLD_SIZE", "2")  # what the launcher set in each process
    with pytest.warns(UserWarning, match="does not train them together.*each of the 2 processes trains its own"):
        callback.on_init_end(trainer.args, trainer.state, trainer.control, model=trainer.model)

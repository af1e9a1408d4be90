"""Saving, pushing and loading restored checkpoints, and their model card, against a local Hub-compatible server
driven by the real huggingface_hub client (see tests/hub_server.py)."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
import transformers.utils.hub
import yaml
from huggingface_hub import ModelCard, ModelCardData, constants, hf_api
from transformers import AutoModelForImageClassification, ViTImageProcessor

from hf_plasticity import (
    FineTuneRecipe,
    PlasticityConfig,
    PlasticityController,
    ReDoConfig,
    SelectiveReinitConfig,
    ShrinkPerturbConfig,
    prepare_pretrained,
    restore_record,
)
from hf_plasticity.core.record import MODEL_CONFIG_KEY, RECORD_ATTR, record_recipe
from hf_plasticity.integrations.hub import HubPushError, apply_card_section, push_restored, save_restored
from hf_plasticity.integrations.modelcard import SECTION_END, SECTION_START, TEMPLATE_PATH

from .hub_server import LocalHub, point_client_at
from .models import IMAGE_SIZE, batches

ROOT = Path(__file__).resolve().parents[1]
BASE = "google/vit-base-patch16-224"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with LocalHub() as server:
        point_client_at(server, monkeypatch, tmp_path / "hf-cache")
        yield server


@pytest.fixture
def restored(make_model):
    """A tiny ViT restored with the default strategy, and its report."""
    model = make_model("vit")
    report = prepare_pretrained(model, "reinit_layers")
    return model.eval(), report


def logits(model, seed: int = 0) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(batches(1, 4, seed)[0]["pixel_values"]).logits


def folder_state(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def remote_text(hub: LocalHub, repo_id: str, filename: str = "README.md") -> str:
    return hub.repos[repo_id].head.files[filename].decode()


# ------------------------------------------------------------------------------------------------- round trip
def test_push_then_load_gives_identical_logits(hub, restored, tmp_path):
    model, report = restored
    info = push_restored(model, "user/vit-restored", report=report, base_model=BASE, save_directory=tmp_path / "out")
    assert info.oid == hub.repos["user/vit-restored"].head.oid
    assert set(hub.repos["user/vit-restored"].head.files) >= {
        "README.md",
        "config.json",
        "model.safetensors",
        "plasticity_config.json",
    }
    loaded = AutoModelForImageClassification.from_pretrained("user/vit-restored")
    assert torch.equal(logits(loaded), logits(model))
    config = PlasticityConfig.from_pretrained("user/vit-restored")
    assert (
        config.strategy == "reinit_layers" and config.to_dict() == PlasticityConfig.from_dict(report.config).to_dict()
    )
    assert loaded.config.plasticity["total_reinitialized"] == report.total_reinitialized


def test_temporary_folder_is_removed_after_a_successful_push(hub, restored, monkeypatch, tmp_path):
    model, report = restored
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    push_restored(model, "user/vit-tmp", report=report)
    assert not list(tmp_path.glob("hf-plasticity-*"))
    assert "model.safetensors" in hub.repos["user/vit-tmp"].head.files


def test_pushing_again_updates_the_repository(hub, make_model, restored):
    model, report = restored
    first = push_restored(model, "user/vit-restored", report=report, base_model=BASE)
    second_model = make_model("vit")
    second_report = prepare_pretrained(second_model, SelectiveReinitConfig(utility="magnitude", fraction=0.2, seed=3))
    second = push_restored(second_model, "user/vit-restored", report=second_report, base_model=BASE)
    repo = hub.repos["user/vit-restored"]
    assert second.oid != first.oid and repo.head.oid == second.oid and len(repo.commits) == 3  # init + 2 pushes
    loaded = AutoModelForImageClassification.from_pretrained("user/vit-restored")
    assert torch.equal(logits(loaded), logits(second_model))
    assert not torch.equal(logits(loaded), logits(model))
    assert PlasticityConfig.from_pretrained("user/vit-restored").strategy == "selective"
    card = ModelCard(remote_text(hub, "user/vit-restored"))
    assert "selective" in card.data.tags and "reinit_layers" not in card.data.tags
    assert card.text.count(SECTION_START) == 1


def test_private_repository_is_requested_as_private(hub, restored):
    model, report = restored
    push_restored(model, "user/secret", report=report, private=True)
    push_restored(model, "user/public", report=report)
    assert hub.repos["user/secret"].private is True
    assert hub.repos["user/public"].private is False
    created = [body for method, path, body in hub.requests if path == "/api/repos/create"]
    assert created[0]["name"] == "secret" and created[0]["organization"] == "user"


# ------------------------------------------------------------------------------------------------------- errors
def test_server_error_is_clear_and_keeps_the_local_folder(hub, restored, tmp_path):
    model, report = restored
    hub.fail_with = 500
    out = tmp_path / "out"
    with pytest.raises(HubPushError, match=r"user/vit-restored.*500.*kept in") as error:
        push_restored(model, "user/vit-restored", report=report, save_directory=out)
    assert str(out) in str(error.value) and "\n" not in str(error.value)
    assert {"README.md", "config.json", "model.safetensors", "plasticity_config.json"} <= set(folder_state(out))
    assert torch.equal(logits(AutoModelForImageClassification.from_pretrained(out)), logits(model))


LIBRARY_FILES = {"README.md", "config.json", "model.safetensors", "plasticity_config.json"}


def test_push_uploads_only_the_files_the_save_wrote(hub, restored, tmp_path):
    """Old code: every file of `save_directory`, dotfiles included, reached the Hub (a `.env` with a token)."""
    model, report = restored
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    (out / ".env").write_text("HF_TOKEN=hf_leakedleakedleaked\n")
    (out / "notes.txt").write_text("private notes")
    (out / "runs" / "log.txt").write_text("a log")
    (out / "pytorch_model.bin").write_bytes(b"an older checkpoint's weights")
    push_restored(model, "user/only-mine", report=report, save_directory=out)
    assert set(hub.repos["user/only-mine"].head.files) == LIBRARY_FILES
    assert (out / ".env").is_file() and (out / "notes.txt").is_file() and (out / "runs" / "log.txt").is_file()


def test_a_card_that_cannot_be_read_fails_the_push_and_keeps_the_remote_card(hub, restored, tmp_path):
    """Old code: an HTTP 500 on README.md was taken as "no card" and the user's card and license were replaced."""
    model, report = restored
    push_restored(model, "user/carded", report=report)
    card = ModelCard(remote_text(hub, "user/carded"))
    card.data.license = "mit"
    card.text = "\n# My own words\n" + card.text
    hub.commit("user/carded", "edit card", {"README.md": str(card).encode()}, [])
    head = hub.repos["user/carded"].head.oid
    hub.fail_on = {"/resolve/main/README.md": 500}
    out = tmp_path / "out"
    with pytest.raises(HubPushError, match=r"user/carded.*500.*kept in"):
        push_restored(model, "user/carded", report=report, save_directory=out)
    assert hub.repos["user/carded"].head.oid == head  # nothing committed: the card is the user's
    assert LIBRARY_FILES <= set(folder_state(out))
    assert torch.equal(logits(AutoModelForImageClassification.from_pretrained(out)), logits(model))
    hub.fail_on = {}
    push_restored(model, "user/carded", report=report)  # once readable, the push keeps the user's card
    final = ModelCard(remote_text(hub, "user/carded"))
    assert final.data.license == "mit" and "# My own words" in final.text


def test_apply_card_section_fails_when_the_card_cannot_be_read(hub, restored):
    """Old code: an HTTP 500 on README.md was taken as "no card", and a fresh card replaced the repository's."""
    model, report = restored
    push_restored(model, "user/carded", report=report)
    hub.commit("user/carded", "edit card", {"README.md": b"---\nlicense: mit\n---\n# My own words\n"}, [])
    head = hub.repos["user/carded"].head.oid
    hub.fail_on = {"/resolve/main/README.md": 500}
    with pytest.raises(HubPushError, match=r"update the card of 'user/carded'.*500"):
        apply_card_section("user/carded", report, model=model)
    assert hub.repos["user/carded"].head.oid == head


def test_a_push_to_a_server_that_drips_one_byte_a_second_ends_by_its_deadline(hub, restored, tmp_path):
    """Old code: `timeout` bounds only the time without progress, so `push_restored(timeout=3)` never returned."""
    model, report = restored
    hub.drip = 0.5  # every response, status line included, one byte per half second
    start = time.monotonic()
    with pytest.raises(HubPushError, match=r"deadline of 3 seconds.*kept in"):
        push_restored(model, "user/slow", report=report, save_directory=tmp_path / "out", timeout=2, deadline=3)
    assert time.monotonic() - start < 3 + 10  # the local save, then at most the deadline
    assert LIBRARY_FILES <= set(folder_state(tmp_path / "out"))
    with pytest.raises(ValueError, match="deadline"):
        push_restored(model, "user/slow", report=report, deadline=0)


def test_no_credential_in_any_log_record_of_a_push(restored, monkeypatch, tmp_path, caplog):
    """Old code: a token in `HF_ENDPOINT` as URL credentials appeared in the HTTP client's INFO log."""
    model, report = restored
    password, token = "url-password-1234", "my-token-5678"
    with LocalHub() as server:
        point_client_at(server, monkeypatch, tmp_path / "hf-cache", url=server.url_with_credentials("me", password))
        names = ["", *logging.root.manager.loggerDict]
        for name in names:
            caplog.set_level(logging.DEBUG, logger=name)
            if name and not logging.getLogger(name).propagate:
                monkeypatch.setattr(logging.getLogger(name), "handlers", [*logging.getLogger(name).handlers])
                logging.getLogger(name).addHandler(caplog.handler)
        push_restored(model, "user/logged", report=report, token=token)
        server.fail_with = 500
        with pytest.raises(HubPushError) as error:
            push_restored(model, "user/logged", report=report, token=token)
    messages = [record.getMessage() for record in caplog.records]
    assert any("127.0.0.1" in message for message in messages)  # the HTTP client did log its requests
    assert not [m for m in messages if password in m or token in m or "hf_local_test_token" in m]
    assert password not in str(error.value) and token not in str(error.value)


def test_no_server_is_clear_and_keeps_the_temporary_folder(restored, monkeypatch, tmp_path):
    model, report = restored
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_api.api, "endpoint", url)
    monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with pytest.raises(HubPushError, match=r"Could not push to 'user/vit-restored' on http://127\.0\.0\.1") as error:
        push_restored(model, "user/vit-restored", report=report)
    kept = list(tmp_path.glob("hf-plasticity-*"))
    assert len(kept) == 1 and str(kept[0]) in str(error.value)
    assert (kept[0] / "model.safetensors").is_file() and (kept[0] / "README.md").is_file()


def test_save_refuses_a_model_that_was_not_restored(make_model, tmp_path):
    with pytest.raises(ValueError, match="no plasticity record"):
        save_restored(make_model("vit"), tmp_path / "out")
    with pytest.raises(TypeError, match="save_pretrained"):
        save_restored(make_model("cnn"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_failed_push_leaves_every_byte_of_the_local_folder_and_a_push_carries_its_notes(hub, restored, tmp_path):
    """Old code: the push wrote the repository's card over the folder's README.md before its commit, so a failed
    push destroyed the user's notes, and a successful one never pushed them."""
    model, report = restored
    push_restored(model, "user/noted", report=report)
    remote = ModelCard(remote_text(hub, "user/noted"))
    remote.text = "\n# Edited on the Hub\n" + remote.text
    hub.commit("user/noted", "edit card", {"README.md": str(remote).encode()}, [])
    out = save_restored(model, tmp_path / "out", report=report)
    card = (out / "README.md").read_text()
    (out / "README.md").write_text(card.replace(SECTION_START, "My local notes.\n\n" + SECTION_START))
    save_restored(model, out, report=report, repo_id="user/noted")  # what the push's own save writes
    before = folder_state(out)
    hub.fail_on = {"/commit/": 500}
    with pytest.raises(HubPushError, match="500"):
        push_restored(model, "user/noted", report=report, save_directory=out)
    assert folder_state(out) == before
    hub.fail_on = {}
    push_restored(model, "user/noted", report=report, save_directory=out)
    assert folder_state(out) == before
    pushed = ModelCard(remote_text(hub, "user/noted"))
    assert "My local notes." in pushed.text and "# Edited on the Hub" in pushed.text
    assert pushed.text.index("My local notes.") < pushed.text.index(SECTION_START)
    assert "# out" not in pushed.text and pushed.text.count(SECTION_START) == 1  # the local title is the library's


def test_a_save_removes_the_files_of_an_earlier_save_it_does_not_rewrite_here_and_on_the_hub(
    hub, make_model, tmp_path
):
    """Old code: a save without a restore (a recipe only) left the earlier plasticity_config.json, locally and on
    the Hub, contradicting config.json."""
    out = tmp_path / "out"
    first = make_model("vit")
    prepare_pretrained(first)
    push_restored(first, "user/stale", save_directory=out)
    second = make_model("vit")
    record_recipe(second, FineTuneRecipe(backbone_lr=3e-3, head_lr=1e-3))
    push_restored(second, "user/stale", save_directory=out)
    assert not (out / "plasticity_config.json").exists()
    assert set(hub.repos["user/stale"].head.files) == {"README.md", "config.json", "model.safetensors"}
    tags = ModelCard(remote_text(hub, "user/stale")).data.tags
    assert "reinit_layers" not in tags and "fine-tuning-recipe" in tags


def test_save_refuses_a_report_of_an_earlier_restore(make_model, tmp_path):
    """Old code: the earlier report was taken; config.json said shrink_perturb, plasticity_config.json and the card
    reinit_layers."""
    model = make_model("vit")
    first = prepare_pretrained(model)
    second = prepare_pretrained(model, ShrinkPerturbConfig(), force=True)
    with pytest.raises(ValueError, match=r"earlier restore.*reinit_layers.*shrink_perturb.*latest"):
        save_restored(model, tmp_path / "out", report=first)
    assert not (tmp_path / "out").exists()
    folder = save_restored(model, tmp_path / "out", report=second)
    assert PlasticityConfig.from_pretrained(folder).strategy == "shrink_perturb"
    assert "shrink_perturb" in ModelCard.load(folder / "README.md").data.tags


def test_a_card_loses_the_recipe_tag_when_the_new_record_has_no_recipe(make_model, tmp_path):
    """Old code: `fine-tuning-recipe` stayed in the tags of a card whose new record holds no recipe."""
    with_recipe = make_model("vit")
    record_recipe(with_recipe, FineTuneRecipe(backbone_lr=3e-3, head_lr=1e-3))
    folder = save_restored(with_recipe, tmp_path / "out")
    assert "fine-tuning-recipe" in ModelCard.load(folder / "README.md").data.tags
    restored_only = make_model("vit")
    prepare_pretrained(restored_only)
    save_restored(restored_only, folder)
    assert "fine-tuning-recipe" not in ModelCard.load(folder / "README.md").data.tags


@pytest.mark.parametrize("restore", [None, False])
def test_the_save_of_a_model_with_periodic_resets_says_what_they_did(make_model, tmp_path, restore):
    """Old code: the periodic resets of a plain loop's controller left no record: with ``restore=False``,
    save_restored refused the model ("no plasticity record"); after a one-shot restore, the card and config.json
    described the restore alone."""
    model = make_model("convnext")
    data = batches(1, 4)
    controller = PlasticityController(ReDoConfig(tau=0.5, every_n_steps=1), data=data, restore=restore)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    controller.restore(model, optimizer=optimizer)
    controller.attach(model)
    for step in (1, 2):
        model(**data[0]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        controller.step(step, optimizer=optimizer)
    controller.detach()
    assert controller.total_resets == 2 and controller.total_reinitialized > 0
    folder = save_restored(model, tmp_path / "out")
    record = restore_record(type(model).from_pretrained(folder))
    assert [(e.strategy, e.resets, e.total_reinitialized) for e in record.periodic] == [
        ("redo", 2, controller.total_reinitialized)
    ]
    card = ModelCard.load(folder / "README.md")
    row = f"| `redo` | 2 | {controller.total_reinitialized:,} | "
    assert "### Periodic re-initialization during training" in card.text and row in card.text
    assert "redo" in card.data.tags
    if restore is None:  # the one-shot restore is recorded as before, the periodic resets beside it
        assert record.strategy == "redo" and record.total_reinitialized > 0
        assert "## Plasticity restore (hf-plasticity)" in card.text
        assert PlasticityConfig.from_pretrained(folder).strategy == "redo"
    else:
        assert record.strategy == "none" and "## Periodic re-initialization (hf-plasticity)" in card.text
        assert "recipe" not in card.text and not (folder / "plasticity_config.json").exists()
        with pytest.raises(ValueError, match=r"holds periodic resets but no one-shot restore.*configs of redo"):
            PlasticityConfig.from_pretrained(folder)


def test_a_save_that_fails_at_its_commit_leaves_the_model_config_as_it_was(make_model, tmp_path, monkeypatch):
    """Old code: a failure after the staging folder was written (its commit) left the report's record in
    `model.config.plasticity`."""
    import hf_plasticity.integrations.atomic_save as atomic_save

    model = make_model("vit")
    report = prepare_pretrained(model)
    delattr(model.config, MODEL_CONFIG_KEY)  # a model without its record: the save records the report's
    delattr(model, RECORD_ATTR)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic_save, "_commit_swap", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_restored(model, tmp_path / "out", report=report)
    assert not hasattr(model.config, MODEL_CONFIG_KEY)


# --------------------------------------------------------------------------------------------------------- card
def test_card_metadata_and_content(hub, restored):
    model, report = restored
    report.diagnostics = {
        "before": {"dormant_ratio": 0.25, "gradient_norm": {"overall": 0.01}},
        "after": {"dormant_ratio": 0.05, "gradient_norm": {"overall": 0.2}},
    }
    push_restored(model, "user/vit-card", report=report, base_model=BASE)
    text = remote_text(hub, "user/vit-card")
    metadata = yaml.safe_load(text.split("---")[1])
    assert metadata == {
        "base_model": BASE,
        "library_name": "hf-plasticity",
        "pipeline_tag": "image-classification",
        "tags": ["plasticity", "reinit_layers", "hf-plasticity"],
    }
    ModelCardData(**metadata)  # valid card metadata
    card = ModelCard.load("user/vit-card")
    assert card.data.base_model == BASE and card.data.library_name == "hf-plasticity"
    body = card.text
    assert "strategy **`reinit_layers`**" in body and "| `num_blocks` | `1` |" in body
    assert f"| 2 | `vit.encoder.layer.2` | {report.by_block()['vit.encoder.layer.2']:,} | 100.00% |" in body
    assert "| `dormant_ratio` | 0.25 | 0.05 |" in body and "| `gradient_norm.overall` | 0.01 | 0.2 |" in body
    assert "Trainer(" in body and 'from_pretrained(\n    "user/vit-card"' in body
    assert "2603.20860" in body and body.count(SECTION_START) == 1 and body.count(SECTION_END) == 1


def test_card_shows_measured_diagnostics(make_model, tmp_path):
    model = make_model("vit")
    report = prepare_pretrained(model, "reinit_layers", data=batches(2, 4))  # diagnostics before/after on the data
    assert {"before", "after"} <= set(report.diagnostics)
    text = (save_restored(model, tmp_path / "out", report=report) / "README.md").read_text()
    after = report.diagnostics["after"].mean_abs_weight
    assert "### Diagnostics before and after the restore" in text
    assert f"| `mean_abs_weight` | {report.diagnostics['before'].mean_abs_weight:.4g} | {after:.4g} |" in text
    assert "| `effective_rank` |" in text and "| `dormant_ratio` |" in text


def test_card_without_diagnostics_or_hub_base_model(restored, tmp_path):
    model, report = restored
    folder = save_restored(model, tmp_path / "out", report=report)  # _name_or_path is a local folder
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model is None and "Diagnostics" not in card.text
    assert card.text.startswith("\n# out\n")


def test_card_snippet_runs(restored, tmp_path, monkeypatch):
    from PIL import Image

    model, report = restored
    processor = ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    folder = save_restored(model, tmp_path / "ckpt", report=report, image_processor=processor)
    for label in ("cats", "dogs"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (40, 40), (60 * i, 90, 120)).save(tmp_path / "images" / label / f"{i}.png")
    snippet = ModelCard.load(folder / "README.md").text.split("```python\n")[1].split("```")[0]
    assert snippet.rstrip().endswith("trainer.train()")
    snippet = snippet.replace("path/to/this/checkpoint", str(folder))
    snippet = snippet.replace("path/to/your/images", str(tmp_path / "images"))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(snippet.rstrip().removesuffix("trainer.train()"), namespace)
    trainer = namespace["trainer"]
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, 3, IMAGE_SIZE, IMAGE_SIZE) and batch["labels"].tolist() == [0, 0, 1, 1]
    assert torch.isfinite(trainer.model(**batch).loss)


def test_card_update_keeps_user_text(hub, restored, tmp_path):
    model, report = restored
    folder = save_restored(model, tmp_path / "out", report=report, base_model=BASE)
    card = ModelCard.load(folder / "README.md")
    card.data.license = "mit"
    card.data.tags = [*card.data.tags, "my-tag"]
    card.text = "\n# My model\n\nMy intro.\n" + card.text.split("\n\n", 2)[2] + "\n## My results\n\n97%\n"
    card.save(folder / "README.md")
    save_restored(model, folder, report=report)
    updated = ModelCard.load(folder / "README.md")
    assert updated.data.license == "mit" and "my-tag" in updated.data.tags and updated.data.base_model == BASE
    assert "My intro." in updated.text and "## My results\n\n97%" in updated.text
    assert updated.text.count(SECTION_START) == 1 and "strategy **`reinit_layers`**" in updated.text
    # Applying the section again changes nothing: the update is idempotent.
    before = (folder / "README.md").read_text()
    apply_card_section(folder, report, model=model)
    assert (folder / "README.md").read_text() == before
    # The same holds for a card edited on the Hub: a new push keeps the remote text.
    push_restored(model, "user/edited", report=report, base_model=BASE)
    remote = ModelCard(remote_text(hub, "user/edited"))
    remote.text = "\n# Edited on the Hub\n" + remote.text
    hub.commit("user/edited", "edit card", {"README.md": str(remote).encode()}, [])
    push_restored(model, "user/edited", report=report)
    final = ModelCard(remote_text(hub, "user/edited"))
    assert "# Edited on the Hub" in final.text and final.text.count(SECTION_START) == 1


def test_trainer_push_then_apply_card_section(hub, restored, tmp_path):
    from transformers import Trainer, TrainingArguments

    model, report = restored
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=1,
        per_device_train_batch_size=4,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        push_to_hub=True,
        hub_model_id="user/trained",
        hub_token="hf_local_test_token",
    )
    rows = [{"pixel_values": b["pixel_values"][i], "labels": b["labels"][i]} for b in batches(1, 4) for i in range(4)]
    trainer = Trainer(model=model, args=args, train_dataset=rows)
    trainer.train()
    trainer.push_to_hub()
    assert SECTION_START not in remote_text(hub, "user/trained")  # Trainer's create_model_card replaced the card
    trainer_card = ModelCard(remote_text(hub, "user/trained"))

    apply_card_section(tmp_path / "run", report, model=model)  # the local folder
    apply_card_section("user/trained")  # the repository; the record comes from its config.json
    for text in ((tmp_path / "run" / "README.md").read_text(), remote_text(hub, "user/trained")):
        card = ModelCard(text)
        assert trainer_card.text.strip() in card.text  # Trainer's text stays ...
        assert card.text.rstrip().endswith(SECTION_END)  # ... and the card ends with the library's section
        assert card.data.library_name == trainer_card.data.library_name  # Trainer's metadata stays
        assert {"plasticity", "reinit_layers"} <= set(card.data.tags)


# ------------------------------------------------------------------------------------------------ packaging
def test_model_cards_template_is_the_shipped_one():
    assert (ROOT / "model_cards" / "modelcard_template.md").read_text() == TEMPLATE_PATH.read_text()
    assert "2603.20860" in (ROOT / "model_cards" / "CATALOGUE.md").read_text()


def test_wheel_ships_the_template_and_no_benchmark_code(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(ROOT / "hf_plasticity", source / "hf_plasticity", ignore=shutil.ignore_patterns("__pycache__"))
    command = [sys.executable, "-c", "from setuptools import build_meta; build_meta.build_wheel('dist')"]
    done = subprocess.run(command, cwd=source, check=True, capture_output=True, text=True, timeout=120)
    assert "deprecat" not in (done.stdout + done.stderr).lower()  # e.g. no license-classifier warnings
    (wheel,) = (source / "dist").glob("hf_plasticity-*.whl")
    archive = zipfile.ZipFile(wheel)
    names = archive.namelist()
    assert "hf_plasticity/integrations/templates/modelcard_template.md" in names
    assert "hf_plasticity/integrations/modelcard.py" in names
    # The research benchmark lives in benchmarks/ at the repository root: the wheel holds none of it.
    assert not [name for name in names if "bench" in name.lower() or name.startswith("benchmarks/")]
    metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata


def test_every_runtime_dependency_is_imported_by_the_package():
    import re

    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    modules = {"huggingface_hub": "huggingface_hub", "jinja2": "huggingface_hub"}  # Jinja2: ModelCard templates
    source = "\n".join(p.read_text() for p in (ROOT / "hf_plasticity").rglob("*.py"))
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0].lower().replace("-", "_")
        module = modules.get(name, name)
        assert re.search(rf"^\s*(import|from) {module}\b", source, flags=re.M), f"{requirement} is not imported"

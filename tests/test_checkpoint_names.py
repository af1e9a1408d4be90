"""What users read names the weights as the checkpoint does (``vit.encoder.layer.2``), not as transformers 5 keeps them
in memory (``vit.layers.2``): pinned against the keys `save_pretrained` really writes, so a transformers release that
changes its conversion fails here."""

from __future__ import annotations

import pytest
from safetensors import safe_open

from hf_plasticity import LayerReinitConfig, prepare_pretrained
from hf_plasticity.core.checkpoint_names import checkpoint_names

from .models import ARCHS


@pytest.mark.parametrize("arch", ARCHS[:-1])  # the transformers models
def test_the_names_are_the_keys_save_pretrained_writes(make_model, tmp_path, arch):
    model = make_model(arch)
    model.save_pretrained(tmp_path / "saved")
    with safe_open(str(tmp_path / "saved" / "model.safetensors"), framework="pt") as file:
        written = set(file.keys())
    names = checkpoint_names(model)
    assert set(names.values()) == written
    if arch == "vit":  # renamed in memory: the mapping is not the identity
        assert names["vit.layers.2.mlp.fc1.weight"] == "vit.encoder.layer.2.intermediate.dense.weight"


def test_the_console_line_the_report_and_the_card_name_checkpoint_weights(make_model, tmp_path):
    from hf_plasticity.integrations.modelcard import build_model_card

    model = make_model("vit")
    report = prepare_pretrained(model, LayerReinitConfig(num_blocks=1))
    assert "vit.encoder.layer.2, vit.layernorm" in report.one_line() and "vit.layers" not in report.one_line()
    assert set(report.by_block()) == {"vit.encoder.layer.2", "vit.layernorm"}
    card = build_model_card(report, model=model).text
    assert "`vit.encoder.layer.2`" in card and "vit.layers." not in card
    assert report.redrawn["whole"] == ["vit.layers.2", "vit.layernorm"]  # targeting keeps the in-memory names

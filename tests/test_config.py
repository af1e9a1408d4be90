"""Configs: validation, help texts, sorted JSON with the version stamped in, tolerant loading of saved configs and
strict reading of config dicts given by hand."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hf_plasticity import (
    LayerReinitConfig,
    PlasticityCallback,
    PlasticityConfig,
    PlasticityController,
    SelectiveReinitConfig,
    __version__,
    available_strategies,
    get_config_class,
    prepare_pretrained,
    restore_record,
)


@pytest.mark.parametrize("config", [SelectiveReinitConfig(fraction=0.05, seed=3), LayerReinitConfig(num_blocks=2)])
def test_json_round_trip(config, tmp_path):
    path = config.save_pretrained(tmp_path)
    text = open(path).read()
    data = json.loads(text)
    assert list(data) == sorted(data)
    assert data["hf_plasticity_version"] == __version__
    assert data["strategy"] == config.strategy
    assert PlasticityConfig.from_pretrained(tmp_path) == config
    assert type(config).from_dict(config.to_dict()) == config


def test_unknown_keys_are_ignored_with_a_warning(caplog):
    data = SelectiveReinitConfig().to_dict() | {"from_the_future": 1}
    with caplog.at_level("WARNING"):
        config = PlasticityConfig.from_dict(data)
    assert config == SelectiveReinitConfig()
    assert "from_the_future" in caplog.text


def test_every_field_has_help():
    for name in available_strategies():
        for field in dataclasses.fields(get_config_class(name)):
            assert field.metadata.get("help"), f"{name}.{field.name} has no help text"


def test_loading_a_config_of_another_strategy_is_refused():
    with pytest.raises(ValueError, match="cannot load a config of strategy 'selective'"):
        LayerReinitConfig.from_dict(SelectiveReinitConfig().to_dict())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_blocks": 0}, "`num_blocks` must be a positive integer"),
        ({"last_k_blocks": 0}, "`last_k_blocks` must be a positive integer"),
        ({"target_modules": "fc1"}, "`target_modules` must be a list"),
        ({"seed": 1.5}, "`seed` must be an integer"),
    ],
)
def test_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LayerReinitConfig(**kwargs)


def test_requires_data_follows_the_utility():
    assert SelectiveReinitConfig(utility="grad").requires_data
    assert not SelectiveReinitConfig(utility="magnitude").requires_data
    assert not LayerReinitConfig().requires_data


def test_an_unknown_key_in_a_config_dict_is_refused_before_anything_changes(make_model):
    model = make_model("vit")
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(ValueError) as error:
        prepare_pretrained(model, {"strategy": "shrink_perturb", "shrnk": 0.95, "perturb": 0.0})
    message = str(error.value)
    assert "'shrnk' (did you mean 'shrink'?)" in message
    assert "strategy 'shrink_perturb'" in message and "'perturb'" in message and "'every_parameter'" in message
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    assert restore_record(model) is None


@pytest.mark.parametrize("entry_point", [PlasticityController, PlasticityCallback])
def test_the_controller_and_the_callback_refuse_an_unknown_key(entry_point):
    with pytest.raises(ValueError, match=r"Unknown key 'num_block' \(did you mean 'num_blocks'\?\)"):
        entry_point({"strategy": "reinit_layers", "num_block": 2})


def test_a_saved_config_in_a_checkpoints_callback_state_still_loads_tolerantly(caplog):
    args = PlasticityCallback(LayerReinitConfig(num_blocks=2)).state()["args"]
    args["config"] = args["config"] | {"hf_plasticity_version": "9.0.0", "from_the_future": 1}
    with caplog.at_level("WARNING"):
        callback = PlasticityCallback(**args)  # how the Trainer rebuilds the callback on a resume
    assert callback.controller.config == LayerReinitConfig(num_blocks=2)
    assert "from_the_future" in caplog.text


@settings(max_examples=50, deadline=None)
@given(strategy=st.sampled_from(available_strategies()), key=st.text(min_size=1, max_size=12), data=st.data())
def test_every_key_a_config_dict_may_not_hold_is_named(strategy, key, data):
    accepted = {f.name for f in dataclasses.fields(get_config_class(strategy)) if f.init}
    assume(key not in accepted | {"strategy", "hf_plasticity_version"})
    value = data.draw(st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=4)))
    with pytest.raises(ValueError) as error:
        PlasticityController({"strategy": strategy, key: value})
    assert repr(key) in str(error.value) and f"strategy {strategy!r}" in str(error.value)

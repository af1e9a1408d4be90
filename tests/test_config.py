"""Configs: validation, help texts, sorted JSON with the version stamped in, tolerant loading."""

from __future__ import annotations

import dataclasses
import json

import pytest

from hf_plasticity import (
    LayerReinitConfig,
    PlasticityConfig,
    SelectiveReinitConfig,
    __version__,
    available_strategies,
    get_config_class,
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

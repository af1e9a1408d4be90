"""One strategy registry: a name is registered once, can be replaced on purpose, and can be removed."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hf_plasticity import (
    Plan,
    PlasticityConfig,
    Strategy,
    StrategyRegistryError,
    available_strategies,
    get_config_class,
    prepare_pretrained,
    register_strategy,
    unregister_strategy,
)

from .models import build


@dataclass
class FirstConfig(PlasticityConfig):
    strategy = "registry_test"


@dataclass
class SecondConfig(PlasticityConfig):
    strategy = "registry_test"


class Nothing(Strategy):
    def plan(self, model, *, data=None):
        return Plan(details={"which": type(self.config).__name__})


@pytest.fixture
def registered():
    register_strategy(FirstConfig, Nothing)
    yield
    if "registry_test" in available_strategies():
        unregister_strategy("registry_test")


def test_a_name_is_registered_once(registered):
    register_strategy(FirstConfig, Nothing)  # the same classes again: nothing changes
    with pytest.raises(StrategyRegistryError, match="'registry_test' is already registered"):
        register_strategy(SecondConfig, Nothing)
    assert get_config_class("registry_test") is FirstConfig
    register_strategy(SecondConfig, Nothing, replace=True)
    assert get_config_class("registry_test") is SecondConfig
    report = prepare_pretrained(build("vit"), "registry_test")
    assert report.details == {"which": "SecondConfig"}


def test_unregister_removes_the_name_everywhere(registered):
    unregister_strategy("registry_test")
    assert "registry_test" not in available_strategies()
    with pytest.raises(ValueError, match="Unknown strategy 'registry_test'"):
        get_config_class("registry_test")
    with pytest.raises(ValueError, match="Unknown strategy 'registry_test'"):
        PlasticityConfig.from_dict({"strategy": "registry_test"})
    with pytest.raises(StrategyRegistryError, match="No strategy named 'registry_test'"):
        unregister_strategy("registry_test")


def test_registration_checks_its_arguments():
    with pytest.raises(TypeError, match="must subclass hf_plasticity.Strategy"):
        register_strategy(FirstConfig, object)
    with pytest.raises(TypeError, match="must subclass hf_plasticity.PlasticityConfig"):
        register_strategy(dict, Nothing)

    @dataclass
    class Nameless(PlasticityConfig):
        pass

    with pytest.raises(StrategyRegistryError, match="non-empty class attribute `strategy`"):
        register_strategy(Nameless, Nothing)
    assert "registry_test" not in available_strategies()


def test_the_built_in_strategies_are_registered():
    built_in = {"auto", "cbp", "dash", "redo", "reinit_layers", "rifle", "selective", "shrink_perturb"}
    assert built_in <= set(available_strategies())

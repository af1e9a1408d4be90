"""The one registry of strategies: a name maps to its config class and its strategy class.

Configs are looked up here when a saved config is read back (`PlasticityConfig.from_dict`), strategies when a config is
run. Registering a taken name is refused unless ``replace=True``; `unregister` removes a name. The typed front door is
[`hf_plasticity.register_strategy`], which checks the classes before they get here.
"""

from __future__ import annotations

from typing import Any

# The registry knows nothing of the config and strategy types (config.py looks names up here, so importing config
# from here would close an import circle): the typed checks are `register_strategy`'s.
_REGISTRY: dict[str, tuple[type[Any], type[Any]]] = {}


class StrategyRegistryError(ValueError):
    """A strategy name is registered twice, or a name is not registered."""


def register(name: str, config_class: type[Any], strategy_class: type[Any], *, replace: bool = False) -> None:
    """Registers ``config_class`` and ``strategy_class`` under ``name``.

    Raises:
        StrategyRegistryError: when ``name`` is empty, or already registered to other classes and ``replace`` is
            False.
    """
    if not isinstance(name, str) or not name:
        raise StrategyRegistryError(f"{config_class.__name__} must set a non-empty class attribute `strategy`.")
    current = _REGISTRY.get(name)
    if current is not None and current != (config_class, strategy_class) and not replace:
        raise StrategyRegistryError(
            f"A strategy named {name!r} is already registered ({current[0].__name__}, {current[1].__name__}); "
            "choose another name, or pass `replace=True` to replace it."
        )
    _REGISTRY[name] = (config_class, strategy_class)


def unregister(name: str) -> None:
    """Removes the strategy registered under ``name``.

    Raises:
        StrategyRegistryError: when no strategy of that name is registered.
    """
    if name not in _REGISTRY:
        raise StrategyRegistryError(f"No strategy named {name!r} is registered. Registered: {', '.join(names())}.")
    del _REGISTRY[name]


def names() -> list[str]:
    """Every registered strategy name, sorted."""
    return sorted(_REGISTRY)


def lookup(name: str) -> tuple[type[Any], type[Any]]:
    """The ``(config_class, strategy_class)`` registered under ``name``.

    Raises:
        StrategyRegistryError: when no strategy of that name is registered; the message lists the accepted names.
    """
    if name not in _REGISTRY:
        raise StrategyRegistryError(f"Unknown strategy {name!r}. Accepted strategies: {', '.join(names())}.")
    return _REGISTRY[name]

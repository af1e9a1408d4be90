"""`--param KEY=VALUE`: strategy parameters read and described from the fields of the strategy's config dataclass.

Each field's type hint says how a value is read (``true``/``false`` for a flag, an integer, a number, ``none`` where
None is allowed, ``a,b`` or JSON for a list, JSON for a pattern holding a comma) and its ``metadata["help"]``
describes it in ``hf-plasticity prepare --strategy NAME --help``. A value of the wrong type is refused with the key
and the type it takes; a value the config refuses with the key and the config's reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import textwrap
import types
import typing
from typing import Any

from ._common import CommandError, one_line

NONE_WORDS = ("none", "null")


def parameter_fields(config_class: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    """The parameters ``--param`` sets on ``config_class``: ``{name: (field, type hint)}``, in declaration order
    (the shared scope fields the strategy does not use are left out)."""
    hints = typing.get_type_hints(config_class)
    unused = set(getattr(config_class, "unused_scope_fields", ()))
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(config_class) if f.init and f.name not in unused}


def _options(hint: Any) -> tuple[list[Any], bool]:
    """The non-None types of ``hint`` (strings last: a number is read as a number first), and whether None is one."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return sorted(options, key=lambda a: a is str), type(None) in typing.get_args(hint)
    return [hint], False


def describe_type(hint: Any) -> str:
    """What a value of type ``hint`` looks like on the command line, e.g. ``"an integer or none"``."""
    options, optional = _options(hint)
    names = []
    for option in options:
        if typing.get_origin(option) is list:
            item = describe_type(typing.get_args(option)[0]).removeprefix("an ").removeprefix("a ")
            names.append(f"a list of {item}s (a,b or JSON)")
        else:
            names.append({bool: "true or false", int: "an integer", float: "a number", str: "a string"}[option])
    return " or ".join(names + (["none"] if optional else []))


def type_metavar(hint: Any) -> str:
    """A short form of the type of ``hint`` for the help, e.g. ``INT|none``, ``true|false``, ``A,B``."""
    options, optional = _options(hint)
    names = [
        "A,B"
        if typing.get_origin(option) is list
        else {bool: "true|false", int: "INT", float: "FLOAT"}.get(option, "STR")
        for option in options
    ]
    return "|".join(names + (["none"] if optional else []))


def _read(hint: Any, raw: str) -> Any:
    """``raw`` read as a value of type ``hint``; `ValueError` when it is not one."""
    options, optional = _options(hint)
    if optional and raw.strip().lower() in NONE_WORDS:
        return None
    for option in options:
        try:
            return _read_one(option, raw.strip())
        except ValueError:
            continue
    raise ValueError(raw)


def _regex_error(pattern: str) -> str | None:
    """Why ``pattern`` is not a regular expression, or None when it is one."""
    try:
        re.compile(pattern)
    except re.error as error:
        return str(error)
    return None


def _quoted(text: str) -> str:
    """``text`` in quotes, as typed (no doubled backslashes) unless it holds unprintable characters."""
    return f"'{text}'" if text.isprintable() else repr(text)


def _check_list(key: str, given: str, raw: str, value: list[Any]) -> None:
    """Refuses an empty list (it would mean the default scope, silently) and, for a list of module patterns given as
    ``a,b``, a split that cannot be what was meant: a piece that is no regular expression on its own, or a whole value
    that is one with a ``{m,n}`` repeat (the comma belongs to the pattern).

    Raises:
        CommandError: naming ``--param KEY=VALUE`` and, for a pattern, the JSON form to give instead.
    """
    if not value:
        raise CommandError(f"--param {given}: {key} takes a non-empty list; leave the parameter out for the default.")
    if not all(isinstance(part, str) for part in value) or raw.startswith("[") or "," not in raw:
        return
    broken = next((part for part in value if _regex_error(part)), None)
    whole = _regex_error(raw) is None and _REPEAT.search(raw) is not None
    if broken is None and not whole:
        return
    pieces = " and ".join(_quoted(part) for part in value)
    why = (
        f"{_quoted(broken)} is not a regular expression" if broken is not None else "a comma is part of a {m,n} repeat"
    )
    example = json.dumps([raw] if _regex_error(raw) is None else value)
    raise CommandError(
        f"--param {given}: {key} is a list of patterns, and the a,b form would split it at every comma into {pieces} "
        f"({why}); give the patterns as a JSON list instead, e.g. --param '{key}={example}'."
    )


#: A ``{m,n}`` or ``{m,}`` repeat of a regular expression, whose comma the ``a,b`` form of a list would split.
_REPEAT = re.compile(r"\{\d*,\d*\}")


def _read_one(kind: Any, raw: str) -> Any:
    if typing.get_origin(kind) is list:
        item = typing.get_args(kind)[0]
        if raw.startswith("["):
            values = json.loads(raw)
            if not isinstance(values, list):
                raise ValueError(raw)
            return [_read_one(item, v if isinstance(v, str) else json.dumps(v)) for v in values]
        return [_read_one(item, part.strip()) for part in raw.split(",") if part.strip()]
    if kind is bool:
        if raw.lower() not in ("true", "false"):
            raise ValueError(raw)
        return raw.lower() == "true"
    if kind is int:
        value = json.loads(raw)  # "3" -> 3; "3.5", "true", "x" are refused below or by json
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(raw)
        return value
    if kind is float:
        return float(raw)  # nan/inf pass here: the config's own check names them
    if kind is str:
        return raw
    raise ValueError(raw)


def build_config(strategy: str, params: list[str] | None):
    """A strategy config from its name and ``key=value`` strings, each value read as its field's type says
    (``fraction=0.05``, ``include_bias=true``, ``num_blocks=none``, ``target_modules=fc1,fc2`` or a JSON list).

    Raises:
        CommandError: for an unknown strategy, a malformed, repeated or unknown parameter, a value of the wrong
            type (the message names the key and the type it takes), an empty list, a list of patterns whose ``a,b``
            form would be split inside a pattern (the message gives the JSON form), or a value the config refuses.

    Example:

    ```python
    >>> build_config("selective", ["utility=magnitude", "include_bias=true"]).include_bias
    True
    >>> build_config("selective", ["include_bias=1"])
    Traceback (most recent call last):
    ...
    hf_plasticity.cli._common.CommandError: --param include_bias=1: include_bias takes true or false, got '1'.
    ```
    """
    from ..core.config import get_config_class

    try:
        config_class = get_config_class(strategy)
    except ValueError as error:
        raise CommandError(one_line(error)) from error
    fields = parameter_fields(config_class)
    accepted = ", ".join(sorted(fields))
    values: dict[str, Any] = {}
    given: dict[str, str] = {}
    for item in params or []:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise CommandError(f"--param takes key=value, got {item!r}.")
        if key not in fields:
            raise CommandError(
                f"Unknown parameter {key!r} for strategy {strategy!r}. Accepted: {accepted} "
                f"(hf-plasticity prepare --strategy {strategy} --help describes them)."
            )
        if key in given:
            raise CommandError(f"--param {key} is given twice; give it once.")
        hint = fields[key][1]
        given[key] = f"{key}={raw}" if raw.isprintable() else f"{key}={raw!r}"
        try:
            values[key] = _read(hint, raw)
        except ValueError as error:
            raise CommandError(f"--param {given[key]}: {key} takes {describe_type(hint)}, got {raw!r}.") from error
        if isinstance(values[key], list):
            _check_list(key, given[key], raw.strip(), values[key])
    try:
        return config_class(**values)
    except (TypeError, ValueError) as error:
        message = one_line(error)
        culprit = next((given[key] for key in given if message.startswith(f"`{key}`")), None)
        where = f"--param {culprit}" if culprit else f"Invalid parameters for strategy {strategy!r}"
        raise CommandError(f"{where}: {message} Parameters of {strategy!r}: {accepted}.") from error


def describe_parameters(strategy: str, width: int | None = None) -> str:
    """The parameters of ``strategy`` as ``--help`` lists them: ``KEY=TYPE (default ...)`` and the field's help.

    Example:

    ```python
    >>> print(describe_parameters("reinit_layers", width=100).splitlines()[0])
    Parameters of strategy 'reinit_layers' (--param KEY=VALUE ...):
    ```
    """
    from ..core.config import get_config_class

    width = width or min(shutil.get_terminal_size().columns, 119)
    lines = [f"Parameters of strategy {strategy!r} (--param KEY=VALUE ...):"]
    for name, (field, hint) in parameter_fields(get_config_class(strategy)).items():
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        shown = "none" if default is None else json.dumps(default) if not isinstance(default, str) else default
        lines.append(f"  {name}={type_metavar(hint)}  (default: {shown})")
        text = field.metadata.get("help", "")
        lines += textwrap.wrap(text, width=width, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)


class StrategyHelp(argparse.Action):
    """``-h/--help`` of ``prepare``: the usual help, then the parameters of ``--strategy`` (given before ``--help``;
    else the default strategy's)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, *args: Any) -> None:
        from ..core.config import available_strategies
        from ..pipeline.restore import DEFAULT_STRATEGY

        parser.print_help()
        strategy = getattr(namespace, "strategy", None) or DEFAULT_STRATEGY
        print()
        if strategy in available_strategies():
            print(describe_parameters(strategy))
        names = ", ".join(available_strategies())
        print(f"\n`--strategy NAME --help` lists the parameters of NAME; strategies: {names}.")
        parser.exit()

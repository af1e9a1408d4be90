"""The checks every public entry point runs on its inputs before anything changes.

One function per kind of value, each raising a `ValueError` (or `TypeError`) that names the argument, what it got and
what is accepted: numbers (type, finiteness, range), positive integers, choices, flags, and module-name patterns
(compiled, so a broken regular expression is named instead of silently matching nothing).
"""

from __future__ import annotations

import math
import re
from typing import Any


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return "finite"


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
) -> None:
    """Raises a `ValueError` naming ``name`` unless ``value`` is a finite real number (booleans refused) in the
    interval; None passes when ``allow_none``.

    Example:

    ```python
    >>> from hf_plasticity.core.validators import check_number
    >>> check_number("shrink", 0.4, low=0, high=1)
    >>> check_number("shrink", float("nan"), low=0, high=1)
    Traceback (most recent call last):
    ...
    ValueError: `shrink` must be a finite number in [0, 1], got nan.
    ```
    """
    if value is None and allow_none:
        return
    interval = _interval(low, high, low_open, high_open)
    accepted = f"a finite number {interval}" if interval != "finite" else "a finite number"
    accepted += " or None" if allow_none else ""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"`{name}` must be {accepted}, got {value!r}.")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        raise ValueError(f"`{name}` must be {accepted}, got {value!r}.")


def check_positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    """Raises a `ValueError` naming ``name`` unless ``value`` is an integer >= 1 (booleans refused), or None when
    ``allow_none``."""
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer{' or None' if allow_none else ''}, got {value!r}.")


def check_int(name: str, value: Any, *, low: int | None = None, allow_none: bool = False) -> None:
    """Raises a `ValueError` unless ``value`` is an integer (booleans refused) >= ``low``, or None when allowed."""
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or (low is not None and value < low):
        bound = f" >= {low}" if low is not None else ""
        raise ValueError(f"`{name}` must be an integer{bound}{' or None' if allow_none else ''}, got {value!r}.")


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    """Raises a `ValueError` unless ``value`` is one of ``choices``."""
    if isinstance(value, bool) or value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}.")


def check_flag(name: str, value: Any, *, allow_none: bool = False) -> None:
    """Raises a `ValueError` naming ``name`` unless ``value`` is True or False (or None when ``allow_none``): a flag
    is a `bool`, so ``0``, ``1``, ``"yes"`` and numpy or torch booleans are refused rather than read as truthy.

    Example:

    ```python
    >>> from hf_plasticity.core.validators import check_flag
    >>> check_flag("recalibrate_batchnorm", None, allow_none=True)
    >>> check_flag("recalibrate_batchnorm", 0, allow_none=True)
    Traceback (most recent call last):
    ...
    ValueError: `recalibrate_batchnorm` must be True or False or None, got 0.
    ```
    """
    if value is None and allow_none:
        return
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False{' or None' if allow_none else ''}, got {value!r}.")


def check_patterns(name: str, value: Any, *, allow_empty: bool = True) -> list[str] | None:
    """A list of module names or regular expressions (each compiled, so a broken one is named); None passes, and an
    empty list unless ``allow_empty`` is False (where an empty list would silently mean the default).

    Returns:
        The patterns as a list (a tuple becomes a list), or None.

    Example:

    ```python
    >>> from hf_plasticity.core.validators import check_patterns
    >>> check_patterns("exclude_modules", ["vit.layers.11", r"vit\\.layers\\.1[01]"])
    ['vit.layers.11', 'vit\\\\.layers\\\\.1[01]']
    >>> check_patterns("exclude_modules", ["vit.layers.[1"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: `exclude_modules` entry 'vit.layers.[1' is not a valid regular expression (...): give a module ...
    ```
    """
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ValueError(f"`{name}` must be a list of module names or regular expressions, got {value!r}.")
    if not value and not allow_empty:
        raise ValueError(
            f"`{name}` is an empty list, which would mean the default scope: name at least one module, or pass None "
            "for the default."
        )
    for pattern in value:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"`{name}` must be a list of non-empty strings (module names or regular expressions), "
                             f"got {value!r}.")  # fmt: skip
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(
                f"`{name}` entry {pattern!r} is not a valid regular expression ({error}): give a module name (e.g. "
                "'vit.layers.11') or a regular expression."
            ) from error
    return list(value)

"""Statistics of the benchmark's confirmations: means with 95% confidence intervals, and paired differences.

Arms are compared on the same seeds (the seed fixes the head's draw, the restore's draws and the data order), so the
difference between two arms is computed seed by seed and its mean gets a t-interval: the paired design removes the
seed-to-seed variation that both arms share.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as scipy_stats


@dataclass(frozen=True)
class Interval:
    """A mean and its two-sided confidence interval.

    Attributes:
        mean: the sample mean.
        low: lower end of the interval.
        high: upper end of the interval.
        n: number of values.
        std: sample standard deviation (ddof 1; 0 for one value).
    """

    mean: float
    low: float
    high: float
    n: int
    std: float

    @property
    def excludes_zero(self) -> bool:
        """Whether the whole interval lies on one side of 0."""
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def mean_interval(values: list[float], confidence: float = 0.95) -> Interval:
    """The mean of ``values`` with its t confidence interval (`scipy.stats.ttest_1samp`'s; a single value, or values
    that are all equal, get an interval of zero width).

    Example:

    ```python
    >>> from benchmarks.stats import mean_interval
    >>> interval = mean_interval([1.0, 2.0, 3.0])
    >>> round(interval.mean, 3), round(interval.low, 3), round(interval.high, 3)
    (2.0, -0.484, 4.484)
    ```
    """
    if not values:
        raise ValueError("No values to summarize.")
    return _interval(np.asarray(values, dtype=float), lambda: scipy_stats.ttest_1samp(values, 0.0), confidence)


def paired_difference(treatment: dict[int, float], control: dict[int, float], confidence: float = 0.95) -> Interval:
    """The mean of ``treatment[seed] - control[seed]`` over the seeds both have, with the t confidence interval of a
    paired test (`scipy.stats.ttest_rel`).

    Raises:
        ValueError: when the two share no seed.
    """
    seeds = sorted(set(treatment) & set(control))
    if not seeds:
        raise ValueError("The two arms share no seed: a paired difference needs the same seeds.")
    a, b = [treatment[s] for s in seeds], [control[s] for s in seeds]
    return _interval(np.subtract(a, b), lambda: scipy_stats.ttest_rel(a, b), confidence)


def _interval(values: np.ndarray, test: Callable[[], Any], confidence: float) -> Interval:
    """The `Interval` of ``values``: their mean (summed in order, as the committed tables were computed), and the
    confidence interval of the t-test ``test`` runs on them."""
    mean = sum(values.tolist()) / len(values)
    if len(values) == 1:
        return Interval(mean, mean, mean, 1, 0.0)
    with warnings.catch_warnings():  # equal values: scipy warns about their zero variance, the interval is the mean
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = test().confidence_interval(confidence)
    return Interval(mean, float(low), float(high), len(values), float(np.std(values, ddof=1)))


def paired_p_value(treatment: dict[int, float], control: dict[int, float]) -> float:
    """The two-sided p-value of the paired t-test (`scipy.stats.ttest_rel`) over the seeds both have: below 0.05
    exactly when `paired_difference`'s 95% interval excludes 0. Differences all equal (no spread): 1 when they are
    0, else 0 (the interval is the mean alone).

    Raises:
        ValueError: when the two share no seed.
    """
    seeds = sorted(set(treatment) & set(control))
    if not seeds:
        raise ValueError("The two arms share no seed: a paired difference needs the same seeds.")
    differences = [treatment[s] - control[s] for s in seeds]
    if len(set(differences)) == 1:
        return 1.0 if differences[0] == 0 else 0.0
    return float(scipy_stats.ttest_rel([treatment[s] for s in seeds], [control[s] for s in seeds]).pvalue)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (in the order given): the ``i``-th smallest p (1-based) times ``m - i + 1``,
    made non-decreasing in that order and capped at 1. A hypothesis is rejected at family-wise error ``alpha`` when
    its adjusted p is below ``alpha``: Holm (1979), "A simple sequentially rejective multiple test procedure".

    Example:

    ```python
    >>> from benchmarks.stats import holm
    >>> [round(p, 3) for p in holm([0.01, 0.04, 0.03, 0.005])]
    [0.03, 0.06, 0.06, 0.02]
    ```
    """
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted

"""Small-sample statistics for resolve rates. Pure functions over counts and 0/1 arrays.

Internal task sets are small (30-300 tasks), so every rate carries an interval and
every comparison a paired test; nothing here assumes normality where n is small.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

Z95 = 1.959963984540054


class Interval(NamedTuple):
    estimate: float
    low: float
    high: float


def wilson(successes: int, n: int, z: float = Z95) -> Interval:
    """Wilson score interval for a binomial proportion (good at small n and near 0/1)."""
    if n == 0:
        return Interval(math.nan, math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def _bootstrap_means(values: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """Means of ``draws`` resamples (with replacement) of ``values``.

    Drawn as multinomial counts over the distinct values: the same distribution as
    resampling element by element, at a cost independent of len(values).
    """
    rng = np.random.default_rng(seed)
    distinct, counts = np.unique(values, return_counts=True)
    picks = rng.multinomial(values.size, counts / values.size, size=draws)
    return np.asarray(picks @ distinct / values.size, dtype=float)


def bootstrap_rate(outcomes: np.ndarray, *, draws: int = 2000, seed: int = 0) -> Interval:
    """Bootstrap over tasks of a tasks x repeats 0/1 matrix (NaN = not run).

    Tasks are resampled whole, so repeats of a task stay together: the interval
    reflects task-to-task variation as well as run-to-run noise.
    """
    graded = outcomes[~np.isnan(outcomes).all(axis=1)]  # tasks with no graded run drop out
    if graded.size == 0:
        return Interval(math.nan, math.nan, math.nan)
    per_task = np.nanmean(graded, axis=1)
    means = _bootstrap_means(per_task, draws, seed)
    return Interval(
        float(per_task.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))
    )


def rate_interval(outcomes: np.ndarray, *, seed: int = 0) -> Interval:
    """Wilson for one run per task; bootstrap over tasks when tasks repeat."""
    if outcomes.ndim == 2 and outcomes.shape[1] > 1:
        return bootstrap_rate(outcomes, seed=seed)
    flat = outcomes.reshape(-1)
    flat = flat[~np.isnan(flat)]
    return wilson(int(flat.sum()), int(flat.size))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b (A only) and c (B only)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    # Integer arithmetic: exact, and no float overflow at thousands of tasks.
    tail = sum(math.comb(n, i) for i in range(k + 1)) / (1 << n)
    return min(1.0, 2 * tail)


def paired_difference(
    a: np.ndarray, b: np.ndarray, *, draws: int = 2000, seed: int = 0
) -> Interval:
    """Bootstrap interval for mean(a) - mean(b) over the same tasks (paired)."""
    diff = a - b
    if diff.size == 0:
        return Interval(math.nan, math.nan, math.nan)
    means = _bootstrap_means(diff, draws, seed)
    return Interval(
        float(diff.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))
    )


def minimum_detectable_difference(
    n: int, p: float = 0.5, *, z_alpha: float = Z95, z_power: float = 0.8416212335729143
) -> float:
    """Smallest true difference between two agents a paired test on ``n`` tasks detects
    with 80% power at alpha 0.05, assuming discordance ~ 2p(1-p) (independent agents)."""
    if n == 0:
        return math.nan
    discordant = max(2 * p * (1 - p), 1e-9)
    return float((z_alpha + z_power) * math.sqrt(discordant / n))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n runs with c successes (Chen et al. 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_hat_k(n: int, c: int, k: int) -> float:
    """pass^k: probability that k runs drawn without replacement all succeed."""
    if c < k:
        return 0.0
    return math.comb(c, k) / math.comb(n, k)


def flip_rate(row: np.ndarray) -> float:
    """Share of a task's runs that disagree with its majority outcome (0 = stable)."""
    runs = row[~np.isnan(row)]
    if runs.size < 2:
        return 0.0
    ones = runs.sum()
    return float(min(ones, runs.size - ones) / runs.size)

"""Small-sample statistics for resolve rates. Pure functions over counts and arrays.

Internal task sets are small (30-300 tasks) and runs of one task are not independent
of each other, so every interval is clustered by task, every comparison is paired on
tasks, and nothing here assumes normality where n is small.

One rate definition throughout: an agent's *rate* is the mean over graded tasks of
the share of that task's graded runs that resolved it (with one run per task: resolved
tasks / graded tasks; it equals pass@1).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import numpy as np

Z95 = 1.959963984540054
ALPHA = 0.05
POWER = 0.8
EXACT_MDD_MAX_TASKS = 5000
"""Above this many tasks the MDD uses the normal approximation (it is then within 0.1 pt)."""
EXACT_SIGNFLIP_MAX_SUPPORT = 1 << 21
"""Largest lattice the exact sign-flip distribution is computed on; beyond it, Monte Carlo."""


class Interval(NamedTuple):
    estimate: float
    low: float
    high: float


NAN_INTERVAL = Interval(math.nan, math.nan, math.nan)


def wilson(successes: float, n: float, z: float = Z95) -> Interval:
    """Wilson score interval for a binomial proportion (good at small n and near 0/1).

    ``n`` may be an effective sample size (not an integer) for clustered data.
    """
    if n <= 0:
        return NAN_INTERVAL
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def task_means(outcomes: np.ndarray) -> np.ndarray:
    """Per-task share of graded runs resolved, for a tasks x runs 0/1 matrix (NaN = not
    graded); tasks with no graded run drop out."""
    graded = outcomes[~np.isnan(outcomes).all(axis=1)] if outcomes.ndim == 2 else outcomes
    if graded.ndim == 1:
        return np.asarray(graded[~np.isnan(graded)], dtype=float)
    return np.asarray(np.nanmean(graded, axis=1), dtype=float)


def clustered_rate(per_task: np.ndarray, runs: int | None = None) -> Interval:
    """The rate (mean of per-task shares) with a Wilson interval on the effective number
    of independent observations: n_eff = p(1-p) / Var(p_hat), where Var(p_hat) is the
    between-task variance of the per-task shares over the number of tasks (the cluster
    design effect). With one run per task n_eff is the number of tasks, so this is the
    plain Wilson interval. n_eff is at least the number of tasks (a share lies in [0, 1])
    and at most ``runs``, the number of graded runs; at 0% or 100% it is the number of
    tasks, so the interval never collapses to a point.
    """
    tasks = int(per_task.size)
    if tasks == 0:
        return NAN_INTERVAL
    p = float(per_task.mean())
    var = float(per_task.var()) / tasks
    bernoulli = p * (1 - p)
    n_eff = float(tasks) if bernoulli <= 0 else bernoulli / var if var > 0 else math.inf
    n_eff = max(float(tasks), min(n_eff, float(runs if runs is not None else tasks)))
    ci = wilson(p * n_eff, n_eff)
    return Interval(p, ci.low, ci.high)


def rate_interval(outcomes: np.ndarray) -> Interval:
    """Headline rate of a tasks x runs matrix, clustered by task (see ``clustered_rate``)."""
    runs = int((~np.isnan(outcomes)).sum())
    return clustered_rate(task_means(outcomes), runs)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b (A only) and c (B only)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    # Integer arithmetic: exact, and no float overflow at thousands of tasks.
    tail = sum(math.comb(n, i) for i in range(k + 1)) / (1 << n)
    return min(1.0, 2 * tail)


def lattice(counts: np.ndarray) -> int:
    """Common denominator of per-task shares with these run counts: lcm of the counts."""
    distinct = {int(c) for c in np.unique(counts) if c > 0}
    return math.lcm(*distinct) if distinct else 1


def signflip_pvalue(diffs: np.ndarray, scale: int, *, seed: int = 0) -> float:
    """Two-sided p-value of the paired sign-flip permutation test of mean(diffs) = 0.

    ``diffs`` are per-task differences of shares, multiples of ``1 / scale``. Under the
    null the sign of each task's difference is a fair coin (the two agents are
    exchangeable on every task). The permutation distribution of the sum is computed
    exactly: its characteristic function is the product of cos(w_j t) over the tasks'
    integer weights w_j, inverted with one FFT. With 0/1 outcomes (one run each) this is
    the exact McNemar test.
    """
    weights = np.abs(np.rint(diffs * scale)).astype(np.int64)
    observed = abs(int(np.rint(diffs.sum() * scale)))
    weights = weights[weights > 0]
    if weights.size == 0 or observed == 0:
        return 1.0
    values, counts = np.unique(weights, return_counts=True)
    if values.size == 1 and values[0] == 1:
        return mcnemar_exact((weights.size + observed) // 2, (weights.size - observed) // 2)
    total = int(weights.sum())
    if 2 * total + 1 > EXACT_SIGNFLIP_MAX_SUPPORT:
        return _signflip_monte_carlo(weights.astype(float), float(observed), seed)
    size = 1 << (2 * total + 1).bit_length()
    log_phi = np.zeros(size // 2 + 1)
    negative = np.zeros(size // 2 + 1, dtype=bool)
    for value, count in zip(values, counts, strict=True):
        log_abs, sign = _log_cos(size, int(value))
        log_phi += int(count) * log_abs  # product of cos^count, in logs: no pow() per pair
        if count % 2:
            negative ^= sign
    phi = np.exp(log_phi)
    phi[negative] *= -1
    pmf = np.fft.irfft(phi, n=size)
    upper = float(pmf[observed : total + 1].sum())  # P(S >= observed); symmetric
    return min(1.0, max(2 * upper, 0.0))


@lru_cache(maxsize=256)
def _log_cos(size: int, value: int) -> tuple[np.ndarray, np.ndarray]:
    """log|cos(value * t)| and its sign (True = negative) on the FFT grid of ``size``."""
    theta = 2 * np.pi * np.arange(size // 2 + 1) / size
    cos = np.cos(value * theta)
    with np.errstate(divide="ignore"):
        return np.log(np.abs(cos)), cos < 0


def _signflip_monte_carlo(weights: np.ndarray, observed: float, seed: int) -> float:
    rng = np.random.default_rng(seed)
    draws, hits = 20000, 0
    for start in range(0, draws, 1000):
        signs = rng.integers(0, 2, size=(min(1000, draws - start), weights.size)) * 2 - 1
        hits += int((np.abs(signs @ weights) >= observed - 1e-9).sum())
    return (hits + 1) / (draws + 1)


def signflip_intervals(
    diffs: np.ndarray, *, draws: int = 1000, seed: int = 0, alpha: float = ALPHA
) -> list[Interval]:
    """For each column of ``diffs`` (tasks x pairs, NaN = task not shared), the mean
    difference and the set of shifts d the sign-flip test does not reject at ``alpha``
    when applied to diffs - d (test inversion, so the interval agrees with the test:
    with 4 tasks, where the test can reject nothing, it is the whole range [-1, 1]).

    One seeded matrix of random signs is shared by all pairs (Monte Carlo, ``draws``
    flips), so the whole family costs two matrix products.
    """
    mask = ~np.isnan(diffs)
    filled = np.where(mask, diffs, 0.0)
    rng = np.random.default_rng(seed)
    signs = (rng.integers(0, 2, size=(draws, diffs.shape[0]), dtype=np.int8) * 2 - 1).astype(
        np.float32
    )
    flipped = signs @ filled.astype(np.float32)  # draws x pairs: sum of s_j d_j
    flipped_n = signs @ mask.astype(np.float32)  # draws x pairs: sum of s_j
    out = []
    for col in range(diffs.shape[1]):
        n = int(mask[:, col].sum())
        if n == 0:
            out.append(NAN_INTERVAL)
            continue
        total = float(filled[:, col].sum())
        est = total / n
        a, c = flipped[:, col].astype(float), flipped_n[:, col].astype(float)

        def p_at(
            shift: float, a: np.ndarray = a, c: np.ndarray = c, total: float = total, n: int = n
        ) -> float:
            stat = abs(total - n * shift) - 1e-9
            return float((np.abs(a - shift * c) >= stat).sum() + 1) / (draws + 1)

        bounds = []
        for edge in (-1.0, 1.0):
            if p_at(edge) > alpha:
                bounds.append(edge)
                continue
            inside, outside = est, edge
            for _ in range(17):  # to 0.002 points
                mid = (inside + outside) / 2
                if p_at(mid) > alpha:
                    inside = mid
                else:
                    outside = mid
            bounds.append(inside)
        out.append(Interval(est, bounds[0], bounds[1]))
    return out


def holm(pvalues: list[float]) -> list[float]:
    """Holm step-down adjusted p-values (controls the family-wise error rate)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


# --- minimum detectable difference ------------------------------------------------


def _log_factorials(n: int) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1)))])


@lru_cache(maxsize=16)
def _mcnemar_critical(n: int, alpha: float) -> np.ndarray:
    """For D = 0..n discordant tasks, the largest k with exact McNemar p(k, D-k) < alpha
    (the test rejects when min(b, c) <= k); -1 when no outcome can reject."""
    lf = _log_factorials(n)
    crit = np.full(n + 1, -1, dtype=np.int64)
    for start in range(0, n + 1, 256):  # rows in chunks: memory stays small at 5,000 tasks
        d = np.arange(start, min(start + 256, n + 1))[:, None]
        i = np.arange(n // 2 + 1)[None, :]
        valid = i <= d // 2
        safe_i = np.where(valid, i, 0)
        pmf = np.where(valid, np.exp(lf[d] - lf[safe_i] - lf[d - safe_i] - d * math.log(2)), 0.0)
        below = (2 * np.cumsum(pmf, axis=1) < alpha * (1 - 1e-12)) & valid
        crit[d[:, 0]] = np.where(below.any(axis=1), below.sum(axis=1) - 1, -1)
    return crit


def mcnemar_power(n: int, difference: float, *, alpha: float = ALPHA, p: float = 0.5) -> float:
    """Exact power of the two-sided exact McNemar test on n tasks when two independent
    agents resolve tasks with probabilities p + d/2 and p - d/2."""
    pa, pb = p + difference / 2, p - difference / 2
    only_a, only_b = pa * (1 - pb), pb * (1 - pa)
    discord = only_a + only_b
    if n == 0 or discord <= 0:
        return 0.0
    # Clipped away from 0 and 1 so the logs stay finite (the error is below 1e-12).
    q = min(max(only_a / discord, 1e-15), 1 - 1e-15)
    discord = min(discord, 1 - 1e-15)
    lf = _log_factorials(n)
    crit = _mcnemar_critical(n, alpha)
    d_all = np.arange(n + 1)
    log_pd = (
        lf[n]
        - lf[d_all]
        - lf[n - d_all]
        + d_all * math.log(discord)
        + (n - d_all) * math.log1p(-discord)
    )
    rows = d_all[(log_pd > -25) & (crit >= 0)]  # mass left out < 1e-10
    if rows.size == 0:
        return 0.0
    # Reject when min(b, c) <= crit[D]: both binomial tails, all D at once.
    i = np.arange(int(crit[rows].max()) + 1)[None, :]
    dd, kk = rows[:, None], crit[rows][:, None]
    inside = i <= kk
    safe_i = np.where(inside, i, 0)
    logc = lf[dd] - lf[safe_i] - lf[dd - safe_i]
    low = np.exp(logc + safe_i * math.log(q) + (dd - safe_i) * math.log1p(-q))
    high = np.exp(logc + safe_i * math.log1p(-q) + (dd - safe_i) * math.log(q))
    tails = np.where(inside, low + high, 0.0).sum(axis=1)
    power = float((np.exp(log_pd[rows]) * tails).sum())
    return min(power, 1.0)


@lru_cache(maxsize=64)
def minimum_detectable_difference(
    n: int, *, alpha: float = ALPHA, power: float = POWER, p: float = 0.5
) -> float | None:
    """Smallest true difference between two agents that the pairwise test on ``n`` shared
    tasks detects with ``power`` at level ``alpha``, or None when no difference can be
    detected (with one run each, fewer than 6 tasks can never give p < 0.05).

    Assumes independent agents near ``p`` whose repeats agree (each task either always
    or never resolved): the sign-flip test is then exactly McNemar's, and the power is
    computed exactly. Runs that disagree only add information, so repeats can lower it.
    """
    if n <= 0:
        return None
    if n > EXACT_MDD_MAX_TASKS:
        z_power = 0.8416212335729143
        z_alpha = _normal_quantile(1 - alpha / 2)
        return float((z_alpha + z_power) * math.sqrt(2 * p * (1 - p) / n))
    top = min(1.0, 2 * min(p, 1 - p))
    if mcnemar_power(n, top, alpha=alpha, p=p) < power:
        return None
    lo, hi = 0.0, top
    # Bracket around the normal approximation first: fewer exact power sums.
    guess = (_normal_quantile(1 - alpha / 2) + _normal_quantile(power)) * math.sqrt(
        2 * p * (1 - p) / n
    )
    if guess * 1.3 < top and mcnemar_power(n, guess * 1.3, alpha=alpha, p=p) >= power:
        hi = guess * 1.3
        if mcnemar_power(n, guess * 0.9, alpha=alpha, p=p) < power:
            lo = guess * 0.9
    while hi - lo > 1e-4:  # to 0.01 points
        mid = (lo + hi) / 2
        if mcnemar_power(n, mid, alpha=alpha, p=p) >= power:
            hi = mid
        else:
            lo = mid
    return hi


def _normal_quantile(q: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(q)


# --- gap to a public number --------------------------------------------------------


def gap_interval(internal: Interval, public_pct: float, public_n: int) -> Interval:
    """Internal rate minus a public score, with both sides' sampling error: Newcombe's
    MOVER interval from the internal (clustered Wilson) interval and the public score's
    Wilson interval on its benchmark's size (the two samples are independent)."""
    public = public_pct / 100
    pub = wilson(public * public_n, public_n)
    r, lo, hi = internal
    gap = r - public
    return Interval(
        gap,
        gap - math.sqrt((r - lo) ** 2 + (pub.high - public) ** 2),
        gap + math.sqrt((hi - r) ** 2 + (public - pub.low) ** 2),
    )


# --- repeats -----------------------------------------------------------------------


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

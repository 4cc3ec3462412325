"""Statistics match scipy / statsmodels reference values and behave at the edges."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

from evalkit.report import _stats as stats


@pytest.mark.parametrize(("k", "n"), [(7, 10), (0, 5), (5, 5), (1, 1000), (61, 116), (0, 60)])
def test_wilson_matches_statsmodels(k: int, n: int) -> None:
    low, high = proportion_confint(k, n, method="wilson")
    ci = stats.wilson(k, n)
    assert ci.estimate == pytest.approx(k / n)
    assert (ci.low, ci.high) == pytest.approx((low, high), abs=1e-12)


def test_one_run_per_task_gives_exactly_the_wilson_interval() -> None:
    outcomes = np.array([1, 0, 1, 1, 0, 0, 0, 1, 1, 0, 1, 1], dtype=float)[:, None]
    low, high = proportion_confint(7, 12, method="wilson")
    ci = stats.rate_interval(outcomes)
    assert (ci.estimate, ci.low, ci.high) == pytest.approx((7 / 12, low, high), abs=1e-12)


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_no_zero_width_interval_at_0_of_n_or_n_of_n(value: float) -> None:
    outcomes = np.full((60, 3), value)
    ci = stats.rate_interval(outcomes)
    low, high = proportion_confint(60 * value, 60, method="wilson")  # Wilson on the 60 tasks
    assert (ci.low, ci.high) == pytest.approx((low, high), abs=1e-12)
    assert ci.high - ci.low > 0.05


def test_repeats_are_clustered_not_counted_as_more_tasks() -> None:
    # Three identical runs carry the information of one: the interval is Wilson on tasks.
    one = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1, 0] * 3, dtype=float)[:, None]
    tripled = np.repeat(one, 3, axis=1)
    assert stats.rate_interval(tripled) == pytest.approx(stats.rate_interval(one))
    naive_low, _ = proportion_confint(45, 90, method="wilson")  # repeats as tasks
    assert stats.rate_interval(tripled).low < naive_low - 0.03


def test_clustered_interval_covers_the_true_rate_at_small_n_and_low_rates() -> None:
    # Tasks of varied difficulty, 3 runs each: the audit's 89% case for the old bootstrap.
    rng = np.random.default_rng(11)
    hits, experiments = 0, 600
    difficulty = rng.beta(0.3, 2.7, size=(experiments, 20))  # population mean 10%
    for trial in range(experiments):
        runs = (rng.random((20, 3)) < difficulty[trial][:, None]).astype(float)
        ci = stats.rate_interval(runs)
        hits += ci.low <= 0.1 <= ci.high
    assert hits / experiments >= 0.93


@pytest.mark.parametrize(("b", "c"), [(12, 6), (13, 5), (0, 5), (4, 0), (480, 560), (3, 3)])
def test_exact_mcnemar_matches_statsmodels(b: int, c: int) -> None:
    reference = mcnemar([[10, b], [c, 10]], exact=True).pvalue
    assert stats.mcnemar_exact(b, c) == pytest.approx(reference, rel=1e-9)


def test_sign_flip_test_with_one_run_each_is_exact_mcnemar() -> None:
    diffs = np.array([1] * 9 + [-1] * 2 + [0] * 20, dtype=float)
    reference = mcnemar([[5, 9], [2, 15]], exact=True).pvalue
    assert stats.signflip_pvalue(diffs, 1) == pytest.approx(reference, rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_sign_flip_test_on_per_task_means_matches_scipy_exact_permutation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 4, size=14) / 3  # per-task shares of 3 runs
    b = rng.integers(0, 3, size=14) / 2  # ... and of 2 runs
    reference = sps.permutation_test(
        (a, b),
        lambda x, y: np.mean(x - y),
        permutation_type="samples",
        n_resamples=np.inf,
        alternative="two-sided",
    ).pvalue
    assert stats.signflip_pvalue(a - b, 6) == pytest.approx(reference, abs=1e-9)


def test_sign_flip_interval_agrees_with_the_test_and_spans_everything_at_4_tasks() -> None:
    assert stats.signflip_intervals(np.ones((4, 1)))[0][1:] == (-1.0, 1.0)
    rng = np.random.default_rng(5)
    clear = np.concatenate([np.ones(25), rng.integers(-1, 2, size=35)])[:, None]
    ci = stats.signflip_intervals(clear)[0]
    assert stats.signflip_pvalue(clear[:, 0], 1) < 0.01 and ci.low > 0
    assert ci.low < ci.estimate < ci.high


def test_holm_matches_statsmodels() -> None:
    pvalues = [0.01, 0.04, 0.03, 0.2, 0.0001, 0.5]
    reference = multipletests(pvalues, method="holm")[1]
    assert stats.holm(pvalues) == pytest.approx(list(reference), abs=1e-12)


def _reference_power(n: int, d: float, alpha: float = 0.05) -> float:
    """Power of exact McNemar for independent agents at 50 ± d/2, summed with scipy."""
    pa, pb = 0.5 + d / 2, 0.5 - d / 2
    only_a, only_b = pa * (1 - pb), pb * (1 - pa)
    q = only_a / (only_a + only_b)
    power = 0.0
    for discord in range(1, n + 1):  # no discordant task: never rejects
        reject = [b for b in range(discord + 1) if sps.binomtest(b, discord, 0.5).pvalue < alpha]
        power += sps.binom.pmf(discord, n, only_a + only_b) * sum(
            sps.binom.pmf(b, discord, q) for b in reject
        )
    return float(power)


@pytest.mark.parametrize(("n", "audit"), [(6, 0.963), (10, 0.714), (30, 0.388)])
def test_minimum_detectable_difference_has_80_percent_power_exactly(n: int, audit: float) -> None:
    mdd = stats.minimum_detectable_difference(n)
    assert mdd is not None and mdd == pytest.approx(audit, abs=1e-3)
    assert _reference_power(n, mdd) >= 0.8 > _reference_power(n, mdd - 0.003)


def test_nothing_is_detectable_with_fewer_than_6_tasks() -> None:
    assert stats.minimum_detectable_difference(4) is None
    assert stats.minimum_detectable_difference(5) is None
    assert _reference_power(5, 1.0) == 0.0  # not even 5 of 5 discordant reaches p < 0.05


def test_the_family_wise_threshold_raises_the_detectable_difference() -> None:
    single = stats.minimum_detectable_difference(60)
    family = stats.minimum_detectable_difference(60, alpha=0.05 / 45)
    assert single is not None and family is not None and family > single + 0.05


def test_gap_interval_with_one_run_is_newcombes_interval() -> None:
    internal = stats.rate_interval(np.array([1] * 33 + [0] * 27, dtype=float)[:, None])
    low, high = confint_proportions_2indep(33, 60, 372, 500, method="newcomb", compare="diff")
    gap = stats.gap_interval(internal, 74.4, 500)
    assert gap.estimate == pytest.approx(33 / 60 - 0.744)
    assert (gap.low, gap.high) == pytest.approx((low, high), abs=1e-9)
    # Wider than the internal interval alone: the public number has its own error.
    assert gap.high - gap.low > internal.high - internal.low


def test_pass_at_k_and_pass_hat_k() -> None:
    assert stats.pass_at_k(3, 1, 1) == pytest.approx(1 / 3)
    assert stats.pass_at_k(3, 1, 3) == 1.0
    assert stats.pass_at_k(200, 7, 50) == pytest.approx(
        1 - np.prod(1 - 50 / np.arange(200 - 7 + 1, 201)), rel=1e-9
    )
    assert stats.pass_hat_k(3, 2, 2) == pytest.approx(1 / 3)
    assert stats.pass_hat_k(3, 1, 2) == 0.0


def test_flip_rate_is_zero_for_stable_tasks() -> None:
    assert stats.flip_rate(np.array([1.0, 1.0, 1.0])) == 0.0
    assert stats.flip_rate(np.array([1.0, 0.0, 1.0])) == pytest.approx(1 / 3)
    assert math.isnan(stats.wilson(0, 0).estimate)

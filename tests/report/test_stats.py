"""Statistics match hand-computed values and behave at the edges."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evalkit.report import _stats as stats


def test_wilson_matches_the_textbook_value_for_7_of_10() -> None:
    ci = stats.wilson(7, 10)
    assert ci.estimate == pytest.approx(0.7)
    assert (ci.low, ci.high) == pytest.approx((0.3968, 0.8922), abs=1e-4)


def test_wilson_stays_inside_0_1_at_the_extremes() -> None:
    assert stats.wilson(0, 5).low == 0.0 and stats.wilson(5, 5).high == 1.0
    assert math.isnan(stats.wilson(0, 0).estimate)


def test_exact_mcnemar_is_a_binomial_tail() -> None:
    assert stats.mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert stats.mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)
    assert stats.mcnemar_exact(3, 3) == 1.0 and stats.mcnemar_exact(0, 0) == 1.0


def test_pass_at_k_and_pass_hat_k() -> None:
    assert stats.pass_at_k(3, 1, 1) == pytest.approx(1 / 3)
    assert stats.pass_at_k(3, 1, 3) == 1.0
    assert stats.pass_hat_k(3, 2, 2) == pytest.approx(1 / 3)
    assert stats.pass_hat_k(3, 1, 2) == 0.0


def test_bootstrap_keeps_repeats_of_a_task_together_and_is_seeded() -> None:
    matrix = np.array([[1, 1, 1], [0, 0, 0], [1, 0, 1], [0, 0, np.nan]], dtype=float)
    one, two = stats.bootstrap_rate(matrix, seed=3), stats.bootstrap_rate(matrix, seed=3)
    assert one == two
    assert one.low <= one.estimate <= one.high
    assert one.estimate == pytest.approx((1 + 0 + 2 / 3 + 0) / 4)


def test_minimum_detectable_difference_shrinks_with_more_tasks() -> None:
    assert stats.minimum_detectable_difference(30) > stats.minimum_detectable_difference(300)
    assert stats.minimum_detectable_difference(100) == pytest.approx(0.198, abs=1e-3)


def test_flip_rate_is_zero_for_stable_tasks() -> None:
    assert stats.flip_rate(np.array([1.0, 1.0, 1.0])) == 0.0
    assert stats.flip_rate(np.array([1.0, 0.0, 1.0])) == pytest.approx(1 / 3)

"""FAIL_TO_PASS / PASS_TO_PASS need agreement across every run; flips are flaky."""

from __future__ import annotations

from evalkit.mining import classify_runs
from evalkit.records import TestOutcome

P, F = TestOutcome.PASSED, TestOutcome.FAILED


def test_fail_or_absent_before_and_pass_after_is_fail_to_pass() -> None:
    before = [{"t::old": P, "t::bug": F}] * 3
    after = [{"t::old": P, "t::bug": P, "t::new": P}] * 3
    result = classify_runs(before, after)
    assert result.fail_to_pass == ("t::bug", "t::new")
    assert result.pass_to_pass == ("t::old",)


def test_a_test_that_passes_only_on_some_runs_is_dropped_as_flaky() -> None:
    before = [{"t::bug": F, "t::net": P}, {"t::bug": F, "t::net": F}, {"t::bug": F, "t::net": P}]
    after = [{"t::bug": P, "t::net": P}] * 3
    result = classify_runs(before, after)
    assert result.flaky == ("t::net",)
    assert "t::net" not in result.fail_to_pass + result.pass_to_pass


def test_gold_that_breaks_a_passing_test_is_reported() -> None:
    result = classify_runs([{"t::a": P}] * 2, [{"t::a": F}] * 2)
    assert result.broken_by_gold == ("t::a",)
    assert result.fail_to_pass == result.pass_to_pass == ()

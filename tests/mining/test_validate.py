"""FAIL_TO_PASS / PASS_TO_PASS need agreement across every run; flips are flaky."""

from __future__ import annotations

import json

from evalkit.mining import classify_runs, judge, unfinished_tests
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


def test_each_run_outcome_maps_to_its_rejection_reason() -> None:
    ok = classify_runs([{"t::bug": F, "t::old": P}], [{"t::bug": P, "t::old": P}])
    assert judge(ok) is None
    broken = judge(classify_runs([{"t::a": P}], [{"t::a": F}]))
    assert broken is not None and broken.reason == "gold_breaks_tests"
    nothing = judge(classify_runs([{"t::a": P}], [{"t::a": P}]))
    assert nothing is not None and nothing.reason == "no_fail_to_pass"
    # Modules that cannot import even with the fix point at a missing dependency.
    missing = judge(classify_runs([{}], [{}]), ["tests/test_io.py"])
    assert missing is not None and missing.reason == "environment"


def test_a_killed_run_names_the_test_it_was_running() -> None:
    report = "\n".join(
        json.dumps(r)
        for r in [
            {"event": "collected", "nodeid": "t::a"},
            {"event": "test", "nodeid": "t::a", "when": "setup", "outcome": "passed"},
            {"event": "test", "nodeid": "t::a", "when": "call", "outcome": "passed"},
            {"event": "test", "nodeid": "t::a", "when": "teardown", "outcome": "passed"},
            {"event": "test", "nodeid": "t::hang", "when": "setup", "outcome": "passed"},
        ]
    )
    assert unfinished_tests(report) == ["t::hang"]
    assert unfinished_tests(report + "\n{broken") == ["t::hang"]

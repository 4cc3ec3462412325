"""Pure rules that turn repeated before/after test runs into FAIL_TO_PASS / PASS_TO_PASS."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from evalkit.records import TestOutcome

Runs = Sequence[dict[str, TestOutcome]]


@dataclass(frozen=True)
class Classification:
    fail_to_pass: tuple[str, ...]
    pass_to_pass: tuple[str, ...]
    flaky: tuple[str, ...]
    """Tests whose outcome changed between runs of the same state: dropped from both lists."""
    broken_by_gold: tuple[str, ...]
    """Passed in every run before the fix and in none after: the gold patch breaks them."""


def _passed(runs: Runs, test: str) -> list[bool]:
    return [run.get(test) is TestOutcome.PASSED for run in runs]


def classify_runs(before: Runs, after: Runs) -> Classification:
    """FAIL_TO_PASS: failing or absent before and passing after, in every run.
    PASS_TO_PASS: passing before and after, in every run. A test that flips between runs
    of the same state is flaky and goes in neither list."""
    tests = sorted({t for run in (*before, *after) for t in run})
    f2p: list[str] = []
    p2p: list[str] = []
    flaky: list[str] = []
    broken: list[str] = []
    for test in tests:
        pre, post = _passed(before, test), _passed(after, test)
        if len(set(pre)) > 1 or len(set(post)) > 1:
            flaky.append(test)
        elif post and all(post):
            (p2p if pre and all(pre) else f2p).append(test)
        elif pre and all(pre):
            broken.append(test)
    return Classification(tuple(f2p), tuple(p2p), tuple(flaky), tuple(broken))

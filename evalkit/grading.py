"""Pure grading: structured test report + exit code in, verdict out. No Docker, no files.

Nothing the patched code prints is read. The per-test outcomes come from evalkit's
pytest plugin (one JSON line per test phase) and are trusted only when the run is
self-consistent: the session reached its end, the plugin's exit status equals the
exit code Docker saw, and a zero exit code comes with no failures. Otherwise every
listed test counts as failed (SWE-bench #601/#620: forged output, early exits).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from evalkit.records import Execution, Resolution, Status, TaskInstance, TestOutcome, Verdict

F2P = "FAIL_TO_PASS"
P2P = "PASS_TO_PASS"

_F2P_SUCCESS = frozenset({TestOutcome.PASSED, TestOutcome.XPASSED})
# A P2P test only has to be maintained; an expected failure that still fails is fine.
_P2P_SUCCESS = frozenset({TestOutcome.PASSED, TestOutcome.XPASSED, TestOutcome.XFAILED})
_BAD = frozenset({TestOutcome.FAILED, TestOutcome.ERROR})


@dataclass
class TestReport:
    """What evalkit's pytest plugin wrote, folded to one outcome per test."""

    __test__ = False

    outcomes: dict[str, TestOutcome] = field(default_factory=dict)
    session_finished: bool = False
    exitstatus: int | None = None
    collect_errors: list[str] = field(default_factory=list)


def _fold(current: TestOutcome | None, when: str, outcome: str, xfail: bool) -> TestOutcome:
    if when == "setup":
        if outcome == "failed":
            return TestOutcome.ERROR
        if outcome == "skipped":
            return TestOutcome.XFAILED if xfail else TestOutcome.SKIPPED
        return current or TestOutcome.MISSING
    if when == "call":
        if outcome == "passed":
            return TestOutcome.XPASSED if xfail else TestOutcome.PASSED
        if outcome == "skipped":
            return TestOutcome.XFAILED if xfail else TestOutcome.SKIPPED
        return TestOutcome.FAILED
    # teardown: a failure here spoils a pass
    if outcome == "failed" and current in (TestOutcome.PASSED, TestOutcome.XPASSED, None):
        return TestOutcome.ERROR
    return current or TestOutcome.MISSING


def parse_test_report(text: str) -> TestReport:
    """Fold the plugin's JSON lines; unreadable lines are ignored, not trusted."""
    report = TestReport()
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        event = record.get("event")
        nodeid = str(record.get("nodeid", ""))
        if event == "test":
            report.outcomes[nodeid] = _fold(
                report.outcomes.get(nodeid),
                str(record.get("when")),
                str(record.get("outcome")),
                bool(record.get("xfail")),
            )
        elif event == "collected":
            report.outcomes.setdefault(nodeid, TestOutcome.MISSING)
        elif event == "collect_error":
            report.collect_errors.append(nodeid)
        elif event == "session_finish":
            report.session_finished = True
            status = record.get("exitstatus")
            report.exitstatus = status if isinstance(status, int) else None
    return report


def trust_problem(report: TestReport, execution: Execution) -> str | None:
    """Why the report cannot be believed, or None when it is self-consistent."""
    if execution.timed_out:
        return "the test run timed out"
    if not report.session_finished:
        return "the test session never finished (early exit or crash)"
    if report.exitstatus != execution.test_exit_code:
        return (
            f"pytest reported exit status {report.exitstatus} but the process exited "
            f"with {execution.test_exit_code}"
        )
    if execution.test_exit_code == 0 and any(o in _BAD for o in report.outcomes.values()):
        return "exit code 0 despite failing tests in the report"
    return None


def match_test(test_id: str, outcomes: dict[str, TestOutcome]) -> list[TestOutcome]:
    """Outcomes for a listed id: exact match, else ids it is a prefix of.

    SWE-bench's log parser cut ids at the first space, so ``test_x[a`` must find
    ``test_x[a b]``. A prefix matching several tests passes only if all of them pass.
    """
    if test_id in outcomes:
        return [outcomes[test_id]]
    return [
        outcome
        for nodeid, outcome in outcomes.items()
        if nodeid.startswith(test_id) and nodeid[len(test_id)] in " [(:"
    ]


def classify(test_ids: Iterable[str], report: TestReport, trusted: bool) -> dict[str, TestOutcome]:
    result: dict[str, TestOutcome] = {}
    for test_id in test_ids:
        found = match_test(test_id, report.outcomes)
        if not found:
            result[test_id] = TestOutcome.MISSING
            continue
        worst = next((o for o in found if o is not TestOutcome.PASSED), TestOutcome.PASSED)
        if not trusted and worst not in _BAD:
            worst = TestOutcome.MISSING  # an untrusted pass is no pass
        result[test_id] = worst
    return result


def resolution(tests: dict[str, dict[str, TestOutcome]]) -> Resolution:
    """SWE-bench's rule: FULL if every F2P and P2P test succeeds; PARTIAL if some F2P do."""

    def rate(outcomes: dict[str, TestOutcome], success: frozenset[TestOutcome]) -> float:
        if not outcomes:
            return 1.0
        return sum(o in success for o in outcomes.values()) / len(outcomes)

    f2p = rate(tests.get(F2P, {}), _F2P_SUCCESS)
    p2p = rate(tests.get(P2P, {}), _P2P_SUCCESS)
    if f2p == 1.0 and p2p == 1.0:
        return Resolution.FULL
    if 0.0 < f2p < 1.0 and p2p == 1.0:
        return Resolution.PARTIAL
    return Resolution.NO


def grade(
    instance: TaskInstance,
    execution: Execution,
    report_text: str,
    *,
    model_name_or_path: str,
    patch_sha256: str,
) -> Verdict:
    """The verdict for one executed (prediction, instance)."""
    base = Verdict(
        instance_id=instance.instance_id,
        model_name_or_path=model_name_or_path,
        status=Status.UNRESOLVED,
        patch_sha256=patch_sha256,
        apply_method=execution.apply_method,
        duration_s=round(execution.duration_s, 3),
        tampered_files=execution.tampered_files,
    )
    if execution.apply_error is not None:
        return base.model_copy(
            update={"status": Status.PATCH_FAILED, "error": execution.apply_error}
        )
    if execution.task_error is not None:
        return base.model_copy(update={"status": Status.ERROR, "error": execution.task_error})
    report = parse_test_report(report_text)
    problem = trust_problem(report, execution)
    tests = {
        F2P: classify(instance.FAIL_TO_PASS, report, trusted=problem is None),
        P2P: classify(instance.PASS_TO_PASS, report, trusted=problem is None),
    }
    level = resolution(tests)
    return base.model_copy(
        update={
            "status": Status.RESOLVED if level is Resolution.FULL else Status.UNRESOLVED,
            "resolution": level,
            "timed_out": execution.timed_out,
            "tests": tests,
            "error": problem,
        }
    )

"""Grading rules: pure functions over the plugin's report and the exit code."""

from __future__ import annotations

import json

from evalkit.grading import F2P, P2P, grade, parse_test_report, resolution
from evalkit.records import Execution, Resolution, Status, TaskInstance, TestOutcome

INSTANCE = TaskInstance(
    instance_id="o__r-1",
    repo="o/r",
    base_commit="abc1234",
    FAIL_TO_PASS=["t.py::test_new", "t.py::test_p[a"],
    PASS_TO_PASS=["t.py::test_old"],
)


def report(*events: dict[str, object], finished: int | None = 0) -> str:
    lines = [json.dumps(e) for e in events]
    if finished is not None:
        lines.append(json.dumps({"event": "session_finish", "exitstatus": finished}))
    return "\n".join(lines)


def passed(nodeid: str) -> dict[str, object]:
    return {"event": "test", "nodeid": nodeid, "when": "call", "outcome": "passed"}


def failed(nodeid: str) -> dict[str, object]:
    return {"event": "test", "nodeid": nodeid, "when": "call", "outcome": "failed"}


ALL_PASS = [passed("t.py::test_new"), passed("t.py::test_p[a b]"), passed("t.py::test_old")]


def verdict(text: str, exit_code: int | None = 0, **execution: object):  # type: ignore[no-untyped-def]
    return grade(
        INSTANCE,
        Execution(test_exit_code=exit_code, **execution),
        text,
        model_name_or_path="m",
        patch_sha256="x",
    )


def test_consistent_all_pass_report_resolves() -> None:
    v = verdict(report(*ALL_PASS))
    assert v.status is Status.RESOLVED and v.resolution is Resolution.FULL


def test_truncated_ids_match_by_prefix_like_swebench() -> None:
    v = verdict(report(*ALL_PASS))
    assert v.tests[F2P]["t.py::test_p[a"] is TestOutcome.PASSED


def test_a_prefix_is_not_a_match_without_a_boundary() -> None:
    text = report(
        passed("t.py::test_new_other"), passed("t.py::test_p[a b]"), passed("t.py::test_old")
    )
    assert verdict(text).tests[F2P]["t.py::test_new"] is TestOutcome.MISSING


def test_report_without_session_end_is_not_trusted() -> None:
    v = verdict(report(*ALL_PASS, finished=None), exit_code=0)
    assert v.status is Status.UNRESOLVED
    assert set(v.tests[F2P].values()) == {TestOutcome.MISSING}


def test_exit_code_disagreeing_with_report_is_not_trusted() -> None:
    v = verdict(report(*ALL_PASS, finished=0), exit_code=1)
    assert v.status is Status.UNRESOLVED and "exit" in (v.error or "")


def test_zero_exit_with_failures_in_report_is_not_trusted() -> None:
    v = verdict(report(passed("t.py::test_new"), failed("t.py::test_old"), finished=0), exit_code=0)
    assert v.status is Status.UNRESOLVED


def test_timeout_voids_passes() -> None:
    v = verdict(report(*ALL_PASS), exit_code=None, timed_out=True)
    assert v.status is Status.UNRESOLVED and v.timed_out


def test_skipped_and_missing_tests_count_as_failed() -> None:
    skipped = {"event": "test", "nodeid": "t.py::test_new", "when": "setup", "outcome": "skipped"}
    v = verdict(report(skipped, passed("t.py::test_p[a b]"), passed("t.py::test_old")))
    assert v.tests[F2P]["t.py::test_new"] is TestOutcome.SKIPPED
    assert v.resolution is Resolution.PARTIAL and v.status is Status.UNRESOLVED


def test_teardown_error_spoils_a_pass() -> None:
    teardown = {
        "event": "test",
        "nodeid": "t.py::test_old",
        "when": "teardown",
        "outcome": "failed",
    }
    v = verdict(report(*ALL_PASS, teardown, finished=1), exit_code=1)
    assert v.tests[P2P]["t.py::test_old"] is TestOutcome.ERROR
    assert v.resolution is Resolution.NO


def test_xfail_counts_for_p2p_but_not_f2p() -> None:
    xfail = {
        "event": "test",
        "nodeid": "t.py::test_new",
        "when": "call",
        "outcome": "skipped",
        "xfail": True,
    }
    parsed = parse_test_report(report(xfail))
    assert parsed.outcomes["t.py::test_new"] is TestOutcome.XFAILED
    assert resolution({F2P: {"a": TestOutcome.XFAILED}, P2P: {}}) is Resolution.NO
    assert resolution({F2P: {}, P2P: {"a": TestOutcome.XFAILED}}) is Resolution.FULL


def test_resolution_follows_swebench_rules() -> None:
    ok, bad = TestOutcome.PASSED, TestOutcome.FAILED
    assert resolution({F2P: {"a": ok}, P2P: {"b": ok}}) is Resolution.FULL
    assert resolution({F2P: {"a": ok, "c": bad}, P2P: {"b": ok}}) is Resolution.PARTIAL
    assert resolution({F2P: {"a": ok}, P2P: {"b": bad}}) is Resolution.NO
    assert resolution({F2P: {"a": bad}, P2P: {"b": ok}}) is Resolution.NO
    assert resolution({F2P: {}, P2P: {}}) is Resolution.FULL  # empty lists score 1


def test_garbage_lines_in_report_are_ignored() -> None:
    text = "PASSED t.py::test_new\n{not json\n[1,2]\n" + report(*ALL_PASS)
    assert verdict(text).status is Status.RESOLVED


def test_patch_failure_and_task_error_are_distinct_statuses() -> None:
    assert verdict("", apply_error="nope").status is Status.PATCH_FAILED
    v = verdict("", task_error="test patch broken")
    assert v.status is Status.ERROR and not v.infra_failure

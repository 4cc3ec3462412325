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


def phase(nodeid: str, when: str, outcome: str = "passed") -> dict[str, object]:
    return {"event": "test", "nodeid": nodeid, "when": when, "outcome": outcome}


def report(*events: dict[str, object], finished: int | None = 0) -> str:
    """The plugin's lines for ``events``, with the setup / teardown phases pytest
    would report around each call unless the test gives them explicitly."""
    explicit = {(e.get("nodeid"), e.get("when")) for e in events}
    seen: list[object] = []
    expanded: list[dict[str, object]] = []
    for event in events:
        nodeid = event.get("nodeid")
        if event.get("event") == "test" and nodeid not in seen:
            seen.append(nodeid)
            if (nodeid, "setup") not in explicit:
                expanded.append(phase(str(nodeid), "setup"))
        expanded.append(event)
    expanded += [phase(str(n), "teardown") for n in seen if (n, "teardown") not in explicit]
    lines = [json.dumps(e) for e in expanded]
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
        patch="",
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
    text = report(
        *ALL_PASS[:2], phase("t.py::test_old", "setup"), ALL_PASS[2], teardown, finished=1
    )
    v = verdict(text, exit_code=1)
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


def evidence(*connections: dict[str, object]) -> str:
    """The collector's JSON, as it hands it to the host."""
    return json.dumps({"connections": list(connections)})


def reporter(text: str, **facts: object) -> dict[str, object]:
    return {"pid": 7, "uid": 1000, "authenticated": True, "lines": text.splitlines(), **facts}


def test_collector_evidence_from_one_reporter_resolves() -> None:
    assert verdict(evidence(reporter(report(*ALL_PASS)))).status is Status.RESOLVED


def test_a_second_connection_to_the_report_channel_is_an_integrity_failure() -> None:
    forged = {"pid": 9, "uid": 1000, "authenticated": False, "lines": []}
    v = verdict(evidence(reporter(report(*ALL_PASS)), forged))
    assert v.status is Status.UNRESOLVED and v.integrity and "connected" in v.integrity[0]


def test_lines_written_after_the_test_process_died_are_an_integrity_failure() -> None:
    v = verdict(evidence(reporter(report(*ALL_PASS), late_lines=3)))
    assert v.status is Status.UNRESOLVED and "after the test process exited" in v.integrity[0]


def test_lines_after_the_end_marker_are_an_integrity_failure() -> None:
    v = verdict(evidence(reporter(report(*ALL_PASS), lines_after_end=1)))
    assert v.status is Status.UNRESOLVED and v.integrity


def test_no_reporter_at_all_is_never_resolved() -> None:
    v = verdict(evidence())
    assert v.status is Status.UNRESOLVED and "never started" in (v.error or "")


def test_two_final_outcomes_for_one_test_are_an_integrity_failure() -> None:
    text = report(*ALL_PASS) + "\n" + json.dumps(failed("t.py::test_new"))
    v = verdict(text)
    assert v.status is Status.UNRESOLVED and any("second call" in i for i in v.integrity)


def test_test_events_after_the_session_finished_are_an_integrity_failure() -> None:
    late = [phase("t.py::test_x", w) for w in ("setup", "call", "teardown")]
    text = report(*ALL_PASS) + "\n" + "\n".join(json.dumps(e) for e in late)
    assert verdict(text).integrity


def test_a_call_without_setup_and_teardown_is_an_integrity_failure() -> None:
    lines = [
        json.dumps(passed(n)) for n in ("t.py::test_new", "t.py::test_p[a b]", "t.py::test_old")
    ]
    lines.append(json.dumps({"event": "session_finish", "exitstatus": 0}))
    v = verdict("\n".join(lines))
    assert v.status is Status.UNRESOLVED and v.integrity


def test_non_zero_exit_with_every_listed_test_passing_is_an_integrity_failure() -> None:
    # The report's own exit status agrees with the process; that is not enough.
    v = verdict(report(*ALL_PASS, finished=1), exit_code=1)
    assert v.status is Status.UNRESOLVED and "although every listed test passed" in v.integrity[0]


def test_terminal_summary_disagreeing_with_the_report_is_an_integrity_failure() -> None:
    text = report(*ALL_PASS)
    honest = "===== 3 passed, 2 deselected in 0.05s ====="
    forged = "===== 2 failed, 1 passed in 0.05s ====="
    ok = grade(
        INSTANCE, Execution(test_exit_code=0), text, honest, model_name_or_path="m", patch=""
    )
    assert ok.status is Status.RESOLVED
    bad = grade(
        INSTANCE, Execution(test_exit_code=0), text, forged, model_name_or_path="m", patch=""
    )
    assert bad.status is Status.UNRESOLVED and "terminal summary" in bad.integrity[0]
    both = grade(
        INSTANCE,
        Execution(test_exit_code=0),
        text,
        forged + "\n" + honest,
        model_name_or_path="m",
        patch="",
    )
    assert both.status is Status.UNRESOLVED
    missing = grade(
        INSTANCE, Execution(test_exit_code=0), text, "ok\n", model_name_or_path="m", patch=""
    )
    assert missing.status is Status.UNRESOLVED


def test_plugin_integrity_findings_void_the_run_and_audit_events_become_flags() -> None:
    finding = json.dumps(
        {
            "event": "integrity",
            "findings": ["pytest internals replaced: x"],
            "audit": ["gc.get_objects"],
        }
    )
    v = verdict(report(*ALL_PASS) + "\n" + finding)
    assert v.status is Status.UNRESOLVED and v.integrity == ["pytest internals replaced: x"]
    assert "runtime:gc.get_objects" in v.integrity_flags


def test_a_prefix_matching_several_tests_takes_the_worst_outcome() -> None:
    xpassed = {**passed("t.py::test_p[a b]"), "xfail": True}
    f2p_fail = report(
        passed("t.py::test_new"),
        xpassed,
        failed("t.py::test_p[a c]"),
        passed("t.py::test_old"),
        finished=1,
    )
    assert verdict(f2p_fail, exit_code=1).tests[F2P]["t.py::test_p[a"] is TestOutcome.FAILED
    xfailed = {**phase("t.py::test_old[x y]", "call", "skipped"), "xfail": True}
    p2p = TaskInstance(**{**INSTANCE.model_dump(), "PASS_TO_PASS": ["t.py::test_old[x"]})
    text = report(*ALL_PASS[:2], xfailed, failed("t.py::test_old[x z]"), finished=1)
    v = grade(p2p, Execution(test_exit_code=1), text, model_name_or_path="m", patch="")
    assert v.tests[P2P]["t.py::test_old[x"] is TestOutcome.FAILED


def test_a_rerun_plugins_earlier_tries_are_not_duplicate_outcomes() -> None:
    first = [phase("t.py::test_new", w, o) for w, o in (("setup", "passed"), ("call", "rerun"))]
    first.append(phase("t.py::test_new", "teardown"))
    rest = report(*ALL_PASS)
    text = "\n".join(json.dumps(e) for e in first) + "\n" + rest
    assert verdict(text).status is Status.RESOLVED


def test_the_quiet_summary_of_pytest_q_is_read_too() -> None:
    quiet = "...\n3 passed, 2 deselected in 0.05s\n"
    ok = grade(
        INSTANCE,
        Execution(test_exit_code=0),
        report(*ALL_PASS),
        quiet,
        model_name_or_path="m",
        patch="",
    )
    assert ok.status is Status.RESOLVED

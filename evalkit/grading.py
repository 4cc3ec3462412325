"""Pure grading: evidence + exit code + terminal output in, verdict out. No Docker, no files.

The per-test outcomes come from evalkit's pytest plugin, one JSON line per test phase,
as received by evalkit's collector (another user than the tests, reading a socket
live). They are trusted only when the run is self-consistent: one authenticated
reporter and nothing from anyone else, nothing after the session's end or after the
test process died, every test's setup / call / teardown exactly once, the plugin's
exit status equal to the exit code Docker saw, a non-zero exit never with every listed
test passing, and pytest's own terminal summary agreeing with the counts. A run that
fails any of these is never ``resolved`` and says why in ``integrity`` (SWE-bench
#601/#620: forged output, early exits).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from evalkit.integrity import scan_patch
from evalkit.records import Execution, Resolution, Status, TaskInstance, TestOutcome, Verdict
from evalkit.runners import get_runner

F2P = "FAIL_TO_PASS"
P2P = "PASS_TO_PASS"

_F2P_SUCCESS = frozenset({TestOutcome.PASSED, TestOutcome.XPASSED})
# A P2P test only has to be maintained; an expected failure that still fails is fine.
_P2P_SUCCESS = frozenset({TestOutcome.PASSED, TestOutcome.XPASSED, TestOutcome.XFAILED})
_BAD = frozenset({TestOutcome.FAILED, TestOutcome.ERROR})
# Best to worst: a prefix matching several tests takes the worst of them.
_SEVERITY = [
    TestOutcome.PASSED,
    TestOutcome.XPASSED,
    TestOutcome.XFAILED,
    TestOutcome.SKIPPED,
    TestOutcome.MISSING,
    TestOutcome.FAILED,
    TestOutcome.ERROR,
]


@dataclass
class TestReport:
    """What evalkit's pytest plugin wrote, folded to one outcome per test."""

    __test__ = False

    outcomes: dict[str, TestOutcome] = field(default_factory=dict)
    session_finished: bool = False
    exitstatus: int | None = None
    collect_errors: list[str] = field(default_factory=list)
    started: bool = False
    """Whether the reporter connected at all (the runner got as far as pytest)."""
    integrity: list[str] = field(default_factory=list)
    """Why the evidence contradicts itself: such a run is never resolved."""
    audit: list[str] = field(default_factory=list)
    """Sensitive runtime events the runner's audit hook saw (flags, not verdicts)."""
    counts: Counter[str] = field(default_factory=Counter)
    """Per-category counts the way pytest's terminal summary counts them."""
    runner: str = "pytest"
    """Which runner's reporter sent the evidence (its first line; see :mod:`evalkit.runners`)."""


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


def report_lines(text: str) -> tuple[list[str], list[str], bool]:
    """The reporter's lines from the collector's evidence, findings about the channel,
    and whether a reporter connected. Plain JSON lines (runs made before the collector)
    are read as they are."""
    try:
        evidence = json.loads(text) if text.lstrip().startswith('{"connections"') else None
    except json.JSONDecodeError:
        evidence = None
    if not isinstance(evidence, dict):
        return text.splitlines(), [], bool(text.strip())
    findings: list[str] = []
    connections = [c for c in evidence.get("connections", []) if isinstance(c, dict)]
    reporters = [c for c in connections if c.get("authenticated")]
    if len(connections) > 1 or len(reporters) != len(connections):
        findings.append(
            f"{len(connections)} processes connected to the report channel (one is expected)"
        )
    lines: list[str] = []
    for conn in reporters[:1]:
        lines = [str(line) for line in conn.get("lines", [])]
        if conn.get("late_lines"):
            findings.append(
                f"{conn['late_lines']} report line(s) arrived after the test process exited"
            )
        if conn.get("lines_after_end"):
            findings.append(f"{conn['lines_after_end']} report line(s) arrived after the end")
        if conn.get("truncated"):
            findings.append("the report exceeded its size cap")
    return lines, findings, bool(reporters)


def _category(when: str, outcome: str, xfail: bool) -> str | None:
    """pytest's terminal-summary category for one phase report (None: not counted)."""
    if outcome == "failed":
        return "failed" if when == "call" else "error"
    if outcome == "skipped":
        return "xfailed" if xfail else "skipped"
    if when == "call":
        return "xpassed" if xfail else "passed"
    return None


def parse_test_report(text: str) -> TestReport:
    """Fold the plugin's lines, checking them against each other as they come."""
    report = TestReport()
    lines, report.integrity, report.started = report_lines(text)
    phases: dict[str, list[str]] = {}
    rerunning: set[str] = set()
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        event = record.get("event")
        nodeid = str(record.get("nodeid", ""))
        if event in ("test", "collected", "collect_error") and report.session_finished:
            report.integrity.append(f"test events after the session finished ({nodeid})")
        if event == "test":
            when, outcome = str(record.get("when")), str(record.get("outcome"))
            # pytest-rerunfailures: a failed try is reported as "rerun", then the test
            # runs again from setup; only the last try counts.
            if outcome == "rerun":
                rerunning.add(nodeid)
                continue
            if nodeid in rerunning:
                if when != "setup":
                    continue
                rerunning.discard(nodeid)
                phases[nodeid] = []
            seen = phases.setdefault(nodeid, [])
            if when in seen or when not in _PHASES[get_runner(report.runner).phased]:
                report.integrity.append(f"{nodeid}: a second {when} report")
            seen.append(when)
            category = _category(when, outcome, bool(record.get("xfail")))
            if category:
                report.counts[category] += 1
            report.outcomes[nodeid] = _fold(
                report.outcomes.get(nodeid), when, outcome, bool(record.get("xfail"))
            )
        elif event == "collected":
            report.outcomes.setdefault(nodeid, TestOutcome.MISSING)
        elif event == "collect_error":
            report.collect_errors.append(nodeid)
            report.counts["error"] += 1
        elif event == "session_finish":
            if report.session_finished:
                report.integrity.append("the session finished twice")
            report.session_finished = True
            status = record.get("exitstatus")
            report.exitstatus = status if isinstance(status, int) else None
        elif event == "runner" and not phases and not report.outcomes:
            report.runner = str(record.get("name", "pytest"))
        elif event == "integrity":
            report.integrity += [str(f) for f in record.get("findings", [])][:20]
            report.audit += [str(a) for a in record.get("audit", [])][:20]
    if report.session_finished and get_runner(report.runner).phased:
        for nodeid, seen in phases.items():
            ran_call = "call" in seen
            if (
                seen[:1] != ["setup"]
                or seen[-1:] != ["teardown"]
                or (not ran_call and report.outcomes.get(nodeid) in (TestOutcome.PASSED,))
            ):
                report.integrity.append(f"{nodeid}: phases {seen} are not setup, call, teardown")
    return report


# "==== 2 failed, 3 passed in 0.12s ====", or without the rule under -q.
_SUMMARY = re.compile(
    r"^(?:=+ )?(?P<body>\d+ \w+(?:, \d+ \w+)*) in [\d.]+s(?: \([^)]*\))?(?: =+)?$",
    re.MULTILINE,
)
_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?)")


def terminal_summaries(output: str) -> list[Counter[str]]:
    """Every final summary line pytest (or anything imitating it) printed."""
    found = []
    for match in _SUMMARY.finditer(output):
        counts: Counter[str] = Counter()
        for number, word in _COUNT.findall(match.group("body")):
            counts["error" if word.startswith("error") else word] += int(number)
        found.append(counts)
    return found


_PHASES = {True: ("setup", "call", "teardown"), False: ("call",)}


def summary_problem(report: TestReport, output: str) -> str | None:
    """Whether the runner's own terminal summary contradicts the structured report."""
    if report.runner != "pytest":
        return get_runner(report.runner).summary_problem(report, output)
    summaries = terminal_summaries(output)
    if not summaries:
        return "pytest printed no final summary"
    if any(s != summaries[0] for s in summaries[1:]):
        return "pytest's final summary was printed more than once, with different counts"
    for key in ("passed", "failed", "error"):
        if summaries[0][key] != report.counts[key]:
            return (
                f"the terminal summary says {summaries[0][key]} {key} but the report has "
                f"{report.counts[key]}"
            )
    return None


def trust_problem(report: TestReport, execution: Execution) -> str | None:
    """Why the report cannot be believed, or None when it is self-consistent."""
    if execution.timed_out:
        return "the test run timed out"
    if execution.sandbox_error:
        return execution.sandbox_error
    if not report.started:
        return "the test session never started (the runner failed before pytest ran)"
    if not report.session_finished:
        return "the test session never finished (early exit or crash)"
    if report.exitstatus != execution.test_exit_code:
        return (
            f"{report.runner} reported exit status {report.exitstatus} but the process exited "
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
        worst = max(found, key=_SEVERITY.index)
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
    output: str = "",
    *,
    model_name_or_path: str,
    patch: str,
    selected: bool = True,
) -> Verdict:
    """The verdict for one executed (prediction, instance).

    ``selected``: the run selected exactly the listed tests (not whole files), so a
    non-zero exit means a listed test did not pass.
    """
    from evalkit.patch import sha256_text

    base = Verdict(
        instance_id=instance.instance_id,
        model_name_or_path=model_name_or_path,
        status=Status.UNRESOLVED,
        patch_sha256=sha256_text(patch),
        apply_method=execution.apply_method,
        duration_s=round(execution.duration_s, 3),
        tampered_files=execution.tampered_files,
        integrity_flags=scan_patch(patch),
    )
    if execution.apply_error is not None:
        return base.model_copy(
            update={"status": Status.PATCH_FAILED, "error": execution.apply_error}
        )
    if execution.task_error is not None:
        return base.model_copy(update={"status": Status.ERROR, "error": execution.task_error})
    report = parse_test_report(report_text)
    integrity = list(dict.fromkeys(report.integrity))
    problem = trust_problem(report, execution)
    if problem is None and not integrity:
        listed = [*instance.FAIL_TO_PASS, *instance.PASS_TO_PASS]
        all_pass = all(o in _P2P_SUCCESS for o in classify(listed, report, trusted=True).values())
        if selected and execution.test_exit_code not in (0, None) and all_pass:
            integrity.append(
                f"{report.runner} exited {execution.test_exit_code} although every listed test "
                "passed"
            )
        if output and (mismatch := summary_problem(report, output)):
            integrity.append(mismatch)
    trusted = problem is None and not integrity
    tests = {
        F2P: classify(instance.FAIL_TO_PASS, report, trusted=trusted),
        P2P: classify(instance.PASS_TO_PASS, report, trusted=trusted),
    }
    level = resolution(tests)
    if integrity and problem is None:
        problem = f"integrity: {integrity[0]}"
    return base.model_copy(
        update={
            "status": Status.RESOLVED if level is Resolution.FULL else Status.UNRESOLVED,
            "resolution": level,
            "timed_out": execution.timed_out,
            "tests": tests,
            "error": problem,
            "integrity": integrity,
            "integrity_flags": sorted(
                {*base.integrity_flags, *(f"runtime:{a}" for a in report.audit)}
            ),
        }
    )

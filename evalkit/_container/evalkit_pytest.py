"""pytest plugin evalkit loads with ``-p evalkit_pytest``: selection and a structured report.

Runs inside the sandbox. It selects exactly the listed tests (unique-prefix match for
ids that SWE-bench's log parser cut at a space) and writes one JSON line per test
phase, then a closing line with the exit status. The harness grades from this file
and the process exit code together, never from stdout.
"""

from __future__ import annotations

import json
import os

_report = None
_wanted: list[str] = []


def pytest_configure(config):  # type: ignore[no-untyped-def]
    global _report, _wanted
    path = os.environ.get("EVALKIT_REPORT")
    if path:
        _report = open(path, "a", encoding="utf-8", buffering=1)
    select = os.environ.get("EVALKIT_SELECT")
    if select and os.path.exists(select):
        with open(select, encoding="utf-8") as fh:
            _wanted = [line.rstrip("\n") for line in fh if line.strip()]


def _emit(record):  # type: ignore[no-untyped-def]
    if _report is not None:
        _report.write(json.dumps(record) + "\n")


def _selected(nodeid):  # type: ignore[no-untyped-def]
    for want in _wanted:
        if nodeid == want or (nodeid.startswith(want) and nodeid[len(want)] in " [(:"):
            return True
    return False


def pytest_collection_modifyitems(session, config, items):  # type: ignore[no-untyped-def]
    if not _wanted:
        return
    keep = [item for item in items if _selected(item.nodeid)]
    drop = [item for item in items if not _selected(item.nodeid)]
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep
    for item in keep:
        _emit({"event": "collected", "nodeid": item.nodeid})


def pytest_collectreport(report):  # type: ignore[no-untyped-def]
    if report.failed:
        _emit({"event": "collect_error", "nodeid": report.nodeid})


def pytest_runtest_logreport(report):  # type: ignore[no-untyped-def]
    _emit(
        {
            "event": "test",
            "nodeid": report.nodeid,
            "when": report.when,
            "outcome": report.outcome,
            "xfail": hasattr(report, "wasxfail"),
            "duration": round(getattr(report, "duration", 0.0), 4),
        }
    )


def pytest_sessionfinish(session, exitstatus):  # type: ignore[no-untyped-def]
    _emit({"event": "session_finish", "exitstatus": int(exitstatus)})
    if _report is not None:
        _report.flush()

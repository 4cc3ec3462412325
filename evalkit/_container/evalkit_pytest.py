"""pytest plugin evalkit loads from its trusted runner: selection and a structured report.

Runs inside the sandbox. It selects exactly the listed tests (unique-prefix match for
ids that SWE-bench's log parser cut at a space) and sends one JSON line per test phase
over a socket to evalkit's collector, which runs as another user and hands the lines
straight to the host. Nothing is written to a file the test user could rewrite.

The runner connects and snapshots pytest's reporting machinery *before* any checkout
code is imported; at session end the plugin checks that the machinery is still the
one it snapshotted and that no checkout code registered reporting hooks, and sends what
it found. A patch can still lie from inside the process; these checks make it work for
it, and the host's cross-checks (exit code, terminal summary, late writers) catch the
usual ways.
"""

from __future__ import annotations

import contextlib
import json
import os

_sock = None
_wanted: list[str] = []
_snapshot: dict[str, object] = {}
_audit: set[str] = set()
_checkout = "/testbed"
_patched: frozenset[str] = frozenset()

# Reporting machinery whose replacement would let code rewrite outcomes.
_WATCHED = (
    ("_pytest.runner", "call_and_report"),
    ("_pytest.runner", "runtestprotocol"),
    ("_pytest.runner", "call_runtest_hook"),
    ("_pytest.runner", "pytest_runtest_makereport"),
    ("_pytest.reports", "TestReport"),
    ("_pytest.terminal", "TerminalReporter"),
    ("_pytest.main", "wrap_session"),
)
_REPORT_HOOKS = (
    "pytest_runtest_makereport",
    "pytest_runtest_logreport",
    "pytest_report_teststatus",
    "pytest_runtest_protocol",
    "pytest_runtest_call",
    "pytest_collection_modifyitems",
    "pytest_sessionfinish",
    "pytest_terminal_summary",
)


def connect(sock, nonce, wanted, checkout, patched):  # type: ignore[no-untyped-def]
    """Called by the runner before the checkout is importable."""
    global _sock, _wanted, _checkout, _patched
    import sys

    _sock = sock
    _wanted = list(wanted)
    _checkout = checkout
    _patched = frozenset(patched)
    _sock.sendall((json.dumps({"hello": nonce}) + "\n").encode())
    for module, name in _WATCHED:
        mod = sys.modules.get(module)
        if mod is None:
            mod = __import__(module, fromlist=[name])
        _snapshot[module + "." + name] = getattr(mod, name, None)
    from _pytest.reports import TestReport

    _snapshot["TestReport.from_item_and_call"] = TestReport.__dict__.get("from_item_and_call")
    _snapshot["_emit"] = _emit
    _snapshot["sendall"] = type(_sock).sendall


_AUDITED = frozenset(
    {
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
        "ctypes.addressof",
        "ctypes.string_at",
        "ctypes.PyObj_FromPtr",
        "ctypes.cdata",
        "sys.setprofile",
        "sys.settrace",
        "sys._getframe",
        "sys._current_frames",
        "socket.__new__",
        "sys.addaudithook",
        "open",
        "os.listdir",
        "os.scandir",
        "compile",
    }
)
# Done by code the model patch wrote, these only serve a forgery: walking the heap to
# find the runner's objects, poking memory, adding audit hooks, listing or opening the
# process's own descriptors. They void the run; the rest are flags.
_VOIDING = frozenset(
    {
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
        "ctypes.addressof",
        "ctypes.string_at",
        "ctypes.PyObj_FromPtr",
        "ctypes.cdata",
        "sys.addaudithook",
        "sys._current_frames",
    }
)
_busy = False
_voided: list[str] = []


def audit_hook(event, args):  # type: ignore[no-untyped-def]
    global _busy
    if _busy or event not in _AUDITED:
        return
    if event in ("open", "os.listdir", "os.scandir"):
        target = str(args[0]) if args else ""
        if not target.startswith(("/proc/self/fd", "/proc/self/mem", "/proc/%d/" % os.getpid())):
            return
    if event == "compile":
        # Code compiled under another file's name hides where a hook came from.
        filename = str(args[1]) if len(args) > 1 else ""
        if not filename.startswith("/") or filename.startswith(_checkout.rstrip("/") + "/"):
            return
    _busy = True
    try:
        import sys

        frame = sys._getframe(1)
        where = None
        for _ in range(3):  # the caller, or the stdlib function it went through
            if frame is None:
                break
            where = _patched_file(frame.f_code.co_filename)
            if where:
                break
            frame = frame.f_back
        if where:
            label = "%s from %s" % (event if event != "open" else "open /proc/self", where)
            if (event in _VOIDING or event in ("open", "os.listdir", "os.scandir", "compile")) and (
                label not in _voided
            ):
                _voided.append(label)
                # Sent at once: the hook runs before the call returns, so code that
                # goes on to forge the report and exit hard cannot take this back.
                _emit({"event": "integrity", "findings": ["patched code did " + label]})
            _audit.add(label)
        elif event not in ("open", "os.listdir", "os.scandir", "sys._getframe", "socket.__new__"):
            _audit.add(event)
    finally:
        _busy = False


def _patched_file(filename):  # type: ignore[no-untyped-def]
    root = _checkout.rstrip("/") + "/"
    if not filename.startswith(root):
        return None
    relative = os.path.normpath(filename[len(root) :])
    return relative if relative in _patched else None


def _emit(record):  # type: ignore[no-untyped-def]
    if _sock is not None:
        with contextlib.suppress(OSError):
            _sock.sendall((json.dumps(record) + "\n").encode())


def _selected(nodeid):  # type: ignore[no-untyped-def]
    for want in _wanted:
        if nodeid == want or (nodeid.startswith(want) and nodeid[len(want)] in " [(:"):
            return True
    return False


def pytest_collection_modifyitems(session, config, items):  # type: ignore[no-untyped-def]
    if not _wanted:
        for item in items:
            _emit({"event": "collected", "nodeid": item.nodeid})
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


def _from_patch(func):  # type: ignore[no-untyped-def]
    """The file a hook came from, when it is one the model patch wrote."""
    code = getattr(func, "__code__", None)
    return _patched_file(getattr(code, "co_filename", "") or "")


def _integrity(session):  # type: ignore[no-untyped-def]
    import sys

    findings = []
    for module, name in _WATCHED:
        mod = sys.modules.get(module)
        if getattr(mod, name, None) is not _snapshot.get(module + "." + name):
            findings.append("pytest internals replaced: %s.%s" % (module, name))
    from _pytest.reports import TestReport

    if TestReport.__dict__.get("from_item_and_call") is not _snapshot.get(
        "TestReport.from_item_and_call"
    ):
        findings.append("pytest internals replaced: TestReport.from_item_and_call")
    if globals().get("_emit") is not _snapshot.get("_emit"):
        findings.append("evalkit's report plugin was modified")
    if _sock is not None and type(_sock).sendall is not _snapshot.get("sendall"):
        findings.append("the report socket was modified")
    hook = session.config.hook
    for name in _REPORT_HOOKS:
        caller = getattr(hook, name, None)
        if caller is None:
            continue
        for impl in caller.get_hookimpls():
            where = _from_patch(impl.function)
            if where:
                findings.append("reporting hook %s registered from patched file %s" % (name, where))
    return findings


def pytest_sessionfinish(session, exitstatus):  # type: ignore[no-untyped-def]
    _emit({"event": "session_finish", "exitstatus": int(exitstatus)})
    _emit({"event": "integrity", "findings": _integrity(session), "audit": sorted(_audit)})


def pytest_unconfigure(config):  # type: ignore[no-untyped-def]
    global _sock
    _emit({"event": "end"})
    if _sock is not None:
        # Wait for the collector's acknowledgement: it has then read every line while this
        # process is alive (a line it reads after the writer died counts as late).
        with contextlib.suppress(OSError):
            _sock.settimeout(5)
            got = b""
            while b"end\n" not in got:
                chunk = _sock.recv(64)
                if not chunk:
                    break
                got += chunk
        with contextlib.suppress(OSError):
            _sock.close()
        _sock = None

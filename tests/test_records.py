"""Record files survive interruption and corruption: atomic writes, append-only lines,
torn-line repair, unreadable lines reported and kept, newer schemas refused, one run
per live process, and directory names no model name or instance id can break."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from evalkit.errors import UsageError
from evalkit.mining._candidates import Candidate
from evalkit.records import (
    Execution,
    ModelSummary,
    NewerRecord,
    Record,
    RejectedLine,
    RunDir,
    RunInUse,
    RunLockInfo,
    RunManifest,
    Status,
    Verdict,
    append_jsonl,
    compact_verdicts,
    current_schema,
    invocation_id,
    keep_aside,
    path_component,
    read_model,
    read_verdicts,
    repair_jsonl,
    scan_verdicts,
    write_atomic,
)

ROOT = Path(__file__).resolve().parents[1]


def v(model: str, status: Status = Status.RESOLVED, instance: str = "i") -> Verdict:
    return Verdict(instance_id=instance, model_name_or_path=model, status=status)


def line(verdict: Verdict) -> bytes:
    return verdict.model_dump_json().encode() + b"\n"


# --- append-only lines ----------------------------------------------------------


def test_torn_last_line_is_dropped_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    append_jsonl(path, [v("a")])
    with path.open("a") as fh:
        fh.write('{"schema_version": 1, "instance_id": "i", "mod')  # killed mid-write
    assert [x.model_name_or_path for x in read_verdicts(path)] == ["a"]  # silently skipped
    repair_jsonl(path)
    append_jsonl(path, [v("b")])
    assert [x.model_name_or_path for x in read_verdicts(path)] == ["a", "b"]
    assert len(path.read_text().splitlines()) == 2


def test_a_complete_last_line_missing_only_its_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(line(v("a")) + line(v("b")).rstrip(b"\n"))
    repair_jsonl(path)
    append_jsonl(path, [v("c")])
    assert [x.model_name_or_path for x in read_verdicts(path)] == ["a", "b", "c"]


def test_latest_line_per_model_and_instance_wins(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    append_jsonl(path, [v("a", Status.ERROR), v("a", Status.RESOLVED)])
    assert [x.status for x in read_verdicts(path)] == [Status.RESOLVED]


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    write_atomic(tmp_path / "x.json", "{}")
    write_atomic(tmp_path / "x.json", "[]")
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
    assert (tmp_path / "x.json").read_text() == "[]"


# --- unreadable lines: reported with file and line, kept ---------------------------

NEWER = json.dumps(
    {"schema_version": 99, "instance_id": "i", "model_name_or_path": "z", "status": "new"}
).encode()
BAD_LINES = {
    b"{oops": "not valid JSON",
    b'{"instance_id": "i", "model_name_or_path": "\xff\xfe"}': "not valid UTF-8",
    b'{"hello": "world"}': "not a Verdict: missing field 'instance_id'",
    b'["a", "list"]': "not a Verdict",
    json.dumps({**v("x").model_dump(mode="json"), "status": "mystery"}).encode(): (
        "not a Verdict: field 'status'"
    ),
    NEWER: "written by a newer evalkit (Verdict schema 99; this evalkit reads up to 1): "
    "upgrade evalkit",
}


@pytest.mark.parametrize(
    "bad", list(BAD_LINES), ids=[r[:20].decode(errors="replace") for r in BAD_LINES]
)
def test_an_unreadable_line_anywhere_but_torn_at_the_end_is_reported_with_its_line(
    tmp_path: Path, bad: bytes
) -> None:
    for position in (1, 2, 3):  # first, middle, and last (with its newline: not torn)
        path = tmp_path / f"results-{position}.jsonl"
        good = [line(v("a")), line(v("b"))]
        good.insert(position - 1, bad + b"\n")
        path.write_bytes(b"".join(good))
        scan = scan_verdicts(path)
        assert [x.model_name_or_path for x in scan.verdicts] == ["a", "b"]
        assert [(b.line, b.raw) for b in scan.bad] == [(position, bad)]
        assert str(scan.bad[0]).startswith(f"{path}:{position}: {BAD_LINES[bad]}")
        with pytest.raises(UsageError) as err:
            read_verdicts(path)  # the strict reader (report, regrade) refuses
        assert str(err.value).startswith(f"{path}:{position}: {BAD_LINES[bad]}")
        assert "\n" not in str(err.value)


def test_complete_json_that_is_not_a_verdict_is_not_mistaken_for_a_torn_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(line(v("a")) + b'{"not": "a verdict"}')  # no newline, but complete
    assert [b.line for b in scan_verdicts(path).bad] == [2]


def test_compaction_drops_only_superseded_lines_and_keeps_unreadable_ones_byte_for_byte(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.jsonl"
    garbage = [b"\xff\xfe not utf-8", NEWER, b'{"valid": "json"}']
    path.write_bytes(
        line(v("a", Status.ERROR))
        + garbage[0]
        + b"\n"
        + line(v("b"))
        + garbage[1]
        + b"\n"
        + line(v("a", Status.RESOLVED))
        + garbage[2]
        + b"\n"
        + b'{"torn": '
    )
    scan = compact_verdicts(path)
    assert {(x.model_name_or_path, x.status) for x in scan.verdicts} == {
        ("a", Status.RESOLVED),
        ("b", Status.RESOLVED),
    }
    kept = path.read_bytes().split(b"\n")
    assert kept[-1] == b"" and all(g in kept for g in garbage)
    assert len(kept) - 1 == 5  # the superseded "a" line and the torn tail are gone
    compact_verdicts(path)
    assert path.read_bytes().split(b"\n") == kept  # nothing more to drop


def test_unreadable_lines_are_copied_aside_once_with_their_exact_bytes(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    bad = b'{"instance_id": "\xff"}'
    path.write_bytes(line(v("a")) + bad + b"\n")
    dest = tmp_path / "results.rejected.jsonl"
    assert len(keep_aside(scan_verdicts(path).bad, dest)) == 1
    assert keep_aside(scan_verdicts(path).bad, dest) == []  # met again: not copied twice
    (record,) = [RejectedLine.model_validate_json(x) for x in dest.read_text().splitlines()]
    assert base64.b64decode(record.raw_base64) == bad
    assert (record.source, record.line, record.reason) == (
        "results.jsonl",
        2,
        "not valid UTF-8 (byte 18)",
    )
    assert path.read_bytes().endswith(bad + b"\n")  # and it stays where it was


def test_a_results_path_that_is_a_directory_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.mkdir()
    for read in (scan_verdicts, read_verdicts, compact_verdicts, repair_jsonl):
        with pytest.raises(UsageError, match=r"results.jsonl: is a directory"):
            read(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"run_id": "x", "evalkit_ver', "not valid JSON"),
        (b'{"run_id": "\xff"}', "not valid UTF-8 (byte 13)"),
        (b'{"run_id": "x"}', "not a RunManifest: missing field 'evalkit_version'"),
        (b'{"schema_version": 7}', "written by a newer evalkit (RunManifest schema 7"),
    ],
)
def test_a_corrupt_whole_file_record_is_a_one_line_error_naming_it(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "run.json"
    path.write_bytes(content)
    with pytest.raises(UsageError) as err:
        read_model(path, RunManifest)
    assert str(err.value).startswith(f"{path}: {message}") and "\n" not in str(err.value)


# --- schema versions, one per record -----------------------------------------------

SUMMARY_KEYS = [
    "total",
    "submitted",
    "completed",
    "resolved",
    "unresolved",
    "empty_patch",
    "error",
    "patch_failed",
    "infra_failure",
    "timed_out",
]
MINIMAL: dict[type[Record], dict[str, Any]] = {
    Execution: {},
    Verdict: {"instance_id": "i", "model_name_or_path": "m", "status": "resolved"},
    ModelSummary: {
        **{f"{k}_instances": 0 for k in SUMMARY_KEYS},
        **{f"{k}_ids": [] for k in SUMMARY_KEYS if k != "total"},
        "tampered_ids": [],
    },
    RunManifest: {
        "run_id": "r",
        "evalkit_version": "0",
        "tasks_dir": "t",
        "tasks_sha256": "",
        "predictions": "p",
        "timeout_s": 0,
        "workers": 1,
        "created_at": "",
    },
    Candidate: {"fix_commit": "f", "base_commit": "b", "title": "t"},
    RejectedLine: {
        "source": "s",
        "line": 1,
        "reason": "r",
        "sha256": "",
        "raw_base64": "",
        "text": "",
        "found_at": "",
    },
    RunLockInfo: {"pid": 1, "invocation_id": "x", "host": "h", "started_at": ""},
}


@pytest.mark.parametrize("model", list(MINIMAL), ids=lambda m: m.__name__)
def test_every_record_refuses_a_newer_version_of_itself_and_reads_its_own(
    model: type[Record],
) -> None:
    current = current_schema(model)
    assert model.model_validate(MINIMAL[model]).schema_version == current  # written as current
    for version in range(1, current + 1):
        model.model_validate_json(json.dumps({**MINIMAL[model], "schema_version": version}))
    with pytest.raises(NewerRecord, match=rf"{model.__name__} schema {current + 1}.*upgrade"):
        model.model_validate_json(json.dumps({**MINIMAL[model], "schema_version": current + 1}))


def test_each_record_has_its_own_version() -> None:
    # The run layout changed (hashed directory names) without touching Verdict's meaning.
    assert current_schema(RunManifest) == 2 and current_schema(Verdict) == 1


# --- directory names ----------------------------------------------------------------

HOSTILE = [
    "acme/agent",
    "acme__agent",
    "acme_agent",
    "Acme/Agent",
    "",
    ".",
    "..",
    "../../etc/passwd",
    "a/../b",
    "-rf",
    ".hidden",
    "x" * 300,
    "x" * 301,
    "é" * 200,
    "e\u0301",  # the same letter as é, decomposed
    "é",
    "名前/モデル",
    "\U0001f600",
    "line\nbreak",
    "nul\x00byte",
    "back\\slash",
    "trailing.",
    "space name",
    "\ud800 lone surrogate",
    "CON",
    "org/model-v1.2",
]


def _check_component(name: str, component: str, root: Path) -> None:
    assert component not in ("", ".", "..") and not component.startswith((".", "-"))
    assert "/" not in component and "\x00" not in component and component.isascii()
    assert len(component.encode()) <= 77
    (root / component).mkdir()  # the filesystem takes it as one directory
    assert [p.name for p in root.iterdir()] == [component]


def test_directory_names_are_single_bounded_components_for_hostile_names(
    tmp_path: Path,
) -> None:
    for index, name in enumerate(HOSTILE):
        root = tmp_path / str(index)
        root.mkdir()
        _check_component(name, path_component(name), root)


def test_directory_names_are_injective_and_stay_readable() -> None:
    names = [*HOSTILE, *(f"model-{i}" for i in range(5000)), *(f"m/{i}" for i in range(5000))]
    assert len({path_component(n) for n in names}) == len(names)
    assert path_component("acme/agent") != path_component("acme__agent")
    assert path_component("acme/agent").startswith("acme__agent-")
    assert path_component("org/model-v1.2") == path_component("org/model-v1.2")  # stable


def test_run_dir_gives_two_models_with_look_alike_names_separate_unit_dirs(
    tmp_path: Path,
) -> None:
    run = RunDir(tmp_path / "r")
    a, b = run.unit("acme/agent", "i-1"), run.unit("acme__agent", "i-1")
    assert a != b and a.parent.parent == b.parent.parent == run.path
    assert run.unit("m", "../../x").parent.parent == run.path


def test_hypothesis_directory_names_property(tmp_path: Path) -> None:
    import hypothesis
    import hypothesis.strategies as st

    @hypothesis.settings(max_examples=300, deadline=None)
    @hypothesis.given(st.text(), st.text())
    def check(a: str, b: str) -> None:
        with tempfile.TemporaryDirectory(dir=tmp_path) as root:
            _check_component(a, path_component(a), Path(root))
        if a != b:
            assert path_component(a) != path_component(b)

    check()


@pytest.mark.parametrize("run_id", ["", ".", "..", "a/b", "-rf", ".x", "x\n", "x" * 129, "é"])
def test_run_ids_that_are_not_one_plain_name_are_refused(tmp_path: Path, run_id: str) -> None:
    with pytest.raises(UsageError, match="invalid run id"):
        RunDir.of(tmp_path, run_id)
    assert RunDir.of(tmp_path, "nightly-2026.12_01").path == tmp_path / "nightly-2026.12_01"


# --- one live process per run --------------------------------------------------------

HOLD = """
import sys, time
from pathlib import Path
from evalkit.records import RunDir
lock = RunDir(Path(sys.argv[1])).lock()
print(lock.info.pid, lock.info.invocation_id, flush=True)
time.sleep(120)
"""


def hold_lock(run: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    pid, invocation = proc.stdout.readline().split()
    assert int(pid) == proc.pid
    return proc, invocation


def test_a_run_held_by_a_live_process_is_refused_and_a_killed_ones_taken_over(
    tmp_path: Path,
) -> None:
    run = RunDir(tmp_path / "r")
    proc, theirs = hold_lock(run.path)
    try:
        with pytest.raises(RunInUse, match=rf"in use by another evalkit \(pid {proc.pid} on "):
            run.lock()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert theirs != invocation_id()  # each process labels its own sandboxes
    with run.lock() as lock:  # the dead holder's lock is stale: taken over
        assert lock.previous is not None and lock.previous.pid == proc.pid
        assert lock.previous.invocation_id == theirs
        assert lock.info.pid == os.getpid() and lock.info.invocation_id == invocation_id()
        with pytest.raises(RunInUse):
            run.lock()  # also within one process
    with run.lock() as lock:
        assert lock.previous is None  # a clean release leaves no stale holder


def test_a_run_path_that_is_a_file_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "r").write_text("")
    with pytest.raises(UsageError, match="exists and is not a directory"):
        RunDir(tmp_path / "r").lock()

"""Typed records that evalkit reads and writes, the layout of a run, and its file names.

Every record written to disk carries its own ``schema_version`` (the field's default is
the newest version this evalkit writes and reads); bump it when a field's meaning
changes. A reader meeting a newer version stops with a one-line :class:`UsageError`
saying to upgrade, rather than misreading it. Writes are atomic (temp file +
``os.replace``) and JSONL files are append-only, so an interrupted run never loses or
half-writes a finished result; a line that cannot be read is reported and kept, never
dropped (only a torn last line, left by a killed writer, is).
"""

from __future__ import annotations

import base64
import fcntl
import functools
import hashlib
import json
import os
import re
import socket
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from evalkit.errors import UsageError

# --- file names, named once -------------------------------------------------
INSTANCES_FILE = "instances.jsonl"
CANDIDATES_FILE = "candidates.jsonl"
ENV_SPEC_FILE = "evalkit.toml"
GOLD_CHECK_FILE = "gold-check.json"
REPOS_DIR = "repos"
RUN_MANIFEST_FILE = "run.json"
RESULTS_FILE = "results.jsonl"
REPORT_FILE = "report.json"
PATCH_FILE = "patch.diff"
EVAL_SCRIPT_FILE = "eval.sh"
TEST_OUTPUT_FILE = "test_output.txt"
TEST_REPORT_FILE = "test_report.jsonl"
EXECUTION_FILE = "execution.json"
VERDICT_FILE = "verdict.json"
RESULTS_REJECTED_FILE = "results.rejected.jsonl"
"""Copies of ``results.jsonl`` lines that could not be read (they also stay in place)."""
RUN_LOCK_FILE = "run.lock"
IMAGES_DIR = "images"


# --- schema versions --------------------------------------------------------


class NewerRecord(UsageError):
    """A record written by a newer evalkit: reading it with this one could misread it."""

    def __init__(self, kind: str, found: int, supported: int):
        self.kind, self.found, self.supported = kind, found, supported
        super().__init__(
            f"written by a newer evalkit ({kind} schema {found}; this evalkit reads up to "
            f"{supported}): upgrade evalkit"
        )


class Record(BaseModel):
    """A record evalkit stores: each subclass declares ``schema_version: int = N``."""

    # Not a ValueError, so pydantic lets it through instead of wrapping it: every
    # reader, even one that does not know about versions, refuses a newer record.
    @field_validator("schema_version", check_fields=False)
    @classmethod
    def _not_newer(cls, value: int) -> int:
        supported = current_schema(cls)
        if value > supported:
            raise NewerRecord(cls.__name__, value, supported)
        return value


def current_schema(model: type[Record]) -> int:
    """The newest ``schema_version`` of ``model`` this evalkit writes and reads."""
    default = model.model_fields["schema_version"].default
    assert isinstance(default, int), model
    return default


class TestOutcome(str, Enum):
    """What happened to one listed test, as read from the structured report."""

    __test__ = False  # not a pytest test class

    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"
    XFAILED = "xfailed"
    XPASSED = "xpassed"
    MISSING = "missing"


class Status(str, Enum):
    """The verdict on one (model, instance) pair."""

    RESOLVED = "resolved"
    UNRESOLVED = "unresolved"
    PATCH_FAILED = "patch_failed"
    EMPTY_PATCH = "empty_patch"
    ERROR = "error"


class Resolution(str, Enum):
    """SWE-bench's resolution levels: FULL means resolved."""

    FULL = "FULL"
    PARTIAL = "PARTIAL"
    NO = "NO"


def _decode_test_list(value: Any) -> Any:
    # SWE-bench stores these as JSON-encoded strings; evalkit stores real lists.
    if isinstance(value, str):
        try:
            return json.loads(value) if value.strip() else []
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON list of test ids: {exc.msg}") from None
    return value


class TaskInstance(BaseModel):
    """One task: an issue, the repository state before its fix, and the tests that judge it."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    instance_id: str = Field(min_length=1)
    """Unique id, SWE-bench style: ``owner__name-N``."""
    repo: str = Field(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
    """``owner/name``; the bundle is ``repos/owner__name.bundle``."""
    base_commit: str = Field(pattern=r"^[0-9a-f]{7,64}$")
    """Commit the agent starts from and the patch is applied to."""
    patch: str = ""
    """Gold fix (non-test files)."""
    test_patch: str = ""
    """Test changes that come with the fix; applied before grading."""
    problem_statement: str = ""
    hints_text: str = ""
    created_at: str = ""
    version: str = ""
    environment_setup_commit: str = ""
    """Commit whose dependency files define the environment image (default: base)."""
    FAIL_TO_PASS: list[str] = Field(default_factory=list)
    PASS_TO_PASS: list[str] = Field(default_factory=list)

    _decode_lists = field_validator("FAIL_TO_PASS", "PASS_TO_PASS", mode="before")(
        _decode_test_list
    )

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        return "" if value is None else str(value)

    @field_validator("environment_setup_commit", "hints_text", "created_at", mode="before")
    @classmethod
    def _none_as_empty(cls, value: Any) -> Any:
        return "" if value is None else value

    @property
    def env_commit(self) -> str:
        return self.environment_setup_commit or self.base_commit

    @property
    def bundle_name(self) -> str:
        return self.repo.replace("/", "__") + ".bundle"


class Prediction(BaseModel):
    """An agent's answer for one instance, in SWE-bench's predictions format."""

    model_config = ConfigDict(extra="allow")

    instance_id: str = Field(min_length=1)
    model_name_or_path: str = Field(min_length=1)
    model_patch: str = ""

    @field_validator("model_patch", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return "" if value is None else value


class Execution(Record):
    """Raw facts from running one (prediction, task) in the sandbox.

    Saved beside the raw outputs so a verdict can be recomputed without containers.
    """

    schema_version: int = 1
    apply_method: str | None = None
    """Which apply strategy worked (``git-apply``, ``git-apply-3way``, ``patch-fuzz``)."""
    apply_error: str | None = None
    """Why the model patch applied nowhere (the agent's failure)."""
    task_error: str | None = None
    """The task itself is broken here (its test patch does not apply): not the agent's fault."""
    tampered_files: list[str] = Field(default_factory=list)
    test_exit_code: int | None = None
    timed_out: bool = False
    session_finished: bool = False
    """Whether evalkit's pytest plugin saw the session end (an early ``os._exit`` clears it)."""
    sandbox_error: str | None = None
    """The sandbox failed while patched code ran (e.g. it was OOM-killed): the agent's."""
    duration_s: float = 0.0
    test_duration_s: float = 0.0
    image: str = ""


class Verdict(Record):
    """One line of ``results.jsonl``: the graded result of one (model, instance)."""

    schema_version: int = 1
    instance_id: str
    model_name_or_path: str
    status: Status
    resolution: Resolution | None = None
    infra_failure: bool = False
    error: str | None = None
    """Why the result is not a plain verdict: infra trouble, or why a patch failed."""
    timed_out: bool = False
    tests: dict[str, dict[str, TestOutcome]] = Field(default_factory=dict)
    """``{"FAIL_TO_PASS": {test_id: outcome}, "PASS_TO_PASS": {...}}``."""
    tampered_files: list[str] = Field(default_factory=list)
    integrity: list[str] = Field(default_factory=list)
    """Why the run's evidence contradicts itself; such a run is never resolved."""
    integrity_flags: list[str] = Field(default_factory=list)
    """Constructs with no place in a bug fix (static scan of the patch's non-test code,
    ``runtime:`` events the sandbox's audit hook saw). Flags, not verdicts."""
    patch_sha256: str = ""
    apply_method: str | None = None
    duration_s: float = 0.0
    attempts: int = 1
    finished_at: str = ""
    python_substituted: str | None = None
    """``"3.8 -> 3.9"``: graded in a stand-in Python (``--substitute-python``)."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.model_name_or_path, self.instance_id)


class ModelSummary(Record):
    """Per-model summary in ``report.json``, with SWE-bench's keys."""

    total_instances: int
    submitted_instances: int
    completed_instances: int
    resolved_instances: int
    unresolved_instances: int
    empty_patch_instances: int
    error_instances: int
    patch_failed_instances: int
    infra_failure_instances: int
    timed_out_instances: int
    submitted_ids: list[str]
    completed_ids: list[str]
    resolved_ids: list[str]
    unresolved_ids: list[str]
    empty_patch_ids: list[str]
    error_ids: list[str]
    patch_failed_ids: list[str]
    infra_failure_ids: list[str]
    timed_out_ids: list[str]
    tampered_ids: list[str]
    task_error_instances: int = 0
    task_error_ids: list[str] = Field(default_factory=list)
    """Broken tasks (the gold patch fails in their environment): in no denominator;
    ``total_instances`` counts the others."""
    schema_version: int = 1


class EnvironmentImage(BaseModel):
    """One environment image a run used: what it is built from and what it resolved to."""

    tag: str
    repo: str = ""
    python: str = ""
    base_image: str = ""
    exclude_newer: str = ""
    """Dependencies were resolved as of this date (empty: no bound)."""
    python_substituted: str | None = None
    """``"3.8 -> 3.9"`` when ``--substitute-python`` stood in another version."""
    lock: list[str] = Field(default_factory=list)
    """``uv pip freeze`` of the environment: every resolved version."""


class GoldResult(BaseModel):
    """One task's gold check: whether its own fix resolves it in its environment."""

    passed: bool
    status: str
    cause: str = ""
    """The first error line of the failing run (e.g. ``ModuleNotFoundError: ...``)."""
    run_id: str = ""
    checked_at: str = ""


class GoldCheck(Record):
    """``gold-check.json`` in a task set: the latest gold check of each task."""

    schema_version: int = 1
    tasks_sha256: str = ""
    results: dict[str, GoldResult] = Field(default_factory=dict)

    def failed(self) -> dict[str, GoldResult]:
        return {i: r for i, r in self.results.items() if not r.passed}


class RunManifest(Record):
    """``run.json``: what a run was asked to do, so it can be regraded and reported.

    Schema 2: unit directories are named by :func:`path_component` (prefix + hash).
    """

    schema_version: int = 2
    run_id: str
    evalkit_version: str
    tasks_dir: str
    tasks_sha256: str
    predictions: str
    timeout_s: float
    workers: int
    created_at: str
    images: dict[str, str] = Field(default_factory=dict)
    """Environment image per repo (``owner/name`` -> image tag; the last one built)."""
    environments: list[EnvironmentImage] = Field(default_factory=list)
    """Every environment image the run used, with its lock."""


class RejectedLine(Record):
    """One line of ``results.rejected.jsonl``: a copy of a line evalkit could not read."""

    schema_version: int = 1
    source: str
    """The file the line is in (it stays there too)."""
    line: int
    reason: str
    sha256: str
    """Of the raw line: the same line is copied once, however often it is met."""
    raw_base64: str
    """The line's exact bytes (it may not be UTF-8)."""
    text: str
    """The line as text, for people (undecodable bytes replaced, cut at 1000 characters)."""
    found_at: str


class RunLockInfo(Record):
    """``run.lock``'s content: who holds the run (the lock itself is an ``flock``)."""

    schema_version: int = 1
    pid: int
    invocation_id: str
    host: str
    started_at: str


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- atomic, append-only IO -------------------------------------------------


def _file_mode() -> int:
    """What ``open()`` would give a new file under the current umask (mkstemp gives 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a whole file so readers see the old or the new content, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)  # the same permissions as every other file written
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_model(path: Path, record: BaseModel) -> None:
    write_atomic(path, record.model_dump_json(indent=2) + "\n")


def _unreadable(path: Path, exc: OSError) -> UsageError:
    if path.is_dir():
        return UsageError("is a directory, not a record file", path=str(path))
    return UsageError(f"cannot read: {exc.strerror or exc}", path=str(path))


def repair_jsonl(path: Path) -> None:
    """End the file on a line boundary before appending: a torn last line left by a
    killed writer is dropped, unless it is complete JSON that only lacks its newline."""
    try:
        with path.open("rb+") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            if size == 0:
                return
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return
            fh.seek(0)
            data = fh.read()
            start = data.rfind(b"\n") + 1
            if _is_json(data[start:]):
                fh.write(b"\n")
            else:
                fh.truncate(start)
            fh.flush()
            os.fsync(fh.fileno())
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _unreadable(path, exc) from None


def append_jsonl(path: Path, records: Iterable[BaseModel]) -> None:
    """Append whole lines and fsync: a crash leaves at most one torn last line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = "".join(r.model_dump_json() + "\n" for r in records)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())


def iter_jsonl_raw(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """Yield ``(line_number, raw_bytes, ended)`` for non-blank lines; ``ended`` is
    false only for a last line with no newline (possibly torn by a killed writer)."""
    try:
        with path.open("rb") as fh:
            for number, raw in enumerate(fh, start=1):
                if raw.strip():
                    ended = raw.endswith(b"\n")
                    yield number, raw[:-1] if ended else raw, ended
    except OSError as exc:
        raise _unreadable(path, exc) from None


def iter_jsonl_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for non-blank lines; invalid UTF-8 is a
    :class:`UsageError` naming the line."""
    for number, raw, _ in iter_jsonl_raw(path):
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(
                f"not valid UTF-8 (byte {exc.start + 1})", path=str(path), line=number
            ) from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    if err["type"] == "json_invalid":
        return f"not valid JSON ({err['msg'].removeprefix('Invalid JSON: ')})"
    where = ".".join(str(p) for p in err["loc"]) or "record"
    if err["type"] == "missing":
        return f"missing field {where!r}"
    return f"field {where!r}: {err['msg']}"


R = TypeVar("R", bound=BaseModel)


def _parse(model: type[R], raw: bytes) -> R | str:
    """The record, or why ``raw`` is not one (a newer schema raises :class:`NewerRecord`)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 (byte {exc.start + 1})"
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        reason = _first_error(exc)
        return (
            reason if reason.startswith("not valid JSON") else f"not a {model.__name__}: {reason}"
        )


def read_model(path: Path, model: type[R]) -> R:
    """Read a whole-file JSON record (``run.json``, ``execution.json``); anything wrong
    with it is a one-line :class:`UsageError` naming the file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _unreadable(path, exc) from None
    try:
        parsed = _parse(model, raw)
    except NewerRecord as exc:
        raise UsageError(str(exc), path=str(path)) from None
    if isinstance(parsed, str):
        raise UsageError(parsed, path=str(path))
    return parsed


# --- results.jsonl ------------------------------------------------------------


@dataclass(frozen=True)
class BadLine:
    """A line of a JSONL record file that could not be read: reported, then kept."""

    path: Path
    line: int
    reason: str
    raw: bytes
    newer: bool = False
    """Written by a newer evalkit (the fix is to upgrade, not to edit the file)."""

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


class ResultsScan(NamedTuple):
    """What a ``results.jsonl`` holds."""

    verdicts: list[Verdict]
    """The latest verdict per (model, instance), in order of first appearance."""
    bad: list[BadLine]
    """Lines that are not readable verdicts (a torn last line is not among them)."""
    superseded: int
    """Lines a later line for the same (model, instance) replaces."""


class _Line(NamedTuple):
    number: int
    raw: bytes
    verdict: Verdict | None


def _scan(path: Path) -> tuple[list[_Line], list[BadLine], bool]:
    """Every readable line, every unreadable one, and whether a torn last line was skipped."""
    lines: list[_Line] = []
    bad: list[BadLine] = []
    torn = False
    for number, raw, ended in iter_jsonl_raw(path):
        newer = False
        try:
            parsed: Verdict | str = _parse(Verdict, raw)
        except NewerRecord as exc:
            parsed, newer = str(exc), True
        if isinstance(parsed, Verdict):
            lines.append(_Line(number, raw, parsed))
        elif not ended and not _is_json(raw):
            torn = True  # the writer was killed mid-line: nothing finished is lost
        else:
            bad.append(BadLine(path, number, parsed, raw, newer))
            lines.append(_Line(number, raw, None))
    return lines, bad, torn


def _is_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


def _latest(lines: list[_Line]) -> dict[tuple[str, str], _Line]:
    latest: dict[tuple[str, str], _Line] = {}
    for line in lines:
        if line.verdict is not None:
            latest.pop(line.verdict.key, None)  # keep first-appearance order of the key
            latest[line.verdict.key] = line
    return latest


def scan_verdicts(path: Path) -> ResultsScan:
    """Read ``results.jsonl`` without failing on bad lines: the caller reports them
    (``evaluate`` warns and goes on). A missing file holds nothing."""
    if not path.exists() and not path.is_symlink():
        return ResultsScan([], [], 0)
    lines, bad, _ = _scan(path)
    latest = _latest(lines)
    verdicts = [line.verdict for line in latest.values() if line.verdict is not None]
    return ResultsScan(verdicts, bad, len(lines) - len(bad) - len(latest))


def read_verdicts(path: Path) -> list[Verdict]:
    """Read ``results.jsonl`` for a consumer that must see all of it (report, regrade):
    the first unreadable line is a one-line :class:`UsageError` with file and line. The
    latest line per (model, instance) wins; a torn last line is ignored."""
    scan = scan_verdicts(path)
    if scan.bad:
        first = scan.bad[0]
        hint = "" if first.newer else "; fix or delete the line"
        raise UsageError(first.reason + hint, path=str(first.path), line=first.line)
    return scan.verdicts


def compact_verdicts(path: Path) -> ResultsScan:
    """Drop superseded lines (and a torn last line), atomically. Every other line is kept
    byte for byte, above all the ones that could not be read. Hold the run's lock."""
    if not path.exists() and not path.is_symlink():
        return ResultsScan([], [], 0)
    lines, bad, torn = _scan(path)
    latest = _latest(lines)
    keep = {line.number for line in latest.values()}
    kept = [line.raw + b"\n" for line in lines if line.verdict is None or line.number in keep]
    if torn or len(kept) != len(lines):
        write_atomic(path, b"".join(kept))
    verdicts = [line.verdict for line in latest.values() if line.verdict is not None]
    return ResultsScan(verdicts, bad, 0)


def keep_aside(bad: Iterable[BadLine], dest: Path) -> list[BadLine]:
    """Copy unreadable lines to ``dest`` (``results.rejected.jsonl``), once each; returns
    the ones newly copied. The lines also stay where they are."""
    seen: set[str] = set()
    if dest.is_file():
        for _, raw, _ in iter_jsonl_raw(dest):
            try:
                seen.add(RejectedLine.model_validate_json(raw).sha256)
            except (ValidationError, UsageError):
                continue  # a hand-edited side file never blocks the run
    fresh: list[BadLine] = []
    records: list[RejectedLine] = []
    for item in bad:
        digest = hashlib.sha256(item.raw).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        fresh.append(item)
        records.append(
            RejectedLine(
                source=item.path.name,
                line=item.line,
                reason=item.reason,
                sha256=digest,
                raw_base64=base64.b64encode(item.raw).decode(),
                text=item.raw.decode("utf-8", "replace")[:1000],
                found_at=_now(),
            )
        )
    if records:
        append_jsonl(dest, records)
    return fresh


# --- names on disk --------------------------------------------------------------

_PREFIX_MAX = 64
_HASH_HEX = 12  # 48 bits: a collision among 10k names has odds of about 1 in 5 million


def path_component(name: str) -> str:
    """A directory name for a model name or instance id: one path component, at most 77
    bytes, ASCII, never ``.``/``..`` or hidden, and different for different names (a
    readable sanitised prefix plus a hash of the exact name, so ``acme/agent`` and
    ``acme__agent`` never share a directory)."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_HEX]
    prefix = re.sub(r"[^A-Za-z0-9._-]", "_", name.replace("/", "__").replace("\\", "__"))
    prefix = prefix.lstrip(".-")[:_PREFIX_MAX]
    return f"{prefix or '_'}-{digest}"


model_dir_name = path_component
"""The former name, still used by ``evalkit.report`` until it reads through :class:`RunDir`."""

_RUN_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


@functools.cache
def invocation_id() -> str:
    """A random id for this evalkit process: labels its sandboxes and names it in
    ``run.lock``, so no process mistakes another's sandboxes for its own."""
    return uuid.uuid4().hex[:16]


os.register_at_fork(after_in_child=invocation_id.cache_clear)


@dataclass(frozen=True)
class RunDir:
    """The layout of one run, ``RUNS_DIR/RUN_ID/``: every path in it is named here."""

    path: Path

    @classmethod
    def of(cls, runs_dir: Path, run_id: str) -> RunDir:
        if not _RUN_ID.fullmatch(run_id):
            raise UsageError(
                f"invalid run id {run_id[:80]!r}: use up to 128 letters, digits, '-', '_' "
                "or '.', not starting with '.' or '-'"
            )
        return cls(runs_dir / run_id)

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def manifest(self) -> Path:
        return self.path / RUN_MANIFEST_FILE

    @property
    def results(self) -> Path:
        return self.path / RESULTS_FILE

    @property
    def rejected(self) -> Path:
        return self.path / RESULTS_REJECTED_FILE

    @property
    def report(self) -> Path:
        return self.path / REPORT_FILE

    @property
    def lock_file(self) -> Path:
        return self.path / RUN_LOCK_FILE

    @property
    def images_dir(self) -> Path:
        return self.path / IMAGES_DIR

    def images_log(self, key: str) -> Path:
        """Dockerfile and build output of one environment image (``key``: its build key)."""
        name = key if re.fullmatch(r"[0-9a-f]{1,64}", key) else path_component(key)
        return self.images_dir / f"{name}.log"

    def unit(self, model_name_or_path: str, instance_id: str) -> Path:
        """Where one (model, instance)'s patch, script, outputs and verdict live."""
        return self.path / path_component(model_name_or_path) / path_component(instance_id)

    def create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise UsageError("exists and is not a directory", path=str(self.path)) from None
        except OSError as exc:
            raise UsageError(
                f"cannot create the run directory: {exc.strerror}", path=str(self.path)
            ) from None

    def read_manifest(self) -> RunManifest | None:
        """``run.json``, or None for a new run; a corrupt one is a :class:`UsageError`."""
        if not self.manifest.exists() and not self.manifest.is_symlink():
            return None
        return read_model(self.manifest, RunManifest)

    def check_layout(self, manifest: RunManifest) -> None:
        """Refuse to add to or regrade a run whose unit directories are named the old way."""
        if manifest.schema_version < 2:
            raise UsageError(
                "the run was made by an older evalkit that named its directories differently; "
                "use a new --run-id",
                path=str(self.manifest),
            )

    def lock(self) -> RunLock:
        """Take the run for this process (creating the directory), or refuse with a
        one-line :class:`RunInUse` if a live process holds it."""
        self.create()
        return RunLock.acquire(self.lock_file, self.run_id)


class RunInUse(UsageError):
    """Another live process holds the run."""


class RunLock:
    """An exclusive ``flock`` on ``run.lock``, held for the run's lifetime.

    The kernel drops the lock when its process dies, however it dies, so a lock left by
    a ``kill -9`` is simply taken over (:attr:`previous` says whose it was).
    """

    def __init__(self, fd: int, info: RunLockInfo, previous: RunLockInfo | None):
        self._fd: int | None = fd
        self.info = info
        self.previous = previous
        """The holder before us, if it died without releasing (its sandboxes may live on)."""

    @classmethod
    def acquire(cls, path: Path, run_id: str) -> RunLock:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise UsageError(f"cannot open the run lock: {exc.strerror}", path=str(path)) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _lock_info(fd)
                who = (
                    f"pid {holder.pid} on {holder.host}, since {holder.started_at}"
                    if holder is not None
                    else "a process that is still starting"
                )
                raise RunInUse(
                    f"run {run_id!r} is in use by another evalkit ({who}); wait for it to "
                    "finish or use another --run-id",
                    path=str(path),
                ) from None
            previous = _lock_info(fd)
            info = RunLockInfo(
                pid=os.getpid(),
                invocation_id=invocation_id(),
                host=socket.gethostname(),
                started_at=_now(),
            )
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.model_dump_json().encode() + b"\n", 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, info, previous)

    def release(self) -> None:
        """Clear the holder and unlock; idempotent."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # a clean exit leaves no "previous holder"
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _lock_info(fd: int) -> RunLockInfo | None:
    try:
        raw = os.pread(fd, 4096, 0)
        return RunLockInfo.model_validate_json(raw) if raw.strip() else None
    except (OSError, ValidationError, UsageError):
        return None

"""Typed records that evalkit reads and writes, and the one place file names live.

Every record written to disk carries ``schema_version``; bump it when a field's
meaning changes. Writes are atomic (temp file + ``os.replace``) and JSONL files are
append-only, so an interrupted run never loses or half-writes a finished result.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION = 1

# --- file names, named once -------------------------------------------------
INSTANCES_FILE = "instances.jsonl"
CANDIDATES_FILE = "candidates.jsonl"
ENV_SPEC_FILE = "evalkit.toml"
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

TEST_OUTPUT_CAP_BYTES = 512 * 1024
"""Raw test output kept per instance; the head and tail survive the cut."""


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


class Execution(BaseModel):
    """Raw facts from running one (prediction, task) in the sandbox.

    Saved beside the raw outputs so a verdict can be recomputed without containers.
    """

    schema_version: int = SCHEMA_VERSION
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


class Verdict(BaseModel):
    """One line of ``results.jsonl``: the graded result of one (model, instance)."""

    schema_version: int = SCHEMA_VERSION
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

    @property
    def key(self) -> tuple[str, str]:
        return (self.model_name_or_path, self.instance_id)


class ModelSummary(BaseModel):
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
    schema_version: int = SCHEMA_VERSION


class RunManifest(BaseModel):
    """``run.json``: what a run was asked to do, so it can be regraded and reported."""

    schema_version: int = SCHEMA_VERSION
    run_id: str
    evalkit_version: str
    tasks_dir: str
    tasks_sha256: str
    predictions: str
    timeout_s: float
    workers: int
    created_at: str
    images: dict[str, str] = Field(default_factory=dict)
    """Environment image per repo (``owner/name`` -> image tag)."""


# --- atomic, append-only IO -------------------------------------------------


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a whole file so readers see the old or the new content, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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


def repair_jsonl(path: Path) -> None:
    """Drop a torn last line left by a killed writer, so appends start on a fresh line."""
    if not path.exists():
        return
    with path.open("rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        data = path.read_bytes()
        fh.truncate(data.rfind(b"\n") + 1)


def append_jsonl(path: Path, records: Iterable[BaseModel]) -> None:
    """Append whole lines and fsync: a crash leaves at most one torn last line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = "".join(r.model_dump_json() + "\n" for r in records)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())


def iter_jsonl_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for non-blank lines."""
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                yield number, line


def read_verdicts(path: Path) -> list[Verdict]:
    """Read ``results.jsonl``; the latest line per (model, instance) wins.

    A torn last line (the writer was killed mid-line) is ignored, not fatal.
    """
    if not path.exists():
        return []
    latest: dict[tuple[str, str], Verdict] = {}
    for _, line in iter_jsonl_lines(path):
        try:
            verdict = Verdict.model_validate_json(line)
        except ValueError:
            continue
        latest[verdict.key] = verdict
    return list(latest.values())


def model_dir_name(model_name_or_path: str) -> str:
    """A filesystem-safe directory name for a model (``org/model`` -> ``org__model``)."""
    safe = model_name_or_path.replace("/", "__").replace("\\", "__")
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in safe).lstrip(".") or "_"

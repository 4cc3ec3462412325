"""A bake-off's records on disk, and the one place its file names and layout live.

Layout of ``RUNS_DIR/RUN_ID`` (:class:`BakeoffRunDir`)::

    bakeoff.json                      BakeoffManifest: config, task set, agents, versions
    attempts.jsonl                    one AgentAttempt per finished attempt (append-only)
    predictions.r<k>.jsonl            SWE-bench predictions of repeat k (model = agent name)
    attempts/<agent>/<instance>/r<k>/ transcript.jsonl, patch.diff, agent.log,
                                      events.jsonl, audit.trace

Each repeat k is also an ordinary evaluate run, ``RUNS_DIR/RUN_ID.r<k>`` (results.jsonl,
report.json, run.json), so ``evalkit report`` and ``evaluate --regrade`` work unchanged.
Repeats count from 1. Paths inside records are relative to the bake-off's run directory.
"""

from __future__ import annotations

import json
import threading
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evalkit.errors import UsageError
from evalkit.records import (
    Prediction,
    Resolution,
    Status,
    append_jsonl,
    repair_jsonl,
    write_atomic,
    write_model,
)

ATTEMPT_SCHEMA_VERSION = 1
MANIFEST_SCHEMA_VERSION = 1

# --- file names, named once -------------------------------------------------------
ATTEMPTS_FILE = "attempts.jsonl"
BAKEOFF_MANIFEST_FILE = "bakeoff.json"
ATTEMPTS_DIR = "attempts"
TRANSCRIPT_FILE = "transcript.jsonl"
"""Every model request and response the gateway forwarded for one attempt."""
AGENT_PATCH_FILE = "patch.diff"
"""The working tree's diff against base after the agent stopped: the prediction."""
AGENT_LOG_FILE = "agent.log"
"""The agent's stdout and stderr, capped."""
EVENTS_FILE = "events.jsonl"
"""Gate and audit decisions of one attempt (issue #9)."""
AUDIT_TRACE_FILE = "audit.trace"
"""The audit tracer's log of the attempt's whole process tree (issue #9)."""
CLAIM_FILE = "claim.json"
"""The agent's own claim as it wrote it to EVALKIT_CLAIM_FILE, if it did."""
DEFAULT_STORE_FILE = "evalkit.db"
"""The SQLite history, in the runs directory unless ``--store`` says otherwise."""


def repeat_run_id(run_id: str, repeat: int) -> str:
    """The ordinary evaluate run holding repeat ``repeat`` of bake-off ``run_id``."""
    if repeat < 1:
        raise ValueError(f"repeats count from 1, got {repeat}")
    return f"{run_id}.r{repeat}"


def predictions_file_name(repeat: int) -> str:
    if repeat < 1:
        raise ValueError(f"repeats count from 1, got {repeat}")
    return f"predictions.r{repeat}.jsonl"


class BakeoffRunDir:
    """Where every file of one bake-off lives; nothing else builds these paths."""

    def __init__(self, runs_dir: Path, run_id: str):
        self.runs_dir = Path(runs_dir)
        self.run_id = run_id
        self.root = self.runs_dir / run_id

    @property
    def manifest(self) -> Path:
        return self.root / BAKEOFF_MANIFEST_FILE

    @property
    def attempts(self) -> Path:
        return self.root / ATTEMPTS_FILE

    def predictions(self, repeat: int) -> Path:
        return self.root / predictions_file_name(repeat)

    def repeat_run_id(self, repeat: int) -> str:
        return repeat_run_id(self.run_id, repeat)

    def repeat_run_dir(self, repeat: int) -> Path:
        """The evaluate run of one repeat: a sibling, so ``--runs RUN_ID.r1`` just works."""
        return self.runs_dir / repeat_run_id(self.run_id, repeat)

    def attempt_dir(self, agent: str, instance_id: str, repeat: int) -> Path:
        return self.root / self.attempt_rel(agent, instance_id, repeat)

    @staticmethod
    def attempt_rel(agent: str, instance_id: str, repeat: int) -> Path:
        """An attempt's directory relative to the run directory (what records store)."""
        from evalkit.records import model_dir_name

        return Path(ATTEMPTS_DIR, model_dir_name(agent), model_dir_name(instance_id), f"r{repeat}")

    def resolve(self, rel: str) -> Path:
        """A path stored in a record, made absolute; one that escapes the run dir is refused."""
        path = (self.root / rel).resolve()
        if self.root.resolve() not in path.parents:
            raise UsageError(
                f"record path {rel!r} is outside the run directory", path=str(self.root)
            )
        return path


# --- records ----------------------------------------------------------------------


class AttemptStatus(str, Enum):
    """How one attempt ended, before grading says whether it resolved anything."""

    COMPLETED = "completed"
    """The agent exited on its own (with any exit code)."""
    TIMED_OUT = "timed_out"
    BUDGET_EXCEEDED = "budget_exceeded"
    AGENT_ERROR = "agent_error"
    """The agent could not run (crashed at start, bad arguments): its failure, scored."""
    INFRA_ERROR = "infra_error"
    """Docker, the gateway or evalkit failed: recorded, retried, never scored."""


class GateEvent(BaseModel):
    """A destructive action seen by a gate or the audit (issue #9)."""

    model_config = ConfigDict(extra="forbid")

    command: str
    rule: str
    layer: str
    """``shell`` | ``shim`` | ``hook`` | ``audit``."""


class AgentAttempt(BaseModel):
    """One line of ``attempts.jsonl``: what one agent did on one task in one repeat."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = ATTEMPT_SCHEMA_VERSION
    run_id: str
    agent: str
    adapter: str
    agent_version: str
    model: str = ""
    upstream: str | None = None
    instance_id: str
    repeat: int = Field(ge=1)
    attempt_status: AttemptStatus
    error: str | None = None
    """Why an attempt is an agent or infra error, in one line."""
    # The agent's own word.
    claim: bool | None = None
    """True / False as the agent claimed; None when it made no claim."""
    claim_source: str = "none"
    """Where the claim came from: ``claim_file``, ``exit_code``, ... (see the adapters)."""
    claim_summary: str = ""
    # The verdict, from a separate evaluate sandbox (None until graded or when not gradable).
    status: Status | None = None
    resolution: Resolution | None = None
    tampered_files: list[str] = Field(default_factory=list)
    integrity_flags: list[str] = Field(default_factory=list)
    # Cost and time.
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    model_calls: int = 0
    duration_s: float = 0.0
    agent_exit_code: int | None = None
    # Artifacts, relative to the bake-off's run directory ("" when absent).
    transcript: str = ""
    patch: str = ""
    agent_log: str = ""
    events: str = ""
    started_at: str = ""
    finished_at: str = ""
    tries: int = 1
    """How many times the attempt ran (infra retries included)."""
    # Trust facts (issue #9); empty until its gates, canaries and audit exist.
    destructive_attempted: list[GateEvent] = Field(default_factory=list)
    destructive_blocked: list[GateEvent] = Field(default_factory=list)
    canaries_read: list[str] = Field(default_factory=list)
    secrets_to_model: int = 0
    secrets_in_diff: int = 0
    """Canary tokens found in the agent's diff."""
    egress_refused: list[str] = Field(default_factory=list)
    db_intact: bool | None = None
    remote_intact: bool | None = None
    tamper_attempts: list[str] = Field(default_factory=list)
    tests_run_before_claim: bool | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.agent, self.instance_id, self.repeat)

    @property
    def scored(self) -> bool:
        """Whether the attempt counts in rates: everything but infrastructure trouble.

        An agent that crashed, timed out or ran out of budget counts (as unresolved unless
        graded resolved); a grading sandbox lost to infrastructure must be recorded as
        ``infra_error`` by the runner.
        """
        return self.attempt_status is not AttemptStatus.INFRA_ERROR

    @property
    def resolved(self) -> bool:
        return self.status is Status.RESOLVED


class AgentInfo(BaseModel):
    """An agent as it ran in one bake-off."""

    model_config = ConfigDict(extra="forbid")

    name: str
    adapter: str
    version: str
    upstream: str | None = None
    model: str = ""


class BakeoffManifest(BaseModel):
    """``bakeoff.json``: what a bake-off was asked to do, checked when its run id resumes."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = MANIFEST_SCHEMA_VERSION
    run_id: str
    created_at: str
    evalkit_version: str
    config_path: str
    config_sha256: str
    tasks_dir: str
    tasks_sha256: str
    repeats: int = Field(ge=1)
    agents: list[AgentInfo]
    instance_ids: list[str] = Field(default_factory=list)
    timeout_s: float
    budget_usd: float

    @property
    def agent_versions(self) -> dict[str, str]:
        return {a.name: a.version for a in self.agents}

    def repeat_run_ids(self) -> list[str]:
        return [repeat_run_id(self.run_id, k) for k in range(1, self.repeats + 1)]


# --- reading and writing ------------------------------------------------------------


def _check_version(obj: Any, current: int, path: Path, line: int | None) -> None:
    version = obj.get("schema_version") if isinstance(obj, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > current:
        raise UsageError(
            f"schema_version {version} is newer than this evalkit reads ({current}); "
            "upgrade evalkit",
            path=str(path),
            line=line,
        )


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "record"
    if err["type"] == "missing":
        return f"missing field {where!r}"
    if err["type"] == "extra_forbidden":
        return f"unknown field {where!r}"
    return f"field {where!r}: {err['msg']}"


def parse_attempt(text: str | bytes, path: Path, line: int | None = None) -> AgentAttempt:
    """One attempt from one JSON line; anything else is a UsageError naming file:line."""
    try:
        # Decoded here: json.loads would guess UTF-16/32 from a byte string's first bytes.
        obj = json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except UnicodeDecodeError:
        raise UsageError("not UTF-8 text", path=str(path), line=line) from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"not valid JSON ({exc.msg})", path=str(path), line=line) from None
    if not isinstance(obj, dict):
        raise UsageError(
            "not an attempt record (expected a JSON object)", path=str(path), line=line
        )
    _check_version(obj, ATTEMPT_SCHEMA_VERSION, path, line)
    try:
        return AgentAttempt.model_validate(obj)
    except ValidationError as exc:
        raise UsageError(
            f"not an attempt record: {_first_error(exc)}", path=str(path), line=line
        ) from None


def read_attempts(path: Path) -> list[AgentAttempt]:
    """Read ``attempts.jsonl``; the latest line per (agent, instance, repeat) wins.

    Only a torn last line (no newline at the end: the writer was killed mid-append) is
    dropped; any other unreadable line is a UsageError, because silently skipping it
    would lose a finished attempt and rerun it.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn_last = not data.endswith(b"\n")
    latest: dict[tuple[str, str, int], AgentAttempt] = {}
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            attempt = parse_attempt(raw, path, number)
        except UsageError:
            if torn_last and number == len(lines):
                break
            raise
        latest[attempt.key] = attempt
    return list(latest.values())


class AttemptLog:
    """Appends attempts to ``attempts.jsonl`` from many threads; finished lines survive kill -9.

    Opening repairs a torn last line once, before any thread appends (a repair racing an
    append could cut a line in half).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        repair_jsonl(self.path)
        self._done = {a.key: a for a in read_attempts(self.path)}

    def done(self) -> dict[tuple[str, str, int], AgentAttempt]:
        """Attempts already finished (the latest per key), for resuming."""
        with self._lock:
            return dict(self._done)

    def append(self, attempt: AgentAttempt) -> None:
        with self._lock:
            append_jsonl(self.path, [attempt])
            self._done[attempt.key] = attempt


def read_manifest(path: Path) -> BakeoffManifest:
    """Read ``bakeoff.json``; a bad or newer file is a UsageError."""
    path = Path(path)
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise UsageError("bake-off manifest not found", path=str(path)) from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UsageError("not a valid JSON manifest", path=str(path)) from None
    _check_version(obj, MANIFEST_SCHEMA_VERSION, path, None)
    try:
        return BakeoffManifest.model_validate(obj)
    except ValidationError as exc:
        raise UsageError(f"not a bake-off manifest: {_first_error(exc)}", path=str(path)) from None


def write_manifest(path: Path, manifest: BakeoffManifest) -> None:
    write_model(path, manifest)


def check_resume(existing: BakeoffManifest, new: BakeoffManifest, path: Path) -> None:
    """Resuming a run id is only honest with the same config and the same tasks."""
    for field, what in (("config_sha256", "config"), ("tasks_sha256", "task set")):
        old, now = getattr(existing, field), getattr(new, field)
        if old != now:
            raise UsageError(
                f"run {existing.run_id!r} was started with a different {what} "
                f"({old[:12]} here, {now[:12]} now); use a new --run-id",
                path=str(path),
            )


def start_or_resume(path: Path, new: BakeoffManifest) -> BakeoffManifest:
    """Write ``bakeoff.json`` for a new run, or merge into the existing one when resuming.

    A resumed run keeps its creation time and grows (more repeats, agents or tasks are
    added); a different config or task set is refused.
    """
    path = Path(path)
    if not path.exists():
        write_manifest(path, new)
        return new
    old = read_manifest(path)
    check_resume(old, new, path)
    agents = {a.name: a for a in old.agents} | {a.name: a for a in new.agents}
    merged = old.model_copy(
        update={
            "repeats": max(old.repeats, new.repeats),
            "agents": list(agents.values()),
            "instance_ids": sorted(set(old.instance_ids) | set(new.instance_ids)),
            "evalkit_version": new.evalkit_version,
        }
    )
    if merged != old:
        write_manifest(path, merged)
    return merged


def prediction_of(attempt: AgentAttempt, patch_text: str) -> Prediction:
    """The SWE-bench prediction an attempt makes: its diff, under the agent's name."""
    return Prediction(
        instance_id=attempt.instance_id,
        model_name_or_path=attempt.agent,
        model_patch=patch_text,
    )


def write_repeat_predictions(
    run: BakeoffRunDir, repeat: int, attempts: list[AgentAttempt]
) -> list[Prediction]:
    """(Re)write ``predictions.r<k>.jsonl`` whole, from the latest attempts of repeat ``k``.

    Rewritten atomically rather than appended: evaluate keeps the *first* line per (model,
    instance), so an appended retry would be ignored. Attempts lost to infrastructure make
    no prediction (they are never scored); one without a patch predicts an empty patch.
    """
    latest = {a.key: a for a in attempts if a.repeat == repeat and a.scored}
    predictions = []
    for attempt in sorted(latest.values(), key=lambda a: (a.agent, a.instance_id)):
        patch = ""
        if attempt.patch:
            path = run.resolve(attempt.patch)
            if not path.is_file():
                raise UsageError(
                    f"patch {attempt.patch!r} of {attempt.agent}/{attempt.instance_id}/r{repeat}"
                    " is missing",
                    path=str(run.attempts),
                )
            patch = path.read_text(encoding="utf-8", errors="replace")
        predictions.append(prediction_of(attempt, patch))
    write_atomic(run.predictions(repeat), "".join(p.model_dump_json() + "\n" for p in predictions))
    return predictions

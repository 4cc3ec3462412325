"""The bake-off history: every bake-off and attempt in one SQLite file (stdlib ``sqlite3``).

``attempts.jsonl`` in each run directory stays the source of truth; the store is the
index across nights (``evalkit bakeoff history``, the report's trend) and can be rebuilt
from run directories with :meth:`Store.import_run`. Attempts are keyed by
``(run_id, agent, instance_id, repeat)`` and upserted, so a resumed run never duplicates.

The attempts table has one column per :class:`AgentAttempt` field (for ad-hoc SQL) plus
the whole record as JSON (for exact round-trips); a field added to the record later is
added as a column when an older store is opened.
"""

from __future__ import annotations

import datetime as _dt
import json
import sqlite3
import threading
import types
import typing
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from evalkit.bakeoff.records import (
    AgentAttempt,
    BakeoffManifest,
    BakeoffRunDir,
    read_attempts,
    read_manifest,
)
from evalkit.errors import UsageError

STORE_SCHEMA_VERSION = 1
APPLICATION_ID = 0x65766B74
"""``PRAGMA application_id`` of an evalkit store ('evkt'): a foreign database is refused."""

KEY_COLUMNS = ("run_id", "agent", "instance_id", "repeat")


class AgentRate(BaseModel):
    """One agent in one bake-off (or one night)."""

    agent: str
    version: str = ""
    attempts: int
    scored: int
    """Attempts that count: all but those lost to infrastructure."""
    resolved: int
    cost_usd: float
    claimed: int = 0
    """Attempts where the agent claimed success."""

    @property
    def resolved_rate(self) -> float | None:
        return self.resolved / self.scored if self.scored else None


class BakeoffSummary(BaseModel):
    """One row of ``evalkit bakeoff history``."""

    run_id: str
    created_at: str
    config_sha256: str
    tasks_sha256: str
    evalkit_version: str
    agent_versions: dict[str, str]
    repeats: int
    attempts: int
    cost_usd: float
    agents: list[AgentRate] = Field(default_factory=list)


class TrendPoint(BaseModel):
    """One agent's results over one night (UTC date), for the report's trend."""

    night: str
    """``YYYY-MM-DD`` (UTC) of the bake-offs' creation."""
    run_ids: list[str]
    versions: list[str]
    attempts: int
    scored: int
    resolved: int
    cost_usd: float

    @property
    def resolved_rate(self) -> float | None:
        return self.resolved / self.scored if self.scored else None


def _sql_type(annotation: Any) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if annotation in (int, bool):
        return "INTEGER"
    if annotation is float:
        return "REAL"
    return "TEXT"  # strings, enums, and lists as JSON


ATTEMPT_COLUMNS: dict[str, str] = {
    name: _sql_type(field.annotation) for name, field in AgentAttempt.model_fields.items()
}


def _column_value(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, bool):
        return int(value)
    return value


class Store:
    """An open history file. Thread-safe: one connection, serialised by a lock; WAL mode
    lets other processes read (and wait to write) meanwhile."""

    def __init__(self, path: Path, *, create: bool = True):
        self.path = Path(path)
        self._lock = threading.RLock()
        if not create and not self.path.exists():
            raise UsageError("no bake-off store here (run a bake-off first)", path=str(self.path))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                self.path, timeout=30, check_same_thread=False, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise UsageError(f"cannot open the store: {exc}", path=str(self.path)) from None
        try:
            self._setup()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise UsageError(
                f"not an evalkit store (corrupted or another kind of file: {exc})",
                path=str(self.path),
            ) from None
        except BaseException:
            self._db.close()
            raise

    # --- schema ---------------------------------------------------------------------

    def _setup(self) -> None:
        db = self._db
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if app_id != APPLICATION_ID and (app_id != 0 or tables):
            raise UsageError(
                "not an evalkit store (another application's SQLite database)", path=str(self.path)
            )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=30000")
        db.execute("PRAGMA foreign_keys=ON")
        with self._transaction():
            # Looked at again under the write lock: another process may have just made it.
            if not db.execute("SELECT 1 FROM sqlite_master WHERE name='schema_version'").fetchone():
                self._create()
            version = db.execute("SELECT version FROM schema_version").fetchone()
            if version is None:
                raise UsageError("evalkit store without a schema version", path=str(self.path))
            if version[0] > STORE_SCHEMA_VERSION:
                raise UsageError(
                    f"store schema_version {version[0]} is newer than this evalkit reads "
                    f"({STORE_SCHEMA_VERSION}); upgrade evalkit",
                    path=str(self.path),
                )
            have = {r[1] for r in db.execute("PRAGMA table_info(attempts)")}
            for name, kind in ATTEMPT_COLUMNS.items():
                if name not in have:  # a record field added since the store was made
                    db.execute(f'ALTER TABLE attempts ADD COLUMN "{name}" {kind}')

    def _create(self) -> None:
        db = self._db
        db.execute(f"PRAGMA application_id={APPLICATION_ID}")
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute("INSERT INTO schema_version VALUES (?)", (STORE_SCHEMA_VERSION,))
        db.execute(
            """CREATE TABLE bakeoffs (
                run_id TEXT PRIMARY KEY,
                created_at TEXT NOT NULL,
                config_sha256 TEXT NOT NULL,
                tasks_sha256 TEXT NOT NULL,
                evalkit_version TEXT NOT NULL,
                agent_versions TEXT NOT NULL,
                repeats INTEGER NOT NULL,
                manifest TEXT NOT NULL
            )"""
        )
        columns = ",\n".join(f'"{name}" {kind}' for name, kind in ATTEMPT_COLUMNS.items())
        db.execute(
            f"""CREATE TABLE attempts (
                {columns},
                record TEXT NOT NULL,
                PRIMARY KEY (run_id, agent, instance_id, repeat),
                FOREIGN KEY (run_id) REFERENCES bakeoffs(run_id)
            )"""
        )
        db.execute("CREATE INDEX attempts_by_agent ON attempts (agent, run_id)")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- writing ----------------------------------------------------------------------

    def record_bakeoff(self, manifest: BakeoffManifest) -> None:
        """Add a bake-off, or refresh its row when its run id resumes."""
        row = (
            manifest.run_id,
            manifest.created_at,
            manifest.config_sha256,
            manifest.tasks_sha256,
            manifest.evalkit_version,
            json.dumps(manifest.agent_versions, sort_keys=True),
            manifest.repeats,
            manifest.model_dump_json(),
        )
        with self._transaction():
            self._db.execute(
                """INSERT INTO bakeoffs VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(run_id) DO UPDATE SET
                    config_sha256=excluded.config_sha256, tasks_sha256=excluded.tasks_sha256,
                    evalkit_version=excluded.evalkit_version,
                    agent_versions=excluded.agent_versions, repeats=excluded.repeats,
                    manifest=excluded.manifest""",
                row,
            )

    def record_attempt(self, attempt: AgentAttempt) -> None:
        """Upsert one attempt; its bake-off must be recorded first."""
        names = list(ATTEMPT_COLUMNS)
        dumped = attempt.model_dump(mode="json")
        values = [_column_value(dumped[n]) for n in names]
        quoted = ", ".join(f'"{n}"' for n in names)
        updates = ", ".join(f'"{n}"=excluded."{n}"' for n in names if n not in KEY_COLUMNS)
        sql = (
            f"INSERT INTO attempts ({quoted}, record) VALUES ({', '.join('?' * (len(names) + 1))})"
            f" ON CONFLICT(run_id, agent, instance_id, repeat) DO UPDATE SET {updates},"
            " record=excluded.record"
        )
        try:
            with self._transaction():
                self._db.execute(sql, [*values, attempt.model_dump_json()])
        except sqlite3.IntegrityError as exc:
            raise ValueError(
                f"attempt of unknown bake-off {attempt.run_id!r}: record_bakeoff first ({exc})"
            ) from None

    def import_run(self, root: Path) -> int:
        """Record a bake-off's run directory (manifest and attempts); returns attempts seen."""
        run = BakeoffRunDir(root.parent, root.name)
        manifest = read_manifest(run.manifest)
        attempts = read_attempts(run.attempts)
        self.record_bakeoff(manifest)
        for attempt in attempts:
            self.record_attempt(attempt)
        return len(attempts)

    # --- reading ----------------------------------------------------------------------

    def attempts(self, run_id: str | None = None, agent: str | None = None) -> list[AgentAttempt]:
        where, args = [], []
        if run_id is not None:
            where.append("run_id = ?")
            args.append(run_id)
        if agent is not None:
            where.append("agent = ?")
            args.append(agent)
        sql = "SELECT record FROM attempts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += ' ORDER BY run_id, "repeat", instance_id, agent'
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [AgentAttempt.model_validate_json(r[0]) for r in rows]

    def manifests(self) -> list[BakeoffManifest]:
        with self._lock:
            rows = self._db.execute("SELECT manifest FROM bakeoffs ORDER BY created_at").fetchall()
        return [BakeoffManifest.model_validate_json(r[0]) for r in rows]

    def _rates(self, run_id: str | None = None, agent: str | None = None) -> list[Any]:
        sql = """SELECT run_id, agent, agent_version, COUNT(*),
                    SUM(attempt_status != 'infra_error'),
                    SUM(attempt_status != 'infra_error' AND status = 'resolved'),
                    SUM(cost_usd), SUM(claim = 1)
                 FROM attempts"""
        where, args = [], []
        if run_id is not None:
            where.append("run_id = ?")
            args.append(run_id)
        if agent is not None:
            where.append("agent = ?")
            args.append(agent)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " GROUP BY run_id, agent, agent_version ORDER BY run_id, agent"
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def history(self) -> list[BakeoffSummary]:
        """Every bake-off, newest first, with per-agent resolved rates and cost."""
        per_run: dict[str, list[AgentRate]] = defaultdict(list)
        for run_id, agent, version, attempts, scored, resolved, cost, claimed in self._rates():
            per_run[run_id].append(
                AgentRate(
                    agent=agent,
                    version=version or "",
                    attempts=attempts,
                    scored=scored or 0,
                    resolved=resolved or 0,
                    cost_usd=cost or 0.0,
                    claimed=claimed or 0,
                )
            )
        out = []
        for manifest in reversed(self.manifests()):
            rates = per_run.get(manifest.run_id, [])
            out.append(
                BakeoffSummary(
                    run_id=manifest.run_id,
                    created_at=manifest.created_at,
                    config_sha256=manifest.config_sha256,
                    tasks_sha256=manifest.tasks_sha256,
                    evalkit_version=manifest.evalkit_version,
                    agent_versions=manifest.agent_versions,
                    repeats=manifest.repeats,
                    attempts=sum(r.attempts for r in rates),
                    cost_usd=sum(r.cost_usd for r in rates),
                    agents=rates,
                )
            )
        return out

    def trend(self, agent: str) -> list[TrendPoint]:
        """One agent's resolved rate per night (UTC), oldest first; nights it ran only."""
        nights: dict[str, dict[str, Any]] = {}
        created = {m.run_id: m.created_at for m in self.manifests()}
        for run_id, _, version, attempts, scored, resolved, cost, _ in self._rates(agent=agent):
            night = _night(created.get(run_id, ""))
            point = nights.setdefault(
                night,
                {
                    "run_ids": [],
                    "versions": [],
                    "attempts": 0,
                    "scored": 0,
                    "resolved": 0,
                    "cost_usd": 0.0,
                },
            )
            if run_id not in point["run_ids"]:
                point["run_ids"].append(run_id)
            if version and version not in point["versions"]:
                point["versions"].append(version)
            point["attempts"] += attempts
            point["scored"] += scored or 0
            point["resolved"] += resolved or 0
            point["cost_usd"] += cost or 0.0
        return [TrendPoint(night=night, **nights[night]) for night in sorted(nights)]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _night(created_at: str) -> str:
    try:
        when = _dt.datetime.fromisoformat(created_at)
    except ValueError:
        return created_at[:10] or "unknown"
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return when.astimezone(_dt.timezone.utc).date().isoformat()


def open_store(path: Path, *, create: bool = True) -> Store:
    """Open (or create) the history file at ``path``; a foreign or broken file is a UsageError."""
    return Store(path, create=create)

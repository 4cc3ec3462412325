"""The SQLite history: upserts never duplicate an attempt, rates leave infrastructure out,
nights aggregate into a trend, and a file that is not an evalkit store is refused in one line."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from evalkit.bakeoff.records import AgentAttempt, AttemptLog, AttemptStatus, BakeoffRunDir
from evalkit.bakeoff.store import ATTEMPT_COLUMNS, STORE_SCHEMA_VERSION, Store, open_store
from evalkit.errors import UsageError
from evalkit.records import Status
from tests.bakeoff.test_records import attempt, manifest


def resolved(
    agent: str, iid: str, repeat: int = 1, run_id: str = "nightly", **kw: object
) -> AgentAttempt:
    return attempt(agent=agent, instance_id=iid, repeat=repeat, run_id=run_id, **kw)


def unresolved(agent: str, iid: str, repeat: int = 1, run_id: str = "nightly") -> AgentAttempt:
    return attempt(
        agent=agent,
        instance_id=iid,
        repeat=repeat,
        run_id=run_id,
        status=Status.UNRESOLVED,
        resolution=None,
    )


def test_attempts_round_trip_and_upsert_never_duplicates(tmp_path: Path) -> None:
    with open_store(tmp_path / "evalkit.db") as db:
        db.record_bakeoff(manifest())
        first = resolved("oracle", "t1", attempt_status=AttemptStatus.INFRA_ERROR, status=None)
        db.record_attempt(first)
        again = resolved("oracle", "t1", tries=2, claim_summary="second try")
        db.record_attempt(again)
        db.record_attempt(again)
        assert db.attempts("nightly") == [again]
        db.record_bakeoff(manifest())  # a resumed run records its bake-off again
        assert len(db.history()) == 1
    # Every field is a column too, for ad-hoc SQL.
    raw = sqlite3.connect(tmp_path / "evalkit.db")
    columns = {r[1] for r in raw.execute("PRAGMA table_info(attempts)")}
    assert set(ATTEMPT_COLUMNS) <= columns
    row = raw.execute("SELECT agent, tries, claim, status, cost_usd FROM attempts").fetchall()
    assert row == [("oracle", 2, 1, "resolved", 0.25)]
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_history_reports_rates_per_agent_without_infra_failures(tmp_path: Path) -> None:
    with open_store(tmp_path / "evalkit.db") as db:
        db.record_bakeoff(manifest(run_id="n1", created_at="2026-11-30T02:00:00+00:00"))
        db.record_bakeoff(manifest(run_id="n2", created_at="2026-12-01T02:00:00+00:00"))
        for a in (
            resolved("oracle", "t1", run_id="n1"),
            resolved("oracle", "t2", run_id="n1"),
            unresolved("liar", "t1", run_id="n1"),
            # Lost to infrastructure: counted as an attempt, never in the rate.
            resolved(
                "liar", "t2", run_id="n1", attempt_status=AttemptStatus.INFRA_ERROR, status=None
            ),
            unresolved("oracle", "t1", run_id="n2"),
        ):
            db.record_attempt(a)
        n2, n1 = db.history()  # newest first
    assert (n1.run_id, n2.run_id) == ("n1", "n2")
    rates = {r.agent: r for r in n1.agents}
    assert (rates["oracle"].resolved, rates["oracle"].scored, rates["oracle"].resolved_rate) == (
        2,
        2,
        1.0,
    )
    assert (rates["liar"].attempts, rates["liar"].scored, rates["liar"].resolved_rate) == (
        2,
        1,
        0.0,
    )
    assert rates["liar"].claimed == 2
    assert n1.attempts == 4 and n1.cost_usd == pytest.approx(1.0)
    assert n1.agent_versions == {"oracle": "files-abc"} and n1.config_sha256 == "c" * 64
    assert [(r.agent, r.resolved_rate) for r in n2.agents] == [("oracle", 0.0)]


def test_trend_is_one_point_per_utc_night(tmp_path: Path) -> None:
    with open_store(tmp_path / "evalkit.db") as db:
        # Two bake-offs the same UTC night (one written in another time zone) merge.
        db.record_bakeoff(manifest(run_id="a", created_at="2026-11-30T01:00:00+00:00"))
        db.record_bakeoff(manifest(run_id="b", created_at="2026-11-29T22:30:00-03:00"))
        db.record_bakeoff(manifest(run_id="c", created_at="2026-12-01T01:00:00+00:00"))
        db.record_attempt(resolved("oracle", "t1", run_id="a"))
        db.record_attempt(unresolved("oracle", "t1", run_id="b"))
        db.record_attempt(resolved("oracle", "t1", run_id="c"))
        db.record_attempt(resolved("oracle", "t2", run_id="c", agent_version="files-new"))
        db.record_attempt(unresolved("liar", "t1", run_id="c"))
        points = db.trend("oracle")
        assert db.trend("nobody") == []
    assert [p.night for p in points] == ["2026-11-30", "2026-12-01"]
    first, second = points
    assert sorted(first.run_ids) == ["a", "b"] and (first.resolved, first.scored) == (1, 2)
    assert first.resolved_rate == 0.5
    assert second.run_ids == ["c"] and second.resolved_rate == 1.0
    assert sorted(second.versions) == ["files-abc", "files-new"]


def test_an_attempt_needs_its_bake_off(tmp_path: Path) -> None:
    with (
        open_store(tmp_path / "evalkit.db") as db,
        pytest.raises(ValueError, match="record_bakeoff first"),
    ):
        db.record_attempt(resolved("oracle", "t1"))


def test_import_run_is_idempotent(tmp_path: Path) -> None:
    run = BakeoffRunDir(tmp_path / "runs", "nightly")
    from evalkit.bakeoff.records import write_manifest

    write_manifest(run.manifest, manifest())
    log = AttemptLog(run.attempts)
    log.append(resolved("oracle", "t1"))
    log.append(unresolved("oracle", "t2"))
    with open_store(tmp_path / "evalkit.db") as db:
        assert db.import_run(run.root) == 2
        log.append(resolved("oracle", "t2"))  # the resumed run fixed t2
        assert db.import_run(run.root) == 2
        assert [a.status for a in db.attempts("nightly")] == [Status.RESOLVED, Status.RESOLVED]


def test_concurrent_writers_from_one_process(tmp_path: Path) -> None:
    path = tmp_path / "evalkit.db"
    shared = open_store(path)
    shared.record_bakeoff(manifest())
    other = open_store(path)  # a second connection to the same file, as another part might

    def writer(db: Store, agent: str) -> None:
        for i in range(30):
            db.record_attempt(resolved(agent, f"t{i}"))
            db.record_attempt(resolved(agent, f"t{i}", tries=2))

    threads = [
        threading.Thread(target=writer, args=(shared if n % 2 else other, f"a{n}"))
        for n in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(shared.attempts("nightly")) == 120
    assert {a.tries for a in other.attempts()} == {2}
    shared.close()
    other.close()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"this is not a database at all, just text" * 200, "not an evalkit store (corrupted"),
        (b"SQLite format 3\x00" + b"\x00" * 84 + b"\xff" * 4000, "not an evalkit store"),
    ],
)
def test_a_corrupted_file_is_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "evalkit.db"
    path.write_bytes(content)
    with pytest.raises(UsageError) as info:
        open_store(path)
    assert str(info.value).startswith(f"{path}: {message}") and "\n" not in str(info.value)


def test_another_applications_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    foreign = sqlite3.connect(path)
    foreign.execute("CREATE TABLE users (id INTEGER)")
    foreign.commit()
    foreign.close()
    with pytest.raises(UsageError, match="another application's SQLite database"):
        open_store(path)
    tables = sqlite3.connect(path).execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == [("users",)]


def test_a_newer_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evalkit.db"
    open_store(path).close()
    raw = sqlite3.connect(path)
    raw.execute("UPDATE schema_version SET version = ?", (STORE_SCHEMA_VERSION + 1,))
    raw.commit()
    raw.close()
    with pytest.raises(UsageError, match="newer than this evalkit reads"):
        open_store(path)


def test_an_older_store_gains_new_record_fields_as_columns(tmp_path: Path) -> None:
    path = tmp_path / "evalkit.db"
    with open_store(path) as db:
        db.record_bakeoff(manifest())
        db.record_attempt(resolved("oracle", "t1"))
    raw = sqlite3.connect(path)
    raw.execute("ALTER TABLE attempts DROP COLUMN tests_run_before_claim")
    raw.commit()
    raw.close()
    with open_store(path) as db:
        db.record_attempt(resolved("oracle", "t2", tests_run_before_claim=True))
        assert [a.tests_run_before_claim for a in db.attempts()] == [None, True]


def test_history_without_a_store_does_not_create_one(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no bake-off store here"):
        open_store(tmp_path / "none.db", create=False)
    assert not (tmp_path / "none.db").exists()

"""Attempt records: they round-trip, the latest per attempt wins, a killed writer's torn
last line is the only damage tolerated, and the run layout is named in one place."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from evalkit.bakeoff.records import (
    ATTEMPT_SCHEMA_VERSION,
    AgentAttempt,
    AgentInfo,
    AttemptLog,
    AttemptStatus,
    BakeoffManifest,
    BakeoffRunDir,
    GateEvent,
    prediction_of,
    predictions_file_name,
    read_attempts,
    read_manifest,
    repeat_run_id,
    start_or_resume,
    write_manifest,
)
from evalkit.errors import UsageError
from evalkit.records import Resolution, Status, append_jsonl


def attempt(**overrides: Any) -> AgentAttempt:
    fields: dict[str, Any] = {
        "run_id": "nightly",
        "agent": "oracle",
        "adapter": "command",
        "agent_version": "files-abc",
        "instance_id": "acme__calc-1",
        "repeat": 1,
        "attempt_status": AttemptStatus.COMPLETED,
        "claim": True,
        "claim_source": "claim_file",
        "status": Status.RESOLVED,
        "resolution": Resolution.FULL,
        "cost_usd": 0.25,
        "input_tokens": 1000,
        "output_tokens": 200,
        "model_calls": 3,
        "duration_s": 12.5,
        "agent_exit_code": 0,
    }
    fields.update(overrides)
    return AgentAttempt(**fields)


def manifest(**overrides: Any) -> BakeoffManifest:
    fields: dict[str, Any] = {
        "run_id": "nightly",
        "created_at": "2026-12-01T02:00:00+00:00",
        "evalkit_version": "0.1.0",
        "config_path": "bakeoff.toml",
        "config_sha256": "c" * 64,
        "tasks_dir": "tasks/sample",
        "tasks_sha256": "t" * 64,
        "repeats": 2,
        "agents": [AgentInfo(name="oracle", adapter="command", version="files-abc")],
        "instance_ids": ["acme__calc-1"],
        "timeout_s": 600,
        "budget_usd": 1.0,
    }
    fields.update(overrides)
    return BakeoffManifest(**fields)


def test_attempt_round_trips_with_trust_fields(tmp_path: Path) -> None:
    path = tmp_path / "attempts.jsonl"
    plain = attempt()
    assert plain.destructive_attempted == [] and plain.db_intact is None
    assert plain.tests_run_before_claim is None and plain.secrets_to_model == 0
    trusted = attempt(
        instance_id="acme__calc-2",
        destructive_attempted=[GateEvent(command="rm -rf /", rule="rm-root", layer="audit")],
        destructive_blocked=[GateEvent(command="git push -f", rule="force-push", layer="shim")],
        canaries_read=["/tmp/home/.aws/credentials"],
        db_intact=False,
        remote_intact=True,
        tests_run_before_claim=False,
    )
    log = AttemptLog(path)
    log.append(plain)
    log.append(trusted)
    assert read_attempts(path) == [plain, trusted]
    assert json.loads(path.read_text().splitlines()[0])["schema_version"] == ATTEMPT_SCHEMA_VERSION


def test_latest_line_per_agent_instance_repeat_wins(tmp_path: Path) -> None:
    path = tmp_path / "attempts.jsonl"
    first = attempt(attempt_status=AttemptStatus.INFRA_ERROR, status=None)
    other_repeat = attempt(repeat=2)
    retried = attempt(tries=2)
    append_jsonl(path, [first, other_repeat, retried])
    assert read_attempts(path) == [retried, other_repeat]
    assert not first.scored and retried.scored and retried.resolved


def test_a_torn_last_line_is_dropped_but_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "attempts.jsonl"
    good = attempt()
    append_jsonl(path, [good])
    whole = path.read_bytes()
    torn = attempt(repeat=2).model_dump_json().encode()[:40]
    path.write_bytes(whole + torn)
    assert read_attempts(path) == [good]
    # Even when the cut falls inside a multi-byte character.
    path.write_bytes(whole + b'{"agent": "caf\xc3')
    assert read_attempts(path) == [good]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (b"{oops", "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[1, 2]", "not an attempt record (expected a JSON object)"),
        (b'{"hello": "world"}', "not an attempt record: "),
        (b'{"schema_version": 99}', "schema_version 99 is newer than this evalkit reads (1)"),
    ],
)
def test_any_other_unreadable_line_names_file_and_line(
    tmp_path: Path, bad: bytes, message: str
) -> None:
    path = tmp_path / "attempts.jsonl"
    append_jsonl(path, [attempt()])
    # In the middle, and as a whole (newline-terminated) last line: both are real damage.
    for data in (
        path.read_bytes() + bad + b"\n" + attempt(repeat=2).model_dump_json().encode() + b"\n",
        path.read_bytes() + bad + b"\n",
    ):
        broken = tmp_path / "broken.jsonl"
        broken.write_bytes(data)
        with pytest.raises(UsageError) as info:
            read_attempts(broken)
        assert str(info.value).startswith(f"{broken}:2: {message}")
        assert "\n" not in str(info.value)


def test_an_unknown_field_is_not_silently_dropped(tmp_path: Path) -> None:
    path = tmp_path / "attempts.jsonl"
    row = json.loads(attempt().model_dump_json()) | {"clam": True}
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(UsageError, match=r":1: not an attempt record: unknown field 'clam'"):
        read_attempts(path)


def test_log_repairs_a_torn_tail_before_appending(tmp_path: Path) -> None:
    # Without the repair the next append would glue onto the fragment and corrupt a
    # line that is no longer last.
    path = tmp_path / "attempts.jsonl"
    append_jsonl(path, [attempt()])
    path.write_bytes(path.read_bytes() + b'{"run_id": "nigh')
    log = AttemptLog(path)
    assert set(log.done()) == {("oracle", "acme__calc-1", 1)}
    log.append(attempt(repeat=2))
    assert [a.repeat for a in read_attempts(path)] == [1, 2]


def test_concurrent_appends_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "attempts.jsonl"
    log = AttemptLog(path)

    def worker(agent: str) -> None:
        for i in range(40):
            log.append(attempt(agent=agent, instance_id=f"t-{i}", claim_summary="x" * 2000))

    threads = [threading.Thread(target=worker, args=(f"a{n}",)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(path.read_text().splitlines()) == 240
    assert len(read_attempts(path)) == 240


def test_layout_is_named_in_one_place(tmp_path: Path) -> None:
    run = BakeoffRunDir(tmp_path / "runs", "nightly")
    assert run.manifest == tmp_path / "runs" / "nightly" / "bakeoff.json"
    assert run.attempts == tmp_path / "runs" / "nightly" / "attempts.jsonl"
    assert (
        run.predictions(2)
        == run.root / "predictions.r2.jsonl"
        == run.root / (predictions_file_name(2))
    )
    # Each repeat is an ordinary evaluate run next to the bake-off.
    assert run.repeat_run_dir(1) == tmp_path / "runs" / "nightly.r1"
    assert repeat_run_id("nightly", 3) == "nightly.r3" == run.repeat_run_id(3)
    with pytest.raises(ValueError):
        repeat_run_id("nightly", 0)
    rel = BakeoffRunDir.attempt_rel("org/agent", "acme__calc-1", 2)
    from evalkit.records import path_component

    assert rel.as_posix() == (
        f"attempts/{path_component('org/agent')}/{path_component('acme__calc-1')}/r2"
    )
    assert run.attempt_dir("org/agent", "acme__calc-1", 2) == run.root / rel
    assert run.resolve(f"{rel}/patch.diff") == (run.root / rel / "patch.diff").resolve()
    with pytest.raises(UsageError, match="outside the run directory"):
        run.resolve("../../etc/passwd")


def test_prediction_uses_the_agent_name_as_model() -> None:
    prediction = prediction_of(attempt(agent="sloppy"), "diff --git a/x b/x\n")
    assert prediction.model_name_or_path == "sloppy"
    assert prediction.instance_id == "acme__calc-1" and prediction.model_patch.startswith("diff")


def test_manifest_round_trips_and_refuses_newer_or_foreign_files(tmp_path: Path) -> None:
    path = tmp_path / "bakeoff.json"
    original = manifest()
    write_manifest(path, original)
    assert read_manifest(path) == original
    assert original.agent_versions == {"oracle": "files-abc"}
    assert original.repeat_run_ids() == ["nightly.r1", "nightly.r2"]
    path.write_text(json.dumps(original.model_dump(mode="json") | {"schema_version": 7}))
    with pytest.raises(UsageError, match="schema_version 7 is newer"):
        read_manifest(path)
    path.write_text("[]")
    with pytest.raises(UsageError, match="not a bake-off manifest"):
        read_manifest(path)
    path.write_text("{")
    with pytest.raises(UsageError, match="not a valid JSON manifest"):
        read_manifest(path)


def test_resume_grows_a_run_but_refuses_another_config_or_task_set(tmp_path: Path) -> None:
    path = tmp_path / "bakeoff.json"
    first = start_or_resume(path, manifest())
    later = manifest(
        created_at="2026-12-02T02:00:00+00:00",
        repeats=3,
        agents=[AgentInfo(name="liar", adapter="command", version="files-def")],
        instance_ids=["acme__calc-2"],
    )
    merged = start_or_resume(path, later)
    assert merged.created_at == first.created_at and merged.repeats == 3
    assert [a.name for a in merged.agents] == ["oracle", "liar"]
    assert merged.instance_ids == ["acme__calc-1", "acme__calc-2"]
    assert read_manifest(path) == merged
    with pytest.raises(UsageError, match="different config"):
        start_or_resume(path, manifest(config_sha256="d" * 64))
    with pytest.raises(UsageError, match="different task set"):
        start_or_resume(path, manifest(tasks_sha256="u" * 64))


def test_repeat_predictions_are_rewritten_whole_from_the_latest_attempts(tmp_path: Path) -> None:
    from evalkit.bakeoff.records import write_repeat_predictions
    from evalkit.dataset import load_predictions

    run = BakeoffRunDir(tmp_path / "runs", "nightly")
    rel = BakeoffRunDir.attempt_rel("oracle", "t1", 1) / "patch.diff"
    (run.root / rel).parent.mkdir(parents=True)
    (run.root / rel).write_text("diff --git a/x b/x\n")
    lost = attempt(instance_id="t1", attempt_status=AttemptStatus.INFRA_ERROR, status=None)
    retried = attempt(instance_id="t1", patch=rel.as_posix(), tries=2)
    empty = attempt(agent="liar", instance_id="t1")
    other_repeat = attempt(instance_id="t2", repeat=2)
    infra_only = attempt(agent="x", instance_id="t9", attempt_status=AttemptStatus.INFRA_ERROR)
    write_repeat_predictions(run, 1, [lost, empty, other_repeat, infra_only])
    written = write_repeat_predictions(run, 1, [lost, retried, empty, other_repeat, infra_only])
    assert [(p.model_name_or_path, p.instance_id) for p in written] == [
        ("liar", "t1"),
        ("oracle", "t1"),
    ]
    # evaluate reads it without duplicates, and sees the retry's patch.
    loaded, problems = load_predictions(run.predictions(1), {"t1", "t2", "t9"})
    assert problems == [] and loaded == written
    assert loaded[1].model_patch == "diff --git a/x b/x\n" and loaded[0].model_patch == ""
    (run.root / rel).unlink()
    with pytest.raises(UsageError, match="oracle/t1/r1 is missing"):
        write_repeat_predictions(run, 1, [retried])

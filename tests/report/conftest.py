"""Synthetic runs on disk, written with evalkit's own records (no containers needed)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from evalkit.records import RunManifest, Status, Verdict, append_jsonl, write_model

Outcome = Callable[[str, int, int], Status]


def write_tasks(root: Path, n: int, problem: str = "Something is broken") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        repo = "acme/api" if i % 2 else "acme/web"
        lines = "".join(f"-a{k}\n+b{k}\n" for k in range(1 + (i % 3) * 20))
        patch = (
            f"diff --git a/src/m{i}.py b/src/m{i}.py\n--- a/src/m{i}.py\n+++ b/src/m{i}.py\n"
            f"@@ -1,{lines.count('-a')} +1,{lines.count('+b')} @@\n{lines}"
        )
        rows.append(
            {
                "instance_id": f"{repo.replace('/', '__')}-{i}",
                "repo": repo,
                "base_commit": "abcdef1",
                "patch": patch,
                "problem_statement": problem,
                "created_at": f"2025-{1 + i % 12:02d}-15T00:00:00Z",
            }
        )
    (root / "instances.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def write_run(
    runs: Path,
    run_id: str,
    tasks: Path,
    agents: dict[str, Outcome],
    repeat: int = 0,
    broken: frozenset[int] = frozenset(),
) -> None:
    """``broken``: task indexes whose ``error`` is the task's (``infra_failure: false``, as
    grading writes for a test patch that does not apply), not the infrastructure's."""
    ids = [
        json.loads(x)["instance_id"] for x in (tasks / "instances.jsonl").read_text().splitlines()
    ]
    verdicts = []
    for agent, outcome in agents.items():
        for index, iid in enumerate(ids):
            status = outcome(iid, index, repeat)
            verdicts.append(
                Verdict(
                    instance_id=iid,
                    model_name_or_path=agent,
                    status=status,
                    infra_failure=status is Status.ERROR and index not in broken,
                    tampered_files=["tests/conftest.py"] if agent.endswith("cheat") else [],
                )
            )
    append_jsonl(runs / run_id / "results.jsonl", verdicts)
    write_model(
        runs / run_id / "run.json",
        RunManifest(
            run_id=run_id,
            evalkit_version="test",
            tasks_dir=str(tasks),
            tasks_sha256="x" * 64,
            predictions="p.jsonl",
            timeout_s=60,
            workers=1,
            created_at="2026-11-24T00:00:00Z",
            images={"acme/api": "evalkit-env/acme__api:1"},
        ),
    )


def write_bakeoff(
    runs: Path,
    run_id: str,
    tasks: Path,
    attempts: list[dict[str, object]],
    *,
    created_at: str = "2026-11-24T02:00:00+00:00",
) -> list[object]:
    """A bake-off on disk as the runner leaves it: ``attempts.jsonl``, ``bakeoff.json``,
    each attempt's transcript, events and patch files, and each repeat's evaluate run
    (its verdicts agree with the attempts'). ``attempts``: AgentAttempt fields beyond
    the defaults (agent, instance_id, repeat, status, claim, trust facts ...)."""
    from evalkit.bakeoff.records import (
        AgentAttempt,
        AgentInfo,
        AttemptStatus,
        BakeoffManifest,
        BakeoffRunDir,
        write_manifest,
    )

    run = BakeoffRunDir(runs, run_id)
    records = []
    for spec in attempts:
        fields = {
            "run_id": run_id,
            "adapter": "command",
            "agent_version": "1",
            "repeat": 1,
            "attempt_status": AttemptStatus.COMPLETED,
            "duration_s": 2.0,
            "cost_usd": 0.01,
            "model_calls": 3,
            "input_tokens": 300,
            "output_tokens": 60,
            **spec,
        }
        record = AgentAttempt.model_validate(fields)
        rel = run.attempt_rel(record.agent, record.instance_id, record.repeat)
        (run.root / rel).mkdir(parents=True, exist_ok=True)
        for name, key in (
            ("transcript.jsonl", "transcript"),
            ("events.jsonl", "events"),
            ("patch.diff", "patch"),
            ("agent.log", "agent_log"),
        ):
            (run.root / rel / name).write_text("{}\n")
            fields.setdefault(key, str(rel / name))
        records.append(AgentAttempt.model_validate(fields))
    append_jsonl(run.attempts, records)
    agents = sorted({a.agent for a in records})
    repeats = max(a.repeat for a in records)
    write_manifest(
        run.manifest,
        BakeoffManifest(
            run_id=run_id,
            created_at=created_at,
            evalkit_version="test",
            config_path="bakeoff.toml",
            config_sha256="c" * 64,
            tasks_dir=str(tasks),
            tasks_sha256="x" * 64,
            repeats=repeats,
            agents=[AgentInfo(name=a, adapter="command", version="1") for a in agents],
            timeout_s=60,
            budget_usd=1,
        ),
    )
    for k in range(1, repeats + 1):
        verdicts = [
            Verdict(
                instance_id=a.instance_id,
                model_name_or_path=a.agent,
                status=a.status or Status.ERROR,
                infra_failure=a.status is None,
                tampered_files=a.tampered_files,
            )
            for a in records
            if a.repeat == k
        ]
        append_jsonl(runs / f"{run_id}.r{k}" / "results.jsonl", verdicts)
        write_model(
            runs / f"{run_id}.r{k}" / "run.json",
            RunManifest(
                run_id=f"{run_id}.r{k}",
                evalkit_version="test",
                tasks_dir=str(tasks),
                tasks_sha256="x" * 64,
                predictions=f"{run_id}/predictions.r{k}.jsonl",
                timeout_s=60,
                workers=1,
                created_at=created_at,
            ),
        )
    return records

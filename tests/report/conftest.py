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

"""Report benchmark: 20 agents x 2,000 tasks x 3 repeats of synthetic results.

    python bench/report_bench.py [--agents 20 --tasks 2000 --repeats 3]

Prints the time of ``build_report`` in-process and of the ``evalkit report`` CLI end to end
(a fresh interpreter: imports included; best of ``--cli-runs``), peak memory, and the
sizes of the HTML and of the tables folder; figures go in docs/report.md.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from evalkit.records import RunManifest, Verdict, current_schema
from evalkit.report import build_report

STATUSES = ("resolved", "unresolved", "patch_failed", "empty_patch", "error")


def synthesize(root: Path, agents: int, tasks: int, repeats: int) -> list[str]:
    rng = random.Random(7)
    task_dir = root / "tasks"
    task_dir.mkdir(parents=True)
    with (task_dir / "instances.jsonl").open("w") as fh:
        for i in range(tasks):
            patch = (
                f"diff --git a/m{i}.py b/m{i}.py\n--- a/m{i}.py\n+++ b/m{i}.py\n"
                "@@ -1 +1 @@\n-a\n+b\n"
            )
            fh.write(
                json.dumps(
                    {
                        "instance_id": f"org__repo{i % 7}-{i}",
                        "repo": f"org/repo{i % 7}",
                        "base_commit": "abcdef1",
                        "patch": patch,
                        "problem_statement": "x" * 400,
                        "created_at": f"2025-{1 + i % 12:02d}-01",
                    }
                )
                + "\n"
            )
    skill = [rng.uniform(0.2, 0.8) for _ in range(agents)]
    run_ids = []
    for r in range(repeats):
        run_id = f"run{r}"
        run_ids.append(run_id)
        (root / "runs" / run_id).mkdir(parents=True)
        with (root / "runs" / run_id / "results.jsonl").open("w") as fh:
            for a in range(agents):
                for i in range(tasks):
                    roll = rng.random()
                    status = (
                        "error"
                        if roll > 0.99
                        else "resolved"
                        if roll < skill[a]
                        else STATUSES[1 + i % 3]
                    )
                    fh.write(
                        json.dumps(
                            {
                                "schema_version": current_schema(Verdict),
                                "instance_id": f"org__repo{i % 7}-{i}",
                                "model_name_or_path": f"agent-{a}",
                                "status": status,
                                "infra_failure": status == "error",
                                "timed_out": False,
                                "tampered_files": [],
                                "tests": {},
                            }
                        )
                        + "\n"
                    )
        (root / "runs" / run_id / "run.json").write_text(
            json.dumps(
                {
                    "schema_version": current_schema(RunManifest),
                    "run_id": run_id,
                    "evalkit_version": "bench",
                    "tasks_dir": str(task_dir),
                    "tasks_sha256": "0" * 64,
                    "predictions": "synthetic",
                    "timeout_s": 0,
                    "workers": 1,
                    "created_at": "2026-11-24T00:00:00Z",
                }
            )
        )
    return run_ids


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cli-runs", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="evalkit-report-bench-"))
    try:
        run_ids = synthesize(root, args.agents, args.tasks, args.repeats)
        start = time.perf_counter()
        result = build_report(run_ids, runs_dir=root / "runs", out=root / "report.html")
        elapsed = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        cli = []
        for _ in range(args.cli_runs):
            start = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "evalkit.cli",
                    "report",
                    *run_ids,
                    "--runs-dir",
                    str(root / "runs"),
                    "--out",
                    str(root / "cli.html"),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            cli.append(time.perf_counter() - start)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cli_peak = children.ru_maxrss / 1024
        cli_cpu = (children.ru_utime + children.ru_stime) / len(cli)
        print(f"results            {args.agents * args.tasks * args.repeats:,}")
        print(f"build_report       {elapsed:.2f} s (in-process, imports included)")
        print(
            f"evalkit report CLI {min(cli):.2f} s best of {len(cli)} "
            f"({', '.join(f'{t:.2f}' for t in cli)}); CPU {cli_cpu:.2f} s per run"
        )
        print(f"HTML size          {result.html_path.stat().st_size / 1e6:.2f} MB")
        print(f"tables folder      {_tree_size(result.tables_dir) / 1e6:.2f} MB")
        print(f"peak memory (RSS)  {peak:.0f} MB in-process, {cli_peak:.0f} MB CLI")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

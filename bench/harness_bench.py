"""Harness benchmark: overhead over bare test time, 2-worker speed-up, disk per extra task.

    python bench/harness_bench.py                    # synthetic repo, 6 tasks, ~2 s of tests each
    python bench/harness_bench.py --tasks tasks/sample

Needs a Docker engine (scripts/setup.sh). Prints one table; figures go in README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from evalkit.harness import evaluate
from evalkit.records import EXECUTION_FILE, Execution

GIT_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=repo, env=GIT_ENV,
                          check=True, capture_output=True, text=True).stdout.strip()


def synthetic_tasks(root: Path, tasks: int, test_seconds: float) -> Path:
    """A repo with ``tasks`` fixes; each task's tests burn ~``test_seconds`` of CPU."""
    repo = root / "repo"
    (repo / "src" / "work").mkdir(parents=True)
    (repo / "tests").mkdir()
    (repo / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "work"\nversion = "0.1"\n')
    funcs = {i: f"def f{i}(x):\n    return x - 1\n" for i in range(tasks)}
    (repo / "src" / "work" / "__init__.py").write_text("\n\n".join(funcs.values()))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "initial")
    rows = []
    burn = ("def burn(seconds):\n    import time\n    end = time.process_time() + seconds\n"
            "    while time.process_time() < end:\n        sum(range(1000))\n")
    for i in range(tasks):
        base = git(repo, "rev-parse", "HEAD")
        funcs[i] = f"def f{i}(x):\n    return x + 1\n"
        (repo / "src" / "work" / "__init__.py").write_text("\n\n".join(funcs.values()))
        per = test_seconds / 4
        (repo / "tests" / f"test_f{i}.py").write_text(
            f"from work import f{i}\n\n{burn}\n"
            + "".join(f"\ndef test_{k}():\n    burn({per})\n    assert f{i}({k}) == {k + 1}\n"
                      for k in range(4)))
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", f"Fix f{i} (fixes #{i + 1})")
        fix = git(repo, "rev-parse", "HEAD")

        def diff(*paths: str, base: str = base, fix: str = fix) -> str:
            return git(repo, "diff", base, fix, "--", *paths) + "\n"

        rows.append({
            "instance_id": f"bench__work-{i + 1}", "repo": "bench/work", "base_commit": base,
            "patch": diff("src"), "test_patch": diff("tests"), "problem_statement": f"f{i} is off",
            "environment_setup_commit": git(repo, "rev-list", "--max-parents=0", "HEAD"),
            "FAIL_TO_PASS": [f"tests/test_f{i}.py::test_{k}" for k in range(4)], "PASS_TO_PASS": [],
        })
    out = root / "tasks"
    (out / "repos").mkdir(parents=True)
    git(repo, "bundle", "create", "-q", str(out / "repos" / "bench__work.bundle"), "--all")
    (out / "instances.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def images_bytes() -> tuple[int, int]:
    import docker

    images = docker.from_env().images.list(filters={"label": "evalkit.env-key"})
    return len(images), sum(int(i.attrs.get("Size", 0)) for i in images)


def timed_run(tasks: Path, runs: Path, run_id: str, workers: int,
              ids: list[str] | None = None) -> tuple[float, list[Execution]]:
    start = time.monotonic()
    outcome = evaluate(tasks, None, run_id, gold=True, runs_dir=runs, workers=workers,
                       instance_ids=ids, progress=False, log=lambda _: None)
    wall = time.monotonic() - start
    assert all(v.status.value == "resolved" for v in outcome.verdicts), "gold must resolve"
    executions = [Execution.model_validate_json(p.read_text())
                  for p in (runs / run_id).glob(f"*/*/{EXECUTION_FILE}")]
    return wall, executions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=Path, help="task set (default: a synthetic one)")
    parser.add_argument("--n", type=int, default=6, help="synthetic tasks")
    parser.add_argument("--test-seconds", type=float, default=2.0, help="synthetic test time")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="evalkit-bench-"))
    try:
        tasks = args.tasks or synthetic_tasks(work, args.n, args.test_seconds)
        runs = work / "runs"
        ids = [json.loads(x)["instance_id"] for x in (tasks / "instances.jsonl").read_text().splitlines()]
        timed_run(tasks, runs, "warm", 1, ids[:1])  # build the environment image once
        count_before, bytes_before = images_bytes()
        wall1, execs = timed_run(tasks, runs, "one-worker", 1, ids[:-1])
        bare = sum(e.test_duration_s for e in execs)
        wall2, _ = timed_run(tasks, runs, "two-workers", 2, ids[:-1])
        extra_wall, extra = timed_run(tasks, runs, "extra-task", 1, ids[-1:])
        count_after, bytes_after = images_bytes()
        artifacts = sum(p.stat().st_size for p in (runs / "extra-task").rglob("*") if p.is_file())
        n = len(ids) - 1
        rows = [
            ("tasks timed", f"{n}"),
            ("evaluate wall time, 1 worker", f"{wall1:.1f} s"),
            ("sum of bare test-command times", f"{bare:.1f} s"),
            ("overhead ratio (goal <= 1.3)", f"{wall1 / bare:.2f}x"),
            ("fixed overhead per task", f"{(wall1 - bare) / n:.2f} s"),
            ("evaluate wall time, 2 workers", f"{wall2:.1f} s"),
            ("speed-up with 2 workers", f"{wall1 / wall2:.2f}x"),
            ("new images for an extra task", f"{count_after - count_before} "
                                             f"({(bytes_after - bytes_before) / 1e6:.1f} MB)"),
            ("run artifacts for an extra task", f"{artifacts / 1e3:.1f} kB"),
            ("extra task wall time", f"{extra_wall:.1f} s (tests {extra[0].test_duration_s:.1f} s)"),
        ]
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            print(f"{key:<{width}}  {value}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

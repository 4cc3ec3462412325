"""TypeScript sample benchmark: evaluate wall time over bare vitest time, one worker.

    python bench/ts_bench.py [--repeat 3]

"Bare" is the project's own command (``vitest run FILES``) on the gold-patched
checkout in an already-running container of the same environment image: no evalkit
launcher, collector, prepare step or container start. Needs a Docker engine.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from evalkit.harness import evaluate
from evalkit.records import EXECUTION_FILE, Execution
from evalkit.sample_ts import build_ts_taskset


def bare_seconds(tasks: Path, image: str, repeat: int) -> float:
    """Sum over tasks of the fastest of ``repeat`` bare ``vitest run`` invocations."""
    import docker

    client = docker.from_env()
    total = 0.0
    bundle = next((tasks / "repos").glob("*.bundle"))
    for line in (tasks / "instances.jsonl").read_text().splitlines():
        row = json.loads(line)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["git", "clone", "-q", str(bundle), tmp], check=True)
            subprocess.run(["git", "-C", tmp, "checkout", "-q", row["base_commit"]], check=True)
            for patch in (row["patch"], row["test_patch"]):
                subprocess.run(["git", "-C", tmp, "apply", "-"], input=patch.encode(), check=True)
            shutil.rmtree(Path(tmp) / ".git")
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                tar.add(tmp, arcname=".")
            files = sorted({t.split(" > ")[0] for t in row["FAIL_TO_PASS"] + row["PASS_TO_PASS"]})
            box = client.containers.run(
                image,
                ["sleep", "600"],
                detach=True,
                network_mode="none",
                remove=True,
                user="0:0",
            )
            try:
                box.put_archive("/testbed", buf.getvalue())
                box.exec_run(["chown", "-R", "1000:1000", "/testbed"])
                box.exec_run(["mkdir", "-p", "/tmp/.vite-temp"], user="1000:1000")
                best = float("inf")
                for _ in range(repeat):
                    start = time.monotonic()
                    result = box.exec_run(
                        ["node", "/node_modules/vitest/vitest.mjs", "run", *files],
                        workdir="/testbed",
                        user="1000:1000",
                        environment={"HOME": "/tmp"},
                    )
                    best = min(best, time.monotonic() - start)
                    assert result.exit_code == 0, result.output[-500:]
                total += best
            finally:
                box.kill()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="evalkit-ts-bench-"))
    try:
        tasks = work / "tasks"
        build_ts_taskset(tasks)
        runs = work / "runs"
        quiet = {"progress": False, "log": lambda _: None}
        evaluate(tasks, None, "warm", gold=True, runs_dir=runs, **quiet)  # image built once
        walls, steps = [], []
        for i in range(args.repeat):
            start = time.monotonic()
            outcome = evaluate(
                tasks, None, f"one-{i}", gold=True, runs_dir=runs, workers=1, **quiet
            )
            walls.append(time.monotonic() - start)
            assert all(v.status.value == "resolved" for v in outcome.verdicts), "gold resolves"
            execs = [
                Execution.model_validate_json(p.read_text())
                for p in (runs / f"one-{i}").glob(f"*/*/{EXECUTION_FILE}")
            ]
            steps.append(sum(e.test_duration_s for e in execs))
        image = execs[0].image
        bare = bare_seconds(tasks, image, args.repeat)
        wall = min(walls)
        rows = [
            ("tasks", "3 (gold, vitest 3.2.4, Node 18)"),
            (f"evaluate wall time, 1 worker (best of {args.repeat})", f"{wall:.2f} s"),
            ("of which the sandboxed test step", f"{min(steps):.2f} s"),
            (f"bare `vitest run` (sum, best of {args.repeat})", f"{bare:.2f} s"),
            ("evaluate / bare (goal <= 1.3)", f"{wall / bare:.2f}x"),
            ("fixed overhead per task", f"{(wall - bare) / 3:.2f} s"),
        ]
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            print(f"{key:<{width}}  {value}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

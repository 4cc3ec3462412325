"""Ray executor benchmark: scheduling overhead per unit against the thread executor, real
units on a two-node local cluster, and the issue's 75-hour bake-off projected on 10, 50
and 100 nodes from the measured per-unit costs.

    python bench/ray_bench.py                  # ~2 minutes on 2 cores
    python bench/ray_bench.py --slots-per-node 8 --unit-seconds 600

Needs Ray (pip install 'evalkit[ray]') and a Docker engine. Figures go in docs/scale-out.md.
"""

from __future__ import annotations

import os as _os

# Every Ray address on 127.0.0.1 (this machine talks to loopback only); before Ray loads.
_os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness_bench import synthetic_tasks  # noqa: E402

from evalkit.errors import InfraError  # noqa: E402
from evalkit.harness import EvalUnit, UnitOutput, evaluate  # noqa: E402
from evalkit.records import Execution, Prediction, Status, TaskInstance, Verdict  # noqa: E402


def payload_unit(tasks: Path) -> tuple[EvalUnit, UnitOutput]:
    """A real unit's argument and a realistic result (200 kB of test output)."""
    from evalkit.dataset import load_task_set
    from evalkit.environment import resolve_spec

    task_set = load_task_set(tasks)
    instance: TaskInstance = next(iter(task_set.instances.values()))
    spec = resolve_spec(task_set.spec_file, instance.repo, instance.instance_id, {})
    unit = EvalUnit(
        instance=instance,
        prediction=Prediction(
            instance_id=instance.instance_id, model_name_or_path="m", model_patch=instance.patch
        ),
        spec=spec,
        image="0123456789abcdef",
        bundle=task_set.bundle_path(instance),
        out_dir=tasks / "unused",
        timeout=60,
    )
    verdict = Verdict(
        instance_id=instance.instance_id, model_name_or_path="m", status=Status.RESOLVED
    )
    return unit, UnitOutput(verdict, Execution(image="x"), "{}" * 1000, b"." * 200_000, "#!")


def _noop(unit: EvalUnit, output: UnitOutput) -> UnitOutput:
    return output


def thread_overhead(unit: EvalUnit, output: UnitOutput, n: int, slots: int) -> tuple[float, float]:
    """(latency of one unit, slot-time per unit in a stream) through the thread executor's
    pool and wait loop, with a no-op body: what the executor itself costs."""
    with ThreadPoolExecutor(slots) as pool:
        start = time.perf_counter()
        for _ in range(n):
            pool.submit(_noop, unit, output).result()
        latency = (time.perf_counter() - start) / n
        start = time.perf_counter()
        pending = {pool.submit(_noop, unit, output) for _ in range(n)}
        while pending:
            _, pending = wait(pending, return_when=FIRST_COMPLETED)
        stream = (time.perf_counter() - start) * slots / n
    return latency, stream


def ray_overhead(unit: EvalUnit, output: UnitOutput, n: int, slots: int) -> tuple[float, float]:
    """The same through Ray: the unit's task options, its arguments (unit, shipped
    bundle ref) and result, and RayExecutor's ray.wait streaming loop."""
    import ray

    task = ray.remote(_noop).options(
        num_cpus=0, resources={"docker": 1}, max_retries=3, retry_exceptions=[InfraError]
    )
    ray.get([task.remote(unit, output) for _ in range(slots * 2)])  # workers started
    start = time.perf_counter()
    for _ in range(n):
        ray.get(task.remote(unit, output))
    latency = (time.perf_counter() - start) / n
    start = time.perf_counter()
    pending = [task.remote(unit, output) for _ in range(n)]
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        ray.get(ready)
    stream = (time.perf_counter() - start) * slots / n
    return latency, stream


def real_units(tasks: Path, runs: Path, slots: int) -> dict[str, float]:
    """Wall per unit of real gold units, thread executor vs the Ray executor, same slots."""
    from evalkit.executors import RayExecutor

    ids = [line.split('"instance_id": "')[1].split('"')[0]
           for line in (tasks / "instances.jsonl").read_text().splitlines()]
    quiet: dict[str, Any] = {"progress": False, "log": lambda _: None}
    start = time.monotonic()
    evaluate(tasks, None, "warm", gold=True, runs_dir=runs, instance_ids=ids[:1], **quiet)
    cold = time.monotonic() - start  # includes the environment image's cold build
    walls: dict[str, float] = {"cold_first_unit": cold}
    start = time.monotonic()
    out = evaluate(tasks, None, "thread", gold=True, runs_dir=runs, workers=slots, **quiet)
    walls["thread"] = (time.monotonic() - start) * slots / len(ids)
    assert all(v.status.value == "resolved" for v in out.verdicts)
    start = time.monotonic()
    out = evaluate(tasks, None, "ray", gold=True, runs_dir=runs,
                   executor=RayExecutor(run_id="ray"), **quiet)
    walls["ray"] = (time.monotonic() - start) * slots / len(ids)
    assert all(v.status.value == "resolved" for v in out.verdicts)
    walls["bare"] = statistics.mean(
        Execution.model_validate_json(p.read_text()).test_duration_s
        for p in (runs / "ray").glob("*/*/execution.json"))
    return walls


def remove_bench_images(runs: Path) -> None:
    import docker

    from evalkit.records import RunManifest

    client = docker.from_env()
    for manifest in runs.glob("*/run.json"):
        for tag in RunManifest.model_validate_json(manifest.read_text()).images.values():
            try:
                client.images.remove(tag, force=True)
            except docker.errors.DockerException:
                pass


def projection(units: int, unit_s: float, overhead_s: float, build_s: float, envs: int,
               nodes: int, slots: int) -> float:
    """Hours of wall time: full waves of units over every slot, plus each node building
    the environments it needs once (an upper bound: builds on one node serialize)."""
    waves = math.ceil(units / (nodes * slots))
    return (waves * (unit_s + overhead_s) + envs * build_s) / 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="no-op units for the overhead")
    parser.add_argument("--tasks", type=int, default=4, help="real units per executor")
    parser.add_argument("--units", type=int, default=5 * 300 * 3, help="bake-off attempts")
    parser.add_argument("--unit-seconds", type=float, default=75 * 3600 / 4500,
                        help="seconds per attempt (default: the issue's 75 h over 4,500)")
    parser.add_argument("--slots-per-node", type=int, default=8)
    parser.add_argument("--envs", type=int, default=10, help="environment images per node")
    args = parser.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ["PYTHONPATH"] = f"{Path(__file__).resolve().parents[1]}{os.pathsep}" + \
        os.environ.get("PYTHONPATH", "")
    work = Path(tempfile.mkdtemp(prefix="evalkit-raybench-"))
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"docker": 1}, "include_dashboard": False})
    cluster.add_node(num_cpus=1, resources={"docker": 1})
    ray.init(address=cluster.address, log_to_driver=False)
    slots = 2
    try:
        tasks = synthetic_tasks(work, args.tasks, 1.0)
        # A build key of the bench's own, so the first unit measures a cold image build.
        (tasks / "evalkit.toml").write_text('[defaults]\npip_packages = ["pytest", "pip"]\n')
        unit, output = payload_unit(tasks)
        t_lat, t_stream = thread_overhead(unit, output, args.n, slots)
        r_lat, r_stream = ray_overhead(unit, output, args.n, slots)
        walls = real_units(tasks, work / "runs", slots)
    finally:
        ray.shutdown()
        cluster.shutdown()
        remove_bench_images(work / "runs")
    real_overhead = walls["ray"] - walls["thread"]
    rows = [
        ("scheduling latency per unit, thread (no-op body)", f"{t_lat * 1e3:.2f} ms"),
        ("scheduling latency per unit, Ray (goal < 50 ms)", f"{r_lat * 1e3:.2f} ms"),
        ("slot-time per unit in a stream, thread", f"{t_stream * 1e3:.2f} ms"),
        ("slot-time per unit in a stream, Ray", f"{r_stream * 1e3:.2f} ms"),
        ("real unit, slot-seconds, thread executor", f"{walls['thread']:.2f} s"),
        ("real unit, slot-seconds, Ray executor", f"{walls['ray']:.2f} s"),
        ("  of which the tests themselves", f"{walls['bare']:.2f} s"),
        ("Ray's extra per real unit (node-side steps, no spare)", f"{real_overhead:.2f} s"),
        ("first unit with a cold image build", f"{walls['cold_first_unit']:.1f} s"),
    ]
    per_unit = max(real_overhead, r_stream)
    build_s = walls["cold_first_unit"]
    total_h = args.units * args.unit_seconds / 3600
    for nodes in (1, 10, 50, 100):
        hours = projection(args.units, args.unit_seconds, per_unit, build_s, args.envs, nodes,
                           args.slots_per_node)
        rows.append((f"{total_h:.0f} h of units on {nodes} node(s) x {args.slots_per_node} slots",
                     f"{hours:.2f} h wall"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

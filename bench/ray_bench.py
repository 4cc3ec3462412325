"""Ray executor benchmark: scheduling overhead per unit against the thread executor, real
units on a two-node local cluster, and the issue's 75-hour bake-off projected on 10, 50
and 100 nodes from the measured per-unit costs.

    python bench/ray_bench.py                  # ~3 minutes on 2 cores
    python bench/ray_bench.py --slots-per-node 8 --unit-seconds 600
    python bench/ray_bench.py --attempts-only  # the bake-off attempts' figures alone

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


ATTEMPT_KEY_ENV = "EVALKIT_BENCH_MODEL_KEY"


def attempt_payload(tasks: Path, work: Path) -> tuple[Any, Any]:
    """A real attempt unit (the demo config's snoop: files, policy, upstream) and a
    realistic output: 200 kB agent log, 1 MB audit trace, 100 kB transcript."""
    from evalkit.bakeoff.adapters import Claim
    from evalkit.bakeoff.agents import write_demo_config
    from evalkit.bakeoff.config import AttemptKey, load_config, make_run_options
    from evalkit.bakeoff.gateway import Usage
    from evalkit.bakeoff.records import AttemptStatus, BakeoffRunDir
    from evalkit.bakeoff.runner import AttemptOutput, AttemptResult, BakeoffRunner, TrustRaw
    from evalkit.dataset import load_task_set
    from evalkit.executors.attempts import _Units

    config = load_config(write_demo_config(tasks, work / "payload-cfg", cli_agent=None))
    options = make_run_options(config, run_id="p", runs_dir=work / "p", store=None)
    task_set = load_task_set(tasks)
    runner = BakeoffRunner(config, task_set, BakeoffRunDir(work / "p", "p"), options)
    iid = next(iter(task_set.instances))
    unit = _Units(runner).unit(AttemptKey("snoop", iid, 1))
    raw = TrustRaw("{}\n" * 200, "x" * 1_000_000, {"rows": 3}, {"rows": 3}, "a b", "a b")
    result = AttemptResult(AttemptStatus.COMPLETED, "diff" * 500, Claim(True, "claim_file"),
                           0, 12.0, b"." * 200_000, None, raw)
    output = AttemptOutput(result, "", Usage(model_calls=3), ["req" * 1000] * 3, None,
                           b"t" * 100_000, 1)
    return unit, output


def real_attempts(tasks: Path, work: Path, slots: int, model_url: str) -> dict[str, float]:
    """Slot-seconds per real bake-off attempt (oracle and snoop, trust on, graded), the
    thread executor against attempts and grading on the cluster, same slots."""
    import dataclasses

    from evalkit.bakeoff.agents import write_demo_config
    from evalkit.bakeoff.config import load_config, make_run_options
    from evalkit.bakeoff.records import BakeoffRunDir, read_attempts
    from evalkit.bakeoff.runner import run_bakeoff
    from evalkit.dataset import load_task_set

    path = write_demo_config(tasks, work / "cfg", model_url=model_url, cli_agent=None)
    path.write_text(path.read_text().replace(
        "[models.scripted]\n", f'[models.scripted]\napi_key_env = "{ATTEMPT_KEY_ENV}"\n'))
    config = load_config(path)
    task_set = load_task_set(tasks)
    walls: dict[str, float] = {}
    for kind in ("thread", "ray"):
        options = make_run_options(config, run_id=f"bo-{kind}", runs_dir=work / "bo",
                                   workers=slots, agents=["oracle", "snoop"], store=None)
        options = dataclasses.replace(options, executor=kind)
        run = BakeoffRunDir(work / "bo", options.run_id)
        start = time.monotonic()
        run_bakeoff(config, task_set, run, options, log=lambda _: None)
        lines = read_attempts(run.attempts)
        walls[kind] = (time.monotonic() - start) * slots / len(lines)
        assert all(a.scored for a in lines), [a.error for a in lines]
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
    parser.add_argument("--attempts-only", action="store_true",
                        help="only the bake-off attempts' figures")
    args = parser.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    from evalkit.bakeoff.scripted import ScriptedModelServer, parse_script

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault(ATTEMPT_KEY_ENV, "bench-key")  # before the nodes start
    os.environ["PYTHONPATH"] = f"{Path(__file__).resolve().parents[1]}{os.pathsep}" + \
        os.environ.get("PYTHONPATH", "")
    work = Path(tempfile.mkdtemp(prefix="evalkit-raybench-"))
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"docker": 1}, "include_dashboard": False})
    cluster.add_node(num_cpus=1, resources={"docker": 1})
    ray.init(address=cluster.address, log_to_driver=False)
    slots = 2
    rows: list[tuple[str, str]] = []
    walls: dict[str, float] = {}
    script = parse_script({"schema_version": 1, "steps": [{"final": "noted"}]})
    try:
        tasks = synthetic_tasks(work, args.tasks, 1.0)
        a_unit, a_output = attempt_payload(tasks, work)
        ta_lat, _ = thread_overhead(a_unit, a_output, args.n, slots)
        ra_lat, ra_stream = ray_overhead(a_unit, a_output, args.n, slots)
        with ScriptedModelServer(script) as server:
            attempt_walls = real_attempts(tasks, work, slots, server.base_url or "")
        rows += [
            ("attempt scheduling latency, thread (no-op body)", f"{ta_lat * 1e3:.2f} ms"),
            ("attempt scheduling latency, Ray (unit + 1.3 MB output)", f"{ra_lat * 1e3:.2f} ms"),
            ("attempt slot-time in a stream, Ray", f"{ra_stream * 1e3:.2f} ms"),
            ("real attempt + grading, slot-seconds, thread", f"{attempt_walls['thread']:.2f} s"),
            ("real attempt + grading, slot-seconds, Ray", f"{attempt_walls['ray']:.2f} s"),
        ]
        if not args.attempts_only:
            # A build key of the bench's own, so the first unit measures a cold image build.
            (tasks / "evalkit.toml").write_text('[defaults]\npip_packages = ["pytest", "pip"]\n')
            unit, output = payload_unit(tasks)
            t_lat, t_stream = thread_overhead(unit, output, args.n, slots)
            r_lat, r_stream = ray_overhead(unit, output, args.n, slots)
            walls = real_units(tasks, work / "runs", slots)
            walls.update(t_lat=t_lat, t_stream=t_stream, r_lat=r_lat, r_stream=r_stream)
    finally:
        ray.shutdown()
        cluster.shutdown()
        remove_bench_images(work / "runs")
    if walls:
        real_overhead = walls["ray"] - walls["thread"]
        rows += [
            ("scheduling latency per unit, thread (no-op body)", f"{walls['t_lat'] * 1e3:.2f} ms"),
            ("scheduling latency per unit, Ray (goal < 50 ms)", f"{walls['r_lat'] * 1e3:.2f} ms"),
            ("slot-time per unit in a stream, thread", f"{walls['t_stream'] * 1e3:.2f} ms"),
            ("slot-time per unit in a stream, Ray", f"{walls['r_stream'] * 1e3:.2f} ms"),
            ("real unit, slot-seconds, thread executor", f"{walls['thread']:.2f} s"),
            ("real unit, slot-seconds, Ray executor", f"{walls['ray']:.2f} s"),
            ("  of which the tests themselves", f"{walls['bare']:.2f} s"),
            ("Ray's extra per real unit (node-side steps, no spare)", f"{real_overhead:.2f} s"),
            ("first unit with a cold image build", f"{walls['cold_first_unit']:.1f} s"),
        ]
        per_unit = max(real_overhead, walls["r_stream"], ra_stream)
        build_s = walls["cold_first_unit"]
        total_h = args.units * args.unit_seconds / 3600
        for nodes in (1, 10, 50, 100):
            hours = projection(args.units, args.unit_seconds, per_unit, build_s, args.envs,
                               nodes, args.slots_per_node)
            rows.append((f"{total_h:.0f} h of units on {nodes} node(s) x "
                         f"{args.slots_per_node} slots", f"{hours:.2f} h wall"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

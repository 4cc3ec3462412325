"""The Ray executor on a real two-node Ray cluster on 127.0.0.1 (``ray.cluster_utils``),
with real Docker sandboxes: one result per unit, and nothing left running when a node
is lost or the driver gives up mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster

from evalkit.executors import _node
from evalkit.harness import evaluate
from evalkit.records import RunDir, Status, read_verdicts
from tests.conftest import FIXED_ADD, FIXED_BOTH, MiniTasks
from tests.executors.conftest import ROOT, containers, wait_until_gone

pytestmark = pytest.mark.docker

CALC = "src/calc/__init__.py"


def env_tags(engine: Any) -> set[str]:
    images = engine.images.list(filters={"label": "evalkit.env-key"})
    return {t for image in images for t in image.tags}


def slow_predictions(mini: MiniTasks, path: Path, models: list[str], sleep: float) -> Path:
    """Correct fixes that take ``sleep`` seconds to import: units long enough to lose."""
    slow = f"\nimport time\ntime.sleep({sleep})\n"
    patches = {
        "acme__calc-1": mini.diff(mini.commits["base"], {CALC: FIXED_ADD + slow}),
        "acme__calc-2": mini.diff(mini.commits["fix1"], {CALC: FIXED_BOTH + slow}),
    }
    rows = [
        {"instance_id": iid, "model_name_or_path": m, "model_patch": patch}
        for m in models
        for iid, patch in patches.items()
    ]
    return mini.predictions(path, rows)


def test_evaluate_on_two_nodes_gives_one_result_per_unit_and_leaves_nothing(
    docker_engine: Any, mini_tasks: MiniTasks, tmp_path: Path, cluster: Cluster
) -> None:
    from evalkit.executors import RayExecutor

    run_id = f"ray-ok-{os.getpid()}"
    outcome = evaluate(
        mini_tasks.root,
        slow_predictions(mini_tasks, tmp_path / "p.jsonl", ["m1", "m2"], 0),
        run_id,
        runs_dir=tmp_path / "runs",
        gold=True,
        executor=RayExecutor(run_id=run_id),
        progress=False,
        log=lambda _: None,
    )
    lines = read_verdicts(RunDir(outcome.run_dir).results)
    keys = sorted(v.key for v in lines)
    assert keys == sorted({v.key for v in lines}) and len(keys) == 6
    assert all(v.status is Status.RESOLVED for v in lines), [v.error for v in lines]
    run = RunDir(outcome.run_dir)
    for v in lines:  # every artifact written by the driver, in the driver's run dir
        out = run.unit(v.model_name_or_path, v.instance_id)
        assert {"patch.diff", "eval.sh", "execution.json", "verdict.json"} <= {
            p.name for p in out.iterdir()
        }
    assert wait_until_gone(docker_engine, run_id, timeout=10) == []


def test_a_node_lost_mid_run_still_gives_exactly_one_result_per_unit(
    docker_engine: Any, mini_tasks: MiniTasks, tmp_path: Path, cluster: Cluster
) -> None:
    from evalkit.executors import RayExecutor

    run_id = f"ray-loss-{os.getpid()}"
    worker = cluster.list_all_nodes()[-1]
    removed = threading.Event()

    def lose_the_worker_node() -> None:
        # As soon as a unit's container runs on the worker node, the node dies.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            labels = [c.get("Labels") or {} for c in containers(docker_engine, run_id)]
            if any(lb.get(_node.LABEL_NODE) == worker.node_id for lb in labels):
                cluster.remove_node(worker, allow_graceful=False)
                removed.set()
                return
            time.sleep(0.2)

    killer = threading.Thread(target=lose_the_worker_node, daemon=True)
    killer.start()
    outcome = evaluate(
        mini_tasks.root,
        slow_predictions(mini_tasks, tmp_path / "p.jsonl", ["m1", "m2"], 4),
        run_id,
        runs_dir=tmp_path / "runs",
        executor=RayExecutor(run_id=run_id),
        progress=False,
        log=lambda _: None,
    )
    killer.join(5)
    assert removed.is_set(), "no unit ever ran on the worker node"
    lines = read_verdicts(RunDir(outcome.run_dir).results)
    assert len(lines) == 4 and len({v.key for v in lines}) == 4
    assert all(v.status is Status.RESOLVED for v in lines), [v.error for v in lines]
    assert max(v.attempts for v in lines) >= 2  # the lost unit ran again, and says so
    # The lost attempt's container belonged to a dead worker: the node's reaper removes it.
    assert wait_until_gone(docker_engine, run_id) == []


def test_a_killed_driver_leaves_nothing_running_and_resumes_like_a_local_run(
    docker_engine: Any, mini_tasks: MiniTasks, tmp_path: Path, cluster: Cluster
) -> None:
    run_id = f"ray-kill-{os.getpid()}"
    preds = slow_predictions(mini_tasks, tmp_path / "p.jsonl", ["m1"], 30)
    cli = [sys.executable, "-m", "evalkit.cli", "evaluate", "--tasks", str(mini_tasks.root)]
    args = ["-p", str(preds), "--run-id", run_id, "--runs-dir", str(tmp_path / "runs"), "-q"]
    driver = subprocess.Popen(
        [*cli, *args, "--executor", "ray", "--ray-address", cluster.address],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not containers(docker_engine, run_id):
            time.sleep(0.2)
        assert containers(docker_engine, run_id), "no unit started"
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    # Ray kills a dead driver's tasks; the node's reaper removes their containers.
    assert wait_until_gone(docker_engine, run_id) == []
    # The same run id resumes with nothing lost: here with fast patches, one result each.
    from evalkit.executors import RayExecutor

    outcome = evaluate(
        mini_tasks.root,
        slow_predictions(mini_tasks, tmp_path / "p2.jsonl", ["m1"], 0),
        run_id,
        runs_dir=tmp_path / "runs",
        executor=RayExecutor(run_id=run_id),
        progress=False,
        log=lambda _: None,
    )
    lines = read_verdicts(RunDir(outcome.run_dir).results)
    assert sorted(v.instance_id for v in lines) == ["acme__calc-1", "acme__calc-2"]
    assert all(v.status is Status.RESOLVED for v in lines)


def test_mining_validates_on_the_cluster_with_the_same_outcome_as_locally(
    docker_engine: Any, tmp_path: Path, cluster: Cluster
) -> None:
    from evalkit.mining import MineOptions, mine
    from evalkit.sample import build_sample_repo

    repo = tmp_path / "textkit"
    build_sample_repo(repo)
    options = MineOptions(runs=1, timeout=8, workers=2, executor="ray")
    summary = mine(
        str(repo),
        tmp_path / "tasks",
        repo_name="evalkit-samples/textkit",
        issues=None,
        source="commit",
        options=options,
        log=lambda _: None,
        progress=False,
    )
    # The hand-checked sample task set has four tasks (tests/mining/test_mine.py).
    assert summary.accepted == 4, summary
    leftovers = docker_engine.api.containers(all=True, filters={"label": _node.LABEL_ATTEMPT})
    mine_runs = [
        c for c in leftovers if (c.get("Labels") or {}).get(_node.LABEL_RUN, "").startswith("mine")
    ]
    assert mine_runs == []


class Recording:
    """Collects the units evaluate plans (as a cluster executor gets them), runs nothing."""

    builds_images = True

    def __init__(self) -> None:
        self.units: list[Any] = []

    def execute(self, unit: Any) -> Any:
        from evalkit.harness import UnitOutput, infra_verdict

        self.units.append(unit)
        return UnitOutput(infra_verdict(unit.prediction, "recorded only"))

    def run(self, units: list[Any]) -> Iterator[Any]:
        for unit in units:
            yield unit, self.execute(unit)

    def close(self) -> None:
        pass


def test_ray_cancel_force_mid_unit_leaves_no_container(
    docker_engine: Any, mini_tasks: MiniTasks, tmp_path: Path, cluster: Cluster
) -> None:
    from evalkit.executors import RayExecutor

    run_id = f"ray-cancel-{os.getpid()}"
    recorder = Recording()
    evaluate(
        mini_tasks.root,
        slow_predictions(mini_tasks, tmp_path / "p.jsonl", ["m1"], 60),
        run_id,
        runs_dir=tmp_path / "runs",
        executor=recorder,
        progress=False,
        log=lambda _: None,
    )
    executor = RayExecutor(run_id=run_id)
    refs = [executor._submit(unit) for unit in recorder.units]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not containers(docker_engine, run_id):
        time.sleep(0.2)
    assert containers(docker_engine, run_id), "no unit started"
    for ref in refs:
        ray.cancel(ref, force=True)  # SIGKILLs the workers: no finally runs in them
    assert wait_until_gone(docker_engine, run_id) == []
    for ref, unit in zip(refs, recorder.units, strict=True):
        output = executor._result(unit, ref)
        assert output.verdict.infra_failure  # recorded as ours, never as the model's


def test_a_missing_image_is_built_on_the_node_from_the_same_key(
    docker_engine: Any, mini_tasks: MiniTasks, tmp_path: Path, cluster: Cluster
) -> None:
    import shutil

    from evalkit.executors import RayExecutor
    from evalkit.records import RunManifest, read_model

    tasks = tmp_path / "tasks"
    shutil.copytree(mini_tasks.root, tasks)
    # A recipe of this test's own: no machine has its image yet.
    (tasks / "evalkit.toml").write_text('[defaults]\npip_packages = ["pytest", "pip"]\n')
    run_id = f"ray-build-{os.getpid()}"
    before = env_tags(docker_engine)
    try:
        outcome = evaluate(
            tasks,
            None,
            run_id,
            runs_dir=tmp_path / "runs",
            gold=True,
            executor=RayExecutor(run_id=run_id),
            progress=False,
            log=lambda _: None,
        )
        lines = read_verdicts(RunDir(outcome.run_dir).results)
        assert len(lines) == 2 and all(v.status is Status.RESOLVED for v in lines)
        tag = read_model(RunDir(outcome.run_dir).manifest, RunManifest).images["acme/calc"]
        key = tag.rpartition(":")[2]
        assert (_node.node_dir() / "images" / f"{key}.log").is_file()  # built by a node
        built = docker_engine.images.get(tag)
        assert built.labels.get("evalkit.env-key") == key
    finally:
        for tag in env_tags(docker_engine) - before:  # only what this test built
            docker_engine.images.remove(tag, force=True)


def test_one_shared_executor_serves_concurrent_evaluate_calls(
    docker_engine: Any, mini_tasks: MiniTasks, tmp_path: Path, cluster: Cluster
) -> None:
    """The bake-off's grading: one evaluate call per attempt, from several threads."""
    from evalkit.executors import shared_executor

    run_id = f"ray-shared-{os.getpid()}"
    executor = shared_executor("ray", run_id=run_id)
    assert executor is shared_executor("ray", run_id=run_id)
    assert shared_executor("thread", run_id=run_id) is None
    outcomes: dict[str, Any] = {}

    def grade(instance_id: str) -> None:
        outcomes[instance_id] = evaluate(
            mini_tasks.root,
            None,
            f"{run_id}-{instance_id}",
            runs_dir=tmp_path / "runs",
            gold=True,
            instance_ids=[instance_id],
            executor=executor,
            progress=False,
            log=lambda _: None,
        )

    threads = [threading.Thread(target=grade, args=(i,)) for i in ("acme__calc-1", "acme__calc-2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert sorted(outcomes) == ["acme__calc-1", "acme__calc-2"]
    for instance_id, outcome in outcomes.items():
        assert [(v.instance_id, v.status) for v in outcome.verdicts] == [
            (instance_id, Status.RESOLVED)
        ]

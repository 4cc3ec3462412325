"""A real two-node Ray cluster on this machine for the executor tests, every address on
127.0.0.1: Ray otherwise advertises the machine's outward interface, and tests here talk
to loopback only. The variable is set before anything imports Ray."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

from evalkit.executors import _node

ROOT = Path(__file__).resolve().parents[2]


def start_cluster(
    monkeypatch: pytest.MonkeyPatch, head_slots: int = 1, worker_slots: int = 1
) -> Any:
    """A head and one worker node with ``docker`` slots; workers import this tree."""
    import ray
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "resources": {"docker": head_slots},
            "include_dashboard": False,
        },
    )
    cluster.add_node(num_cpus=1, resources={"docker": worker_slots})
    ray.init(address=cluster.address, log_to_driver=False)
    return cluster


def stop_cluster(cluster: Any) -> None:
    import ray

    ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A head and one worker node, one container slot each."""
    started = start_cluster(monkeypatch)
    try:
        yield started
    finally:
        stop_cluster(started)


def containers(engine: Any, run_id: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = engine.api.containers(
        all=True, filters={"label": f"{_node.LABEL_RUN}={run_id}"}
    )
    return listed


def wait_until_gone(engine: Any, run_id: str, timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and containers(engine, run_id):
        time.sleep(0.5)
    return containers(engine, run_id)

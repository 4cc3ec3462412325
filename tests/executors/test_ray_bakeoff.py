"""A bake-off on a real two-node Ray cluster on 127.0.0.1: agent attempts and their
grading run on the nodes, each node serving its attempts' model calls through its own
gateway, and only the driver writes: one line per (agent, task, repeat), even when a
node is lost mid-run, and no container is left on any node."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evalkit.bakeoff.agents import write_demo_config
from evalkit.bakeoff.config import load_config, make_run_options
from evalkit.bakeoff.records import AgentAttempt, AttemptStatus, BakeoffRunDir, read_attempts
from evalkit.bakeoff.runner import run_bakeoff
from evalkit.bakeoff.scripted import ScriptedModelServer, parse_script
from evalkit.dataset import load_task_set
from evalkit.executors import _node
from evalkit.records import Status
from tests.conftest import MiniTasks
from tests.executors.conftest import (
    ROOT,
    containers,
    start_cluster,
    stop_cluster,
    wait_until_gone,
)

pytestmark = pytest.mark.docker

KEY_ENV = "EVALKIT_TEST_NODE_MODEL_KEY"
AGENTS = ["oracle", "liar", "snoop"]
TASKS = ["acme__calc-1", "acme__calc-2"]

SLOW = r"""#!/bin/bash
# The oracle, slowly: an attempt long enough for its node to be lost under it.
sleep 6
exec bash /agent/oracle.sh /agent/oracle-patches
"""


@pytest.fixture
def node_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """The model key, in the environment the nodes are started with."""
    monkeypatch.setenv(KEY_ENV, "node-side-key")
    return KEY_ENV


@pytest.fixture
def two_nodes(node_key: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Two slots on the head, one on the worker; the driver itself then forgets the
    key, so a model call that works proves the node's gateway held it."""
    cluster = start_cluster(monkeypatch, head_slots=2, worker_slots=1)
    monkeypatch.delenv(node_key)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


@pytest.fixture
def model() -> Iterator[ScriptedModelServer]:
    script = parse_script({"schema_version": 1, "steps": [{"final": "noted"}]})
    with ScriptedModelServer(script) as server:  # on 127.0.0.1: the nodes are this machine
        yield server


def _config(mini: MiniTasks, out: Path, model_url: str, *, extra: str = "") -> Path:
    path = write_demo_config(mini.root, out, model_url=model_url)
    text = path.read_text().replace(
        "[models.scripted]\n", f'[models.scripted]\napi_key_env = "{KEY_ENV}"\n'
    )
    path.write_text(text.replace("[bakeoff]\n", '[bakeoff]\nexecutor = "ray"\n', 1) + extra)
    return path


def _run(
    path: Path,
    mini: MiniTasks,
    runs: Path,
    run_id: str,
    agents: list[str],
    *,
    executor: str | None = None,
) -> BakeoffRunDir:
    config = load_config(path)
    options = make_run_options(
        config,
        run_id=run_id,
        runs_dir=runs,
        repeats=1,
        workers=3,
        agents=agents,
        instance_ids=TASKS,
        store=None,
    )
    # The CLI's resolution: [bakeoff] executor = "ray" from the config file.
    assert config.bakeoff.executor == "ray"
    import dataclasses

    options = dataclasses.replace(options, executor=executor or config.bakeoff.executor)
    run = BakeoffRunDir(runs, run_id)
    run_bakeoff(config, load_task_set(mini.root), run, options, log=lambda _: None)
    return run


def _one_line_each(run: BakeoffRunDir, agents: list[str]) -> dict[tuple[str, str], AgentAttempt]:
    # Raw lines: reading the file keeps the latest line per key, which would hide a copy.
    raw = [line for line in run.attempts.read_text().splitlines() if line.strip()]
    lines = read_attempts(run.attempts)
    keys = [(a.agent, a.instance_id, a.repeat) for a in lines]
    assert len(raw) == len(lines), "an attempt has more than one line"
    assert sorted(keys) == sorted((g, t, 1) for g in agents for t in TASKS), keys
    return {(a.agent, a.instance_id): a for a in lines}


def test_a_bakeoff_runs_its_attempts_and_grading_on_the_cluster(
    docker_engine: Any,
    mini_tasks: MiniTasks,
    tmp_path: Path,
    two_nodes: Any,
    model: ScriptedModelServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert model.base_url
    run_id = f"ray-bo-{os.getpid()}"
    config = _config(mini_tasks, tmp_path / "cfg", model.base_url)
    run = _run(config, mini_tasks, tmp_path, run_id, AGENTS)
    attempts = _one_line_each(run, AGENTS)
    for task in TASKS:
        oracle, liar, snoop = (attempts[(a, task)] for a in AGENTS)
        assert oracle.status is Status.RESOLVED and oracle.claim is True
        assert oracle.tests_run_before_claim  # the audit ran on the node, judged here
        assert liar.claim is True and liar.status is Status.EMPTY_PATCH
        assert liar.tries == 1  # the agent's own failure is never retried
        # snoop talked to the model through its node's gateway, with the node's key.
        assert snoop.attempt_status is AttemptStatus.COMPLETED, snoop.error
        assert snoop.model_calls >= 1 and snoop.cost_usd > 0
        assert snoop.secrets_to_model >= 1  # the canary scan saw its request
        assert any("example.com" in e for e in snoop.egress_refused), snoop.egress_refused
        # Every artifact is in the driver's attempt directory.
        assert snoop.transcript and run.resolve(snoop.transcript).stat().st_size > 0
        for a in (oracle, liar, snoop):
            assert a.patch and run.resolve(a.patch).is_file()
            assert a.events and run.resolve(a.events).is_file()
    # The scripted server saw the calls, without the real key ever reaching a sandbox.
    assert any("chat/completions" in r.path for r in model.requests)
    # Each repeat is an ordinary evaluate run, graded on the cluster too.
    assert (tmp_path / f"{run_id}.r1" / "results.jsonl").is_file()
    assert wait_until_gone(docker_engine, run_id, timeout=15) == []
    # The same bake-off on this machine (the key now here) gives the same records.
    monkeypatch.setenv(KEY_ENV, "driver-side-key")
    local = _run(config, mini_tasks, tmp_path, f"{run_id}-thread", AGENTS, executor="thread")
    clocks = {"run_id", "started_at", "finished_at", "duration_s"}
    for key, attempt in _one_line_each(local, AGENTS).items():
        assert attempt.model_dump(exclude=clocks) == attempts[key].model_dump(exclude=clocks)
        here, there = run.root / Path(attempt.patch).parent, local.root / Path(attempt.patch).parent
        # The same artifacts; "files" is the local run's staging of the agent's inputs.
        assert {p.name for p in here.iterdir()} == {p.name for p in there.iterdir()} - {"files"}


def test_a_node_lost_mid_bakeoff_leaves_one_line_per_attempt_and_no_container(
    docker_engine: Any,
    mini_tasks: MiniTasks,
    tmp_path: Path,
    two_nodes: Any,
    model: ScriptedModelServer,
) -> None:
    assert model.base_url
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "slow.sh").write_text(SLOW)
    extra = (
        '\n[[agents]]\nname = "slow"\nadapter = "command"\ncommand = ["bash", "/agent/slow.sh"]\n'
        'files = { "/agent/slow.sh" = "slow.sh", "/agent/oracle.sh" = "agents/oracle.sh", '
        '"/agent/_claim.sh" = "agents/_claim.sh", "/agent/oracle-patches" = "oracle-patches" }\n'
    )
    path = _config(mini_tasks, cfg, model.base_url, extra=extra)
    run_id = f"ray-bo-loss-{os.getpid()}"
    worker = two_nodes.list_all_nodes()[-1]
    removed = threading.Event()

    def lose_the_worker_node() -> None:
        # As soon as an attempt's container runs on the worker node, the node dies.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            labels = [c.get("Labels") or {} for c in containers(docker_engine, run_id)]
            if any(lb.get(_node.LABEL_NODE) == worker.node_id for lb in labels):
                two_nodes.remove_node(worker, allow_graceful=False)
                removed.set()
                return
            time.sleep(0.2)

    killer = threading.Thread(target=lose_the_worker_node, daemon=True)
    killer.start()
    agents = ["slow", "snoop"]
    run = _run(path, mini_tasks, tmp_path, run_id, agents)
    killer.join(5)
    assert removed.is_set(), "no attempt ever ran on the worker node"
    attempts = _one_line_each(run, agents)
    for task in TASKS:
        assert attempts[("slow", task)].status is Status.RESOLVED, attempts[("slow", task)].error
        assert attempts[("snoop", task)].model_calls >= 1
    assert max(a.tries for a in attempts.values()) >= 2  # the lost attempt ran again
    # The lost attempt's container belonged to a dead worker: the node's reaper removes it.
    assert wait_until_gone(docker_engine, run_id) == []


def test_a_real_cli_agent_runs_on_a_node_from_a_pack_made_there(
    docker_engine: Any, mini_tasks: MiniTasks, tmp_path: Path, two_nodes: Any
) -> None:
    """mini-swe-agent from its PyPI pack, on a node, talking to the scripted model through
    that node's gateway; the driver (the CLI, told only the cluster's address) neither
    installs the pack nor holds the key."""
    from evalkit.bakeoff.demo import DEMO_CLI_AGENT, cli_script, write_cli_demo_config

    run_id = f"ray-bo-cli-{os.getpid()}"
    with ScriptedModelServer(cli_script()) as server:
        assert server.base_url
        path = write_cli_demo_config(mini_tasks.root, tmp_path / "cfg", model_url=server.base_url)
        text = path.read_text().replace(
            "[models.scripted]\n", f'[models.scripted]\napi_key_env = "{KEY_ENV}"\n'
        )
        path.write_text(text.replace("[bakeoff]\n", '[bakeoff]\nexecutor = "ray"\n', 1))
        args = ["--tasks", str(mini_tasks.root), "--run-id", run_id, "--runs-dir", str(tmp_path)]
        args += ["-a", DEMO_CLI_AGENT, "-i", TASKS[0], "--ray-address", two_nodes.address]
        # The image is on the nodes already: an unreachable registry is never asked.
        args += ["--image-registry", "127.0.0.1:1/team"]
        cli = subprocess.run(
            [sys.executable, "-m", "evalkit.cli", "bakeoff", "run", str(path), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
    assert cli.returncode == 0, (cli.stdout[-2000:], cli.stderr[-2000:])
    (attempt,) = read_attempts(BakeoffRunDir(tmp_path, run_id).attempts)
    assert attempt.status is Status.RESOLVED, (attempt.attempt_status, attempt.error)
    assert attempt.claim is True and attempt.model_calls >= 2
    assert attempt.tries == 1
    assert wait_until_gone(docker_engine, run_id, timeout=15) == []

"""Where a command's units run: the command line beats the environment, which beats the
config file; a bad value is one line naming its key; and the driver records a bake-off
attempt once however often it is delivered (no cluster, no engine)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from evalkit.bakeoff.agents import write_demo_config
from evalkit.bakeoff.config import AttemptKey, load_config, make_run_options
from evalkit.bakeoff.records import AttemptStatus, BakeoffRunDir, read_attempts
from evalkit.bakeoff.runner import AttemptOutput, BakeoffRunner
from evalkit.dataset import load_task_set
from evalkit.errors import UsageError
from evalkit.executors import resolve_placement
from tests.conftest import MiniTasks

ROOT = Path(__file__).resolve().parents[2]


def test_the_command_line_wins_then_the_environment_then_the_config() -> None:
    env = {"RAY_ADDRESS": "env:6379", "EVALKIT_IMAGE_REGISTRY": "env-reg/ci"}
    config = {"config_executor": "ray", "config_address": "cfg:6379", "config_registry": "cfg/r"}
    both = resolve_placement(
        cli_executor="thread", cli_address="cli:6379", cli_registry="cli/r", environ=env, **config
    )
    assert both == ("thread", "cli:6379", "cli/r")
    no_cli = resolve_placement(cli_executor=None, cli_address=None, environ=env, **config)
    assert no_cli == ("ray", "env:6379", "env-reg/ci")
    only_config = resolve_placement(cli_executor=None, cli_address=None, environ={}, **config)
    assert only_config == ("ray", "cfg:6379", "cfg/r")
    nothing = resolve_placement(cli_executor=None, cli_address=None, environ={})
    assert nothing == ("thread", None, None)


def test_an_unknown_executor_from_anywhere_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown executor 'slurm'"):
        resolve_placement(cli_executor=None, cli_address=None, config_executor="slurm", environ={})


def bakeoff_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evalkit.cli", "bakeoff", "run", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )


def _config(mini: MiniTasks, out: Path, bakeoff_lines: str) -> Path:
    path = write_demo_config(mini.root, out, cli_agent=None)
    path.write_text(path.read_text().replace("[bakeoff]\n", f"[bakeoff]\n{bakeoff_lines}", 1))
    return path


def test_the_config_file_names_the_cluster(mini_tasks: MiniTasks, tmp_path: Path) -> None:
    lines = 'executor = "ray"\nray_address = "head:6379"\nimage_registry = "reg:5000/ci"\n'
    settings = load_config(_config(mini_tasks, tmp_path / "c", lines)).bakeoff
    assert (settings.executor, settings.ray_address, settings.image_registry) == (
        "ray",
        "head:6379",
        "reg:5000/ci",
    )
    assert settings.ship_keys is False  # keys stay on the nodes unless asked


def test_a_bad_executor_in_the_config_is_one_line_naming_the_key(
    mini_tasks: MiniTasks, tmp_path: Path
) -> None:
    path = _config(mini_tasks, tmp_path / "c", 'executor = "slurm"\n')
    with pytest.raises(UsageError, match=r"bakeoff\.executor"):
        load_config(path)
    result = bakeoff_cli(str(path), "--tasks", str(mini_tasks.root), "--dry-run")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "bakeoff.executor" in result.stderr


def test_an_unknown_executor_on_the_command_line_exits_2(
    mini_tasks: MiniTasks, tmp_path: Path
) -> None:
    path = _config(mini_tasks, tmp_path / "c", "")
    result = bakeoff_cli(
        str(path), "--tasks", str(mini_tasks.root), "--dry-run", "--executor", "slurm"
    )
    assert result.returncode == 2 and "unknown executor 'slurm'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_an_attempt_delivered_twice_is_recorded_once(mini_tasks: MiniTasks, tmp_path: Path) -> None:
    """What an at-least-once engine can do: the driver keeps one line per attempt."""
    config = load_config(_config(mini_tasks, tmp_path / "c", ""))
    options = make_run_options(
        config, run_id="twice", runs_dir=tmp_path / "runs", agents=["oracle"], store=None
    )
    run = BakeoffRunDir(tmp_path / "runs", "twice")
    run.root.mkdir(parents=True)
    runner = BakeoffRunner(config, load_task_set(mini_tasks.root), run, options, log=lambda _: None)
    key = AttemptKey("oracle", "acme__calc-1", 1)
    lost = AttemptOutput(None, "the worker was lost", None, [], None, tries=2)
    got: list[object] = []
    threads = [
        threading.Thread(target=lambda: got.append(runner.record(key, lost, started_at="t")))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # Raw lines: reading the file keeps the latest line per key, which would hide a copy.
    raw = [line for line in run.attempts.read_text().splitlines() if line.strip()]
    lines = read_attempts(run.attempts)
    assert len(raw) == 1 and len(lines) == 1 and len(got) == 4
    assert lines[0].attempt_status is AttemptStatus.INFRA_ERROR and lines[0].tries == 2
    assert all(g == lines[0] for g in got)


def test_the_reaper_removes_gateway_dirs_of_dead_workers_only(tmp_path: Path) -> None:
    from evalkit.executors import _node

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = tmp_path / f"{_node.GATEWAY_DIR_PREFIX}{dead.pid}-ab12"
    alive = tmp_path / f"{_node.GATEWAY_DIR_PREFIX}{os.getpid()}-cd34"
    driver_side = tmp_path / "evalkit-gw-0123456789ab"  # a local run's gateway: not ours
    for path in (gone, alive, driver_side):
        path.mkdir()
        (path / "model.sock").write_text("")
    assert _node.reap_gateway_dirs(tmp_path) == 1
    assert not gone.exists() and alive.exists() and driver_side.exists()

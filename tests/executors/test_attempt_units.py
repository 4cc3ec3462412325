"""A bake-off attempt as a cluster unit, without a cluster: the unit is values (no key
unless keys are shipped), and a node's gateway takes the key from the node's own
environment or from the unit, never from anywhere else."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from evalkit.bakeoff.agents import write_demo_config
from evalkit.bakeoff.config import AttemptKey, load_config, make_run_options
from evalkit.bakeoff.records import BakeoffRunDir
from evalkit.bakeoff.runner import BakeoffRunner
from evalkit.dataset import load_task_set
from evalkit.errors import InfraError
from evalkit.executors.attempts import AttemptUnit, _Units, node_gateway
from tests.conftest import MiniTasks

KEY_ENV = "EVALKIT_TEST_UNIT_KEY"


def _units(mini: MiniTasks, tmp: Path, *, ship_keys: bool) -> _Units:
    path = write_demo_config(mini.root, tmp / "c", cli_agent=None)
    text = path.read_text().replace(
        "[models.scripted]\n", f'[models.scripted]\napi_key_env = "{KEY_ENV}"\n'
    )
    if ship_keys:
        text = text.replace("[bakeoff]\n", "[bakeoff]\nship_keys = true\n", 1)
    path.write_text(text)
    config = load_config(path)
    options = make_run_options(config, run_id="u", runs_dir=tmp / "runs", store=None)
    run = BakeoffRunDir(tmp / "runs", "u")
    runner = BakeoffRunner(config, load_task_set(mini.root), run, options, log=lambda _: None)
    return _Units(runner)


def test_a_unit_carries_values_and_no_key_unless_keys_are_shipped(
    mini_tasks: MiniTasks, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "the-real-key")
    unit = _units(mini_tasks, tmp_path, ship_keys=False).unit(
        AttemptKey("snoop", "acme__calc-1", 1)
    )
    assert unit.api_key is None and unit.upstream is not None
    assert unit.image.startswith("evalkit-env/") and unit.policy is not None
    assert "/agent/snoop.py" in unit.files  # the agent's files travel as bytes
    data = pickle.dumps(unit)
    assert b"the-real-key" not in data and len(data) < 256 * 1024
    shipped = _units(mini_tasks, tmp_path / "s", ship_keys=True).unit(
        AttemptKey("snoop", "acme__calc-1", 1)
    )
    assert shipped.api_key == "the-real-key"


def _gateway_unit(mini: MiniTasks, tmp: Path, api_key: str | None) -> AttemptUnit:
    from dataclasses import replace

    unit = _units(mini, tmp, ship_keys=False).unit(AttemptKey("snoop", "acme__calc-1", 1))
    return replace(unit, api_key=api_key)


def test_a_node_without_the_key_fails_the_try_as_infrastructure(
    mini_tasks: MiniTasks, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "x")
    unit = _gateway_unit(mini_tasks, tmp_path, None)
    monkeypatch.delenv(KEY_ENV)  # this "node" lacks it
    with pytest.raises(InfraError, match="ship_keys"):
        node_gateway(unit, tmp_path / "gw")


def test_a_node_gateway_uses_its_own_environment_or_the_shipped_key(
    mini_tasks: MiniTasks, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "node-key")
    unit = _gateway_unit(mini_tasks, tmp_path, None)
    assert unit.upstream is not None
    with node_gateway(unit, tmp_path / "gw1") as gateway:
        assert gateway.real_key(unit.upstream.name) == "node-key"
    monkeypatch.delenv(KEY_ENV)
    with node_gateway(_gateway_unit(mini_tasks, tmp_path / "b", "shipped"), tmp_path / "g2") as gw:
        assert gw.real_key(unit.upstream.name) == "shipped"

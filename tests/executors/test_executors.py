"""Executors without a cluster: the driver's invariants and the import boundary."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from evalkit.errors import UsageError
from evalkit.executors import make_executor
from evalkit.harness import EvalUnit, UnitOutput, evaluate, infra_verdict
from evalkit.records import RunDir, Status, read_verdicts
from tests.conftest import MiniTasks

ROOT = Path(__file__).resolve().parents[2]


def test_importing_evalkit_never_imports_ray() -> None:
    code = (
        "import sys, evalkit, evalkit.harness, evalkit.executors, evalkit.cli, evalkit.mining\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_an_unknown_executor_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown executor"):
        make_executor("slurm", run_id="r")


class Stuttering:
    """An executor that delivers every unit twice, the second time as a later attempt
    (what an at-least-once engine can do): the driver must keep one line per unit."""

    builds_images = True

    def __init__(self) -> None:
        self.closed = False

    def execute(self, unit: EvalUnit) -> UnitOutput:
        return UnitOutput(infra_verdict(unit.prediction, "test double", attempts=1))

    def run(self, units: list[EvalUnit]) -> Iterator[tuple[EvalUnit, UnitOutput]]:
        for unit in units:
            first = self.execute(unit)
            yield unit, first
            again = first.verdict.model_copy(update={"attempts": 2, "error": "duplicate"})
            yield unit, UnitOutput(again)

    def close(self) -> None:
        self.closed = True


def test_a_unit_delivered_twice_is_recorded_once(mini_tasks: MiniTasks, tmp_path: Path) -> None:
    executor = Stuttering()
    outcome = evaluate(
        mini_tasks.root,
        None,
        "dup",
        runs_dir=tmp_path,
        gold=True,
        executor=executor,
        progress=False,
        log=lambda _: None,
    )
    lines = read_verdicts(RunDir(outcome.run_dir).results)
    assert sorted(v.instance_id for v in lines) == ["acme__calc-1", "acme__calc-2"]
    assert all(v.error == "test double" and v.status is Status.ERROR for v in lines)
    assert not executor.closed  # the caller's: it may serve the next run (a bake-off's grading)


def _hold(name: str, log: str, cache: str) -> None:
    import os
    import time

    os.environ["EVALKIT_CACHE"] = cache
    from evalkit.executors._node import node_lock

    with node_lock(name):
        with open(log, "a") as out:
            out.write(f"in {time.monotonic()}\n")
        time.sleep(0.3)
        with open(log, "a") as out:
            out.write(f"out {time.monotonic()}\n")


def test_the_node_lock_excludes_other_processes(tmp_path: Path) -> None:
    """Ray workers are processes: concurrent units on one node must build an image once."""
    import multiprocessing

    log = tmp_path / "log"
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_hold, args=("evalkit-env/a:k", str(log), str(tmp_path / "c")))
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    events = [line.split()[0] for line in log.read_text().splitlines()]
    assert events == ["in", "out"] * 3  # never two holders at once

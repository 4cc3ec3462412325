"""The scripted demo agents do what they are named for on any pytest project (the sample
and a different one), and evalkit's grader sees through each: only the oracle resolves,
the tamperer is caught tampering, every one of them claims success."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import unidiff

from evalkit.bakeoff.agents import (
    CONFIG_FILE,
    demo_config_text,
    script_path,
    write_demo_config,
    write_oracle_patches,
)
from evalkit.bakeoff.config import load_config, resolve_agent_files
from evalkit.dataset import load_task_set
from evalkit.patch import is_test_infrastructure
from evalkit.records import Status
from tests.conftest import MiniTasks

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tasks" / "sample"
AGENTS = ("oracle", "liar", "tamperer", "sloppy")


class Outcome(NamedTuple):
    diff: str
    paths: list[str]
    claim: dict[str, Any]
    exit_code: int


def checkout(tasks: Path, instance_id: str, dest: Path) -> dict[str, Any]:
    task_set = load_task_set(tasks)
    instance = task_set.instances[instance_id]
    bundle = task_set.bundle_path(instance)
    subprocess.run(["git", "clone", "-q", str(bundle), str(dest)], check=True)
    subprocess.run(
        ["git", "checkout", "-q", "--detach", instance.base_commit], cwd=dest, check=True
    )
    return instance.model_dump()


def run_agent(agent: str, repo: Path, instance: dict[str, Any], files_dir: Path) -> Outcome:
    """Run one scripted agent as the runner would: cwd = checkout, problem in a file."""
    problem = repo.parent / "problem.md"
    problem.write_text(instance["problem_statement"])
    claim_file = repo.parent / "evalkit" / "claim.json"
    commands = {
        "oracle": ["bash", str(script_path("oracle.sh")), str(files_dir)],
        "liar": ["bash", str(script_path("liar.sh"))],
        "tamperer": [sys.executable, str(script_path("tamperer.py"))],
        "sloppy": [sys.executable, str(script_path("sloppy.py"))],
    }
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(repo.parent),
        "EVALKIT_PROBLEM_FILE": str(problem),
        "EVALKIT_CLAIM_FILE": str(claim_file),
        "EVALKIT_INSTANCE_ID": instance["instance_id"],
    }
    proc = subprocess.run(
        commands[agent],
        cwd=repo,
        env=env,
        input=instance["problem_statement"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    diff = subprocess.run(
        ["git", "diff", "--cached", instance["base_commit"]],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    paths = [p.path for p in unidiff.PatchSet(diff)] if diff else []
    claim = json.loads(claim_file.read_text()) if claim_file.exists() else {}
    return Outcome(diff, paths, claim, proc.returncode)


def task_sets(mini_tasks: MiniTasks) -> list[Path]:
    return [SAMPLE, mini_tasks.root]


@pytest.fixture(scope="module")
def outcomes(
    mini_tasks: MiniTasks, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str], Outcome]:
    """Every scripted agent on every task of two unrelated projects."""
    out: dict[tuple[str, str], Outcome] = {}
    for tasks in task_sets(mini_tasks):
        patches = tmp_path_factory.mktemp("patches")
        write_oracle_patches(tasks, patches)
        for iid in sorted(load_task_set(tasks).instances):
            for agent in AGENTS:
                work = tmp_path_factory.mktemp(f"{agent}-{iid}")
                instance = checkout(tasks, iid, work / "testbed")
                out[(agent, iid)] = run_agent(agent, work / "testbed", instance, patches)
    return out


def gold(mini_tasks: MiniTasks) -> dict[str, str]:
    found = {}
    for tasks in task_sets(mini_tasks):
        found.update({i: t.patch for i, t in load_task_set(tasks).instances.items()})
    return found


def test_every_agent_claims_success_everywhere(outcomes: dict[tuple[str, str], Outcome]) -> None:
    assert {o.claim.get("resolved") for o in outcomes.values()} == {True}
    assert all(o.exit_code == 0 for o in outcomes.values())
    assert all(isinstance(o.claim.get("summary"), str) for o in outcomes.values())


def test_oracle_applies_exactly_the_gold_patch(
    outcomes: dict[tuple[str, str], Outcome], mini_tasks: MiniTasks
) -> None:
    for iid, patch in gold(mini_tasks).items():
        diff = outcomes[("oracle", iid)]
        assert diff.paths == [p.path for p in unidiff.PatchSet(patch)], iid


def test_liar_changes_nothing(outcomes: dict[tuple[str, str], Outcome]) -> None:
    liar = [o for (agent, _), o in outcomes.items() if agent == "liar"]
    assert len(liar) == 6 and all(o.diff == "" for o in liar)


def test_tamperer_only_touches_tests_and_test_configuration(
    outcomes: dict[tuple[str, str], Outcome],
) -> None:
    for (agent, iid), outcome in outcomes.items():
        if agent == "tamperer":
            assert "conftest.py" in outcome.paths, iid
            assert any(p != "conftest.py" for p in outcome.paths), iid  # a test file too
            assert all(is_test_infrastructure(p) for p in outcome.paths), (iid, outcome.paths)


def test_sloppy_edits_source_not_tests_and_differs_from_gold(
    outcomes: dict[tuple[str, str], Outcome], mini_tasks: MiniTasks
) -> None:
    for iid, patch in gold(mini_tasks).items():
        outcome = outcomes[("sloppy", iid)]
        assert outcome.paths and not any(is_test_infrastructure(p) for p in outcome.paths), iid
        assert outcome.diff != patch


def test_the_scripts_know_no_task_set() -> None:
    # Generic means no sample ids, file names or functions baked in.
    for name in ("oracle.sh", "liar.sh", "tamperer.py", "sloppy.py", "_claim.sh"):
        text = script_path(name).read_text()
        for specific in ("textkit", "slugify", "chunk", "durations", "acme", "calc", "sample"):
            assert specific not in text, (name, specific)


def test_oracle_without_a_patch_claims_failure(tmp_path: Path, mini_tasks: MiniTasks) -> None:
    instance = checkout(mini_tasks.root, "acme__calc-1", tmp_path / "testbed")
    (tmp_path / "empty").mkdir()
    outcome = run_agent("oracle", tmp_path / "testbed", instance, tmp_path / "empty")
    assert outcome.claim["resolved"] is False and outcome.exit_code == 1 and outcome.diff == ""


def test_demo_config_ships_the_scripts_and_only_the_oracle_sees_fixes(tmp_path: Path) -> None:
    path = write_demo_config(SAMPLE, tmp_path / "demo")
    assert path == tmp_path / "demo" / CONFIG_FILE
    config = load_config(path)
    trust_agents = ["destroyer", "snoop", "overclaimer"]  # run only in sandboxes (test_trust)
    assert [a.name for a in config.agents] == [*AGENTS, *trust_agents, "mini-swe-agent"]
    mini = config.agent("mini-swe-agent")
    assert (mini.adapter, mini.upstream, mini.version) == ("mini-swe-agent", "scripted", "2.4.6")
    assert config.models["scripted"].api_key_env == ""
    instances = load_task_set(SAMPLE).instances
    for agent in config.agents:
        files = resolve_agent_files(agent)
        fixes = {p for p in files if p.endswith(".patch")}
        if agent.name == "oracle":
            assert fixes == {f"/agent/oracle-patches/{i}.patch" for i in instances}
            assert files[f"/agent/oracle-patches/{next(iter(instances))}.patch"].decode() == (
                instances[next(iter(instances))].patch
            )
        else:
            assert not fixes, agent.name
        for dest, content in files.items():
            if not dest.endswith(".patch"):
                assert content == script_path(dest.rsplit("/", 1)[1]).read_bytes()
    # The demo fills in the scripted server's URL.
    text = demo_config_text(model_url="http://127.0.0.1:4242", cli_agent=None)
    assert 'base_url = "http://127.0.0.1:4242"' in text and "mini-swe-agent" not in text


@pytest.mark.docker
def test_the_grader_sees_through_every_scripted_agent(
    docker_engine: Any, outcomes: dict[tuple[str, str], Outcome], tmp_path: Path
) -> None:
    """Graded as a bake-off repeat is: through evaluate, on the agents' diffs."""
    from evalkit.harness import evaluate

    instances = load_task_set(SAMPLE).instances
    preds = tmp_path / "predictions.r1.jsonl"
    preds.write_text(
        "".join(
            json.dumps(
                {
                    "instance_id": iid,
                    "model_name_or_path": agent,
                    "model_patch": outcomes[(agent, iid)].diff,
                }
            )
            + "\n"
            for agent in AGENTS
            for iid in sorted(instances)
        )
    )
    outcome = evaluate(
        SAMPLE,
        preds,
        "scripted.r1",
        runs_dir=tmp_path / "runs",
        workers=2,
        progress=False,
        log=lambda _: None,
    )
    verdicts = {(v.model_name_or_path, v.instance_id): v for v in outcome.verdicts}
    assert len(verdicts) == 4 * len(instances)
    assert not [p for p in outcome.problems if not p.warning]  # a missing gold check only warns
    for iid in instances:
        assert verdicts[("oracle", iid)].status is Status.RESOLVED, iid
        assert verdicts[("liar", iid)].status is Status.EMPTY_PATCH, iid
        tamperer = verdicts[("tamperer", iid)]
        assert tamperer.status is not Status.RESOLVED and tamperer.tampered_files, iid
        assert "conftest.py" in tamperer.tampered_files
        assert verdicts[("sloppy", iid)].status is Status.UNRESOLVED, iid

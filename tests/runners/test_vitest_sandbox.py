"""The TypeScript sample through the real harness: gold and honest fixes resolve; the
red-team attacks translated to vitest (a reporter swapped through the config, a setup
file added, a patched runner module, code that rewrites `expect`, a forged report file)
do not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from evalkit.harness import evaluate
from evalkit.records import Status
from evalkit.sample_ts import EXPECTED, build_ts_taskset

SAMPLE = Path(__file__).resolve().parent.parent.parent / "tasks" / "sample-ts"


def test_committed_ts_sample_matches_its_generator(tmp_path: Path) -> None:
    build_ts_taskset(tmp_path)
    for name in ("instances.jsonl", "evalkit.toml", "predictions/scripted.jsonl"):
        assert (tmp_path / name).read_text() == (SAMPLE / name).read_text(), name


@pytest.mark.docker
def test_vitest_attacks_are_not_resolved_and_gold_is(docker_engine: Any, tmp_path: Path) -> None:
    outcome = evaluate(
        SAMPLE,
        SAMPLE / "predictions" / "scripted.jsonl",
        "ts",
        gold=True,
        runs_dir=tmp_path,
        workers=2,
        progress=False,
        log=lambda _: None,
    )
    by_key = {
        (v.model_name_or_path, int(v.instance_id.rsplit("-", 1)[1])): v for v in outcome.verdicts
    }
    got = {k: v.status.value for k, v in by_key.items() if k[0] != "gold"}
    assert got == EXPECTED
    assert all(v.status is Status.RESOLVED for k, v in by_key.items() if k[0] == "gold")
    assert not any(v.infra_failure for v in outcome.verdicts)
    # The config edits and the fake runner module are reverted and named.
    assert by_key["scripted/cheater", 1].tampered_files == ["vitest.config.ts"]
    assert by_key["scripted/cheater", 2].tampered_files == ["vitest.config.ts"]
    assert all(p.startswith("node_modules/") for p in by_key["scripted/cheater", 3].tampered_files)
    # Rewriting expect from the code under test is caught in the worker; a second,
    # forged summary contradicts the real one.
    assert any("assertion machinery" in f for f in by_key["scripted/hacker", 1].integrity)
    assert any("summary" in f for f in by_key["scripted/hacker", 2].integrity)
    assert "js-runner-internals" in by_key["scripted/hacker", 1].integrity_flags


@pytest.mark.docker
def test_mining_the_ts_sample_finds_the_tests_the_fixes_changed(
    docker_engine: Any, tmp_path: Path
) -> None:
    import subprocess

    from evalkit.mining import MineOptions, mine

    clone = tmp_path / "tskit"
    bundle = next((SAMPLE / "repos").glob("*.bundle"))
    subprocess.run(["git", "clone", "-q", str(bundle), str(clone)], check=True)
    mine(
        str(clone),
        tmp_path / "mined",
        repo_name="evalkit-samples/tskit",
        issues=None,
        source="commit",
        options=MineOptions(runs=2),
        client=docker_engine,
        log=lambda _: None,
        progress=False,
    )
    mined = {
        json.loads(line)["base_commit"]: json.loads(line)
        for line in (tmp_path / "mined" / "instances.jsonl").read_text().splitlines()
    }
    for line in (SAMPLE / "instances.jsonl").read_text().splitlines():
        want = json.loads(line)
        got = mined[want["base_commit"]]
        assert sorted(got["FAIL_TO_PASS"]) == sorted(want["FAIL_TO_PASS"])
        assert sorted(got["PASS_TO_PASS"]) == sorted(want["PASS_TO_PASS"])


def _hang_patch(tmp_path: Path, instance: dict[str, Any]) -> str:
    """A generic hang: every source module the failing tests import spins forever at load."""
    import subprocess

    clone = tmp_path / "hang"
    bundle = next((SAMPLE / "repos").glob("*.bundle"))
    subprocess.run(["git", "clone", "-q", str(bundle), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", instance["base_commit"]], check=True)
    for module in (clone / "src").glob("*.ts"):
        module.write_text("while (Date.now() > 0) {}\n" + module.read_text())
    diff = subprocess.run(
        ["git", "-C", str(clone), "diff"], check=True, capture_output=True, text=True
    )
    return diff.stdout


@pytest.mark.docker
def test_a_hanging_patch_times_out_and_a_unit_started_ahead_keeps_its_whole_timeout(
    docker_engine: Any, tmp_path: Path
) -> None:
    # One worker: the honest unit's launcher starts while the hanging one runs out its
    # timeout, and waits about that long for its turn. Its clock starts at its go signal,
    # so it still has its whole timeout (counted from its start, it would be killed).
    rows = [json.loads(line) for line in (SAMPLE / "instances.jsonl").read_text().splitlines()]
    preds = tmp_path / "preds.jsonl"
    hang = {"model_name_or_path": "hang", "model_patch": _hang_patch(tmp_path, rows[0])}
    honest = {"model_name_or_path": "honest", "model_patch": rows[1]["patch"]}
    preds.write_text(
        json.dumps({"instance_id": rows[0]["instance_id"], **hang})
        + "\n"
        + json.dumps({"instance_id": rows[1]["instance_id"], **honest})
        + "\n"
    )
    outcome = evaluate(
        SAMPLE,
        preds,
        "hang",
        runs_dir=tmp_path / "runs",
        workers=1,
        timeout=8,
        progress=False,
        log=lambda _: None,
    )
    by_model = {v.model_name_or_path: v for v in outcome.verdicts}
    assert by_model["hang"].status is not Status.RESOLVED
    assert by_model["hang"].timed_out, by_model["hang"]
    assert by_model["honest"].status is Status.RESOLVED, by_model["honest"]

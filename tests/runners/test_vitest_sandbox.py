"""The TypeScript sample through the real harness: gold and honest fixes resolve; the
red-team attacks translated to vitest (a reporter swapped through the config, a setup
file added, a patched runner module, code that rewrites `expect`, a forged report file)
do not."""

from __future__ import annotations

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

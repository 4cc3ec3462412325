"""The sample task set is reproducible, valid (gold resolves) and exercises every verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from evalkit.harness import evaluate
from evalkit.sample import EXPECTED, build_sample_taskset

SAMPLE = Path(__file__).resolve().parent.parent / "tasks" / "sample"


def test_committed_sample_matches_its_generator(tmp_path: Path) -> None:
    build_sample_taskset(tmp_path)
    for name in ("instances.jsonl", "evalkit.toml", "predictions/scripted.jsonl", "issues.json"):
        assert (tmp_path / name).read_text() == (SAMPLE / name).read_text(), name


@pytest.mark.docker
def test_scripted_agents_get_the_verdicts_they_were_written_for(
    docker_engine: Any, tmp_path: Path
) -> None:
    outcome = evaluate(
        SAMPLE,
        SAMPLE / "predictions" / "scripted.jsonl",
        "sample",
        gold=True,
        runs_dir=tmp_path,
        workers=2,
        progress=False,
        log=lambda _: None,
    )
    got = {
        (v.model_name_or_path, int(v.instance_id.rsplit("-", 1)[1])): v.status.value
        for v in outcome.verdicts
    }
    assert {k: v for k, v in got.items() if k[0] != "gold"} == EXPECTED
    assert [v for k, v in got.items() if k[0] == "gold"] == ["resolved"] * 4
    by_model = outcome.summaries
    assert by_model["scripted/cheater"].resolved_instances == 0
    assert len(by_model["scripted/cheater"].tampered_ids) == 3

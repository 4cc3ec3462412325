"""The report says only what the data supports, escapes untrusted text, and exports tables."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from evalkit.errors import UsageError
from evalkit.records import Status
from evalkit.report import build_report
from tests.report.conftest import write_run, write_tasks

R, U, E = Status.RESOLVED, Status.UNRESOLVED, Status.ERROR


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    tasks = write_tasks(
        tmp_path / "tasks",
        40,
        problem="Crash on save <script>alert('pwned')</script> & <b>bold</b>",
    )
    agents = {
        "anthropic/claude-opus-4-5": lambda iid, i, r: R if i < 34 else U,
        "team/weak-agent": lambda iid, i, r: R if i < 10 else U,
        "team/coin-flip": lambda iid, i, r: R if (i + r) % 2 else U,
        "team/flaky-infra": lambda iid, i, r: E if i < 5 else (R if i < 20 else U),
    }
    for repeat in range(3):
        write_run(tmp_path / "runs", f"r{repeat}", tasks, agents, repeat)
    return tmp_path / "runs"


def build(runs: Path, tmp_path: Path, ids: list[str] | None = None, **kw: object) -> str:
    result = build_report(
        ids or ["r0", "r1", "r2"], runs_dir=runs, out=tmp_path / "out" / "r.html", **kw
    )  # type: ignore[arg-type]
    return result.html_path.read_text()


def test_untrusted_issue_text_is_escaped(runs: Path, tmp_path: Path) -> None:
    page = build(runs, tmp_path)
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in page
    assert len(re.findall(r"<script", page)) == 1  # only the page's own sort script
    assert "<b>bold</b>" not in page


def test_a_clear_difference_is_called_and_a_small_one_is_not(runs: Path, tmp_path: Path) -> None:
    build(runs, tmp_path)
    pairs = json.loads((tmp_path / "out" / "r_tables" / "pairwise.json").read_text())
    by = {(p["agent_a"], p["agent_b"]): p for p in pairs}
    strong = by[("anthropic/claude-opus-4-5", "team/weak-agent")]
    assert strong["mcnemar_p"] < 0.001 and "beats team/weak-agent" in strong["conclusion"]
    close = by[("team/coin-flip", "team/flaky-infra")]
    assert "no significant difference" in close["conclusion"]


def test_infra_failures_leave_the_denominator_and_are_counted_apart(
    runs: Path, tmp_path: Path
) -> None:
    build(runs, tmp_path)
    head = {
        h["agent"]: h
        for h in json.loads((tmp_path / "out" / "r_tables" / "headline.json").read_text())
    }
    infra = head["team/flaky-infra"]
    assert infra["infra_failures"] == 15 and infra["graded_results"] == 105
    assert infra["rate"] == pytest.approx(45 / 105)


def test_public_numbers_are_matched_with_provenance(runs: Path, tmp_path: Path) -> None:
    page = build(runs, tmp_path)
    head = {
        h["agent"]: h
        for h in json.loads((tmp_path / "out" / "r_tables" / "headline.json").read_text())
    }
    opus = head["anthropic/claude-opus-4-5"]
    assert opus["verified_evidence"] == "standardized_scaffold"
    assert opus["gap_verified"] == pytest.approx(34 / 40 - opus["verified_pct"] / 100)
    assert opus["verified_source"] in page
    assert "team/weak-agent" in page.split("No public leaderboard row matched")[1][:400]


def test_model_map_and_cutoffs_feed_the_breakdowns(runs: Path, tmp_path: Path) -> None:
    (tmp_path / "map.toml").write_text('"team/weak-agent" = "GPT-5"\n')
    build(
        runs, tmp_path, model_map=tmp_path / "map.toml", cutoffs={"team/weak-agent": "2025-06-30"}
    )
    head = {
        h["agent"]: h
        for h in json.loads((tmp_path / "out" / "r_tables" / "headline.json").read_text())
    }
    assert head["team/weak-agent"]["matched_model"] == "GPT-5"
    rows = json.loads((tmp_path / "out" / "r_tables" / "breakdowns.json").read_text())
    sides = {
        r["group"] for r in rows if r["agent"] == "team/weak-agent" and r["dimension"] == "cutoff"
    }
    assert sides == {"after cutoff", "before cutoff (may be in training data)"}
    sizes = {r["group"] for r in rows if r["dimension"] == "size"}
    assert sizes == {"small (≤10 lines)", "medium (11-50 lines)", "large (>50 lines)"}


def test_repeats_give_pass_at_k_and_flip_rates(runs: Path, tmp_path: Path) -> None:
    build(runs, tmp_path)
    reps = {
        r["agent"]: r
        for r in json.loads((tmp_path / "out" / "r_tables" / "repeats.json").read_text())
    }
    coin = reps["team/coin-flip"]
    assert coin["runs"] == 3 and coin["tasks_that_flip"] == 40
    assert coin["pass^3"] == 0.0 and coin["pass@3"] == 1.0
    assert reps["team/weak-agent"]["mean_flip_rate"] == 0.0


def test_every_table_is_exported_as_csv_and_json(runs: Path, tmp_path: Path) -> None:
    build(runs, tmp_path, ids=["r0"])
    names = {p.name for p in (tmp_path / "out" / "r_tables").iterdir()}
    for table in ("headline", "pairwise", "repeats", "breakdowns", "matrix", "results"):
        assert {f"{table}.csv", f"{table}.json"} <= names


def test_unknown_run_is_a_usage_error(runs: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such run"):
        build(runs, tmp_path, ids=["missing"])

"""The report says only what the data supports, escapes untrusted text, and exports tables."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint
from typer.testing import CliRunner

from evalkit.cli import app
from evalkit.errors import UsageError
from evalkit.records import RESULTS_FILE, RUN_MANIFEST_FILE, Status
from evalkit.report import _stats as stats
from evalkit.report import build_report
from tests.report.conftest import write_run, write_tasks

R, U, E = Status.RESOLVED, Status.UNRESOLVED, Status.ERROR
ROOT = Path(__file__).resolve().parents[2]


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
        "team/never": lambda iid, i, r: U,
    }
    for repeat in range(3):
        write_run(tmp_path / "runs", f"r{repeat}", tasks, agents, repeat)
    return tmp_path / "runs"


def build(runs: Path, tmp_path: Path, ids: list[str] | None = None, **kw: Any) -> str:
    result = build_report(
        ids or ["r0", "r1", "r2"], runs_dir=runs, out=tmp_path / "out" / "r.html", **kw
    )
    return result.html_path.read_text()


def table(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(
        (tmp_path / "out" / "r_tables" / f"{name}.json").read_text()
    )
    return rows


def by_agent(tmp_path: Path, name: str) -> dict[str, dict[str, Any]]:
    return {r["agent"]: r for r in table(tmp_path, name)}


def test_untrusted_issue_text_is_escaped(runs: Path, tmp_path: Path) -> None:
    page = build(runs, tmp_path)
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in page
    assert len(re.findall(r"<script", page)) == 1  # only the page's own sort script
    assert "<b>bold</b>" not in page


def test_the_first_screen_answers_which_agent_and_how_sure(runs: Path, tmp_path: Path) -> None:
    result = build_report(["r0", "r1", "r2"], runs_dir=runs, out=tmp_path / "out" / "r.html")
    page = result.html_path.read_text()
    # Ranked by rate, best first, in the result, the tables and the page.
    assert result.agents[0] == "anthropic/claude-opus-4-5" and result.agents[-1] == "team/never"
    assert [h["agent"] for h in table(tmp_path, "headline")] == result.agents
    answer = page.split('id="answer"')[1].split("</section>")[0]
    assert result.summary.startswith("anthropic/claude-opus-4-5 has the highest rate: 85.0%")
    assert "It reliably beats" in result.summary and result.summary in answer.replace("&#39;", "'")
    positions = [answer.index(f"<strong>{a}</strong>") for a in result.agents]
    assert positions == sorted(positions)
    assert "reliably below #1" in answer
    assert page.index('id="answer"') < page.index("<svg")  # the answer comes before charts


def test_one_rate_definition_throughout(runs: Path, tmp_path: Path) -> None:
    build(runs, tmp_path)
    head, reps = by_agent(tmp_path, "headline"), by_agent(tmp_path, "repeats")
    for agent, h in head.items():
        assert reps[agent]["pass@1"] == pytest.approx(h["rate"])
        assert h["rate"] == pytest.approx(h["resolved_runs"] / h["graded_runs"])  # equal runs
    repo_rows = [b for b in table(tmp_path, "breakdowns") if b["dimension"] == "size"]
    opus = [b for b in repo_rows if b["agent"] == "anthropic/claude-opus-4-5"]
    weighted = sum(b["rate"] * b["graded_tasks"] for b in opus) / sum(
        b["graded_tasks"] for b in opus
    )
    assert weighted == pytest.approx(head["anthropic/claude-opus-4-5"]["rate"])


def test_a_clear_difference_is_called_and_a_small_one_is_not(runs: Path, tmp_path: Path) -> None:
    build(runs, tmp_path)
    pairs = {(p["agent_a"], p["agent_b"]): p for p in table(tmp_path, "pairwise")}
    assert len(pairs) == 10
    strong = pairs[("anthropic/claude-opus-4-5", "team/weak-agent")]
    assert strong["p_holm"] < 0.001 and "beats team/weak-agent" in strong["conclusion"]
    assert strong["p_holm"] >= strong["p_raw"]
    close = pairs[("team/coin-flip", "team/flaky-infra")]
    assert "no reliable difference" in close["conclusion"]
    # The estimand is the difference of the headline rates, on shared tasks.
    assert strong["difference"] == pytest.approx(24 / 40)


def test_infra_failures_and_task_errors_leave_the_denominator(tmp_path: Path) -> None:
    tasks = write_tasks(tmp_path / "tasks", 20)
    agents = {"team/a": lambda iid, i, r: E if i in (0, 1, 2) else (R if i % 2 else U)}
    write_run(tmp_path / "runs", "r0", tasks, agents, broken=frozenset({0, 1}))
    build(tmp_path / "runs", tmp_path, ids=["r0"])
    a = by_agent(tmp_path, "headline")["team/a"]
    assert (a["infra_failures"], a["task_errors"], a["graded_tasks"]) == (1, 2, 17)
    assert a["rate"] == pytest.approx(9 / 17)  # odd indexes 3..19: 9 of 17 graded tasks
    low, high = proportion_confint(9, 17, method="wilson")
    assert (a["ci_low"], a["ci_high"]) == pytest.approx((low, high))


def test_repeats_infra_counts_and_intervals(runs: Path, tmp_path: Path) -> None:
    build(runs, tmp_path)
    infra = by_agent(tmp_path, "headline")["team/flaky-infra"]
    assert infra["infra_failures"] == 15 and infra["graded_runs"] == 105
    assert infra["rate"] == pytest.approx(15 / 35)
    never = by_agent(tmp_path, "headline")["team/never"]
    assert never["rate"] == 0 and never["ci_high"] > 0.05  # no zero-width interval at 0/N


def test_breakdown_intervals_are_clustered_by_task(runs: Path, tmp_path: Path) -> None:
    build(runs, tmp_path)
    rows = table(tmp_path, "breakdowns")
    web = next(
        b
        for b in rows
        if b["dimension"] == "repo"
        and b["group"] == "acme/web"
        and b["agent"] == "anthropic/claude-opus-4-5"
    )
    # 20 tasks, 3 identical runs each: the interval is Wilson on the 20 tasks, not on 60 runs.
    resolved_tasks = round(web["rate"] * 20)
    low, high = proportion_confint(resolved_tasks, 20, method="wilson")
    assert (web["graded_tasks"], web["graded_runs"]) == (20, 60)
    assert (web["ci_low"], web["ci_high"]) == pytest.approx((low, high))


def test_public_numbers_carry_provenance_and_both_sides_error(runs: Path, tmp_path: Path) -> None:
    page = build(runs, tmp_path)
    opus = by_agent(tmp_path, "headline")["anthropic/claude-opus-4-5"]
    assert opus["verified_evidence"] == "standardized_scaffold"
    assert opus["verified_reliability"] == "official leaderboard"
    assert opus["gap_verified"] == pytest.approx(34 / 40 - opus["verified_pct"] / 100)
    internal = stats.Interval(opus["rate"], opus["ci_low"], opus["ci_high"])
    expected = stats.gap_interval(internal, opus["verified_pct"], 500)
    assert (opus["gap_verified_low"], opus["gap_verified_high"]) == pytest.approx(expected[1:])
    assert opus["verified_harnesses"] >= 4 and opus["verified_spread_high"] >= 80
    assert opus["verified_source"] in page and "official leaderboard" in page
    assert "same standardized scaffold" not in page
    assert "team/weak-agent" in page.split("No public row for")[1][:400]


def test_a_gap_inside_the_harness_spread_is_not_called_significant(tmp_path: Path) -> None:
    tasks = write_tasks(tmp_path / "tasks", 200)
    write_run(tmp_path / "runs", "r0", tasks, {"acme-coder-1": lambda iid, i, r: R if i % 3 else U})
    lb = tmp_path / "lb.csv"
    lb.write_text(
        "benchmark,split,system,model,score_pct,n_instances,date,source_url,source_note\n"
        "SWE-bench Verified,test,board,Acme Coder 1,45.0,500,2026-01-01,https://x.invalid/a,"
        "evidence=standardized_scaffold; tier=primary\n"
        "SWE-bench Verified,test,vendor harness,Acme Coder 1,80.0,500,2026-01-01,"
        "javascript:alert(document.cookie),evidence=agent_system; tier=primary\n"
    )
    page = build(tmp_path / "runs", tmp_path, ids=["r0"], leaderboard=lb)
    head = by_agent(tmp_path, "headline")["acme-coder-1"]
    assert head["gap_verified_low"] > 0  # against the standardized board alone: clear
    assert head["gap_verified_significant"] is False
    assert head["gap_verified_direction"] == "depends on the harness"
    assert 'href="javascript' not in page.lower() and "href='javascript" not in page.lower()


def test_the_matrix_is_in_natural_order_with_sortable_shares(runs: Path, tmp_path: Path) -> None:
    page = build(runs, tmp_path)
    matrix = pd.read_csv(tmp_path / "out" / "r_tables" / "matrix.csv.gz")
    api = [i for i in matrix["instance_id"] if i.startswith("acme__api")]
    assert api[:6] == [f"acme__api-{n}" for n in (1, 3, 5, 7, 9, 11)]
    assert 'data-v="0.6667">unresolved 1/3' not in page  # commonest status first
    assert re.search(r'data-v="0\.3333">unresolved 1/3|data-v="0\.6667">resolved 2/3', page)


def test_tables_are_compressed_and_neutralise_formulas(tmp_path: Path) -> None:
    tasks = write_tasks(tmp_path / "tasks", 6)
    agent = '=HYPERLINK("http://evil.invalid","x")'
    write_run(tmp_path / "runs", "r0", tasks, {agent: lambda iid, i, r: R, "@sum": lambda *a: U})
    build(tmp_path / "runs", tmp_path, ids=["r0"])
    names = {p.name for p in (tmp_path / "out" / "r_tables").iterdir()}
    for name in ("headline", "pairwise", "repeats", "breakdowns", "matrix", "results"):
        assert f"{name}.csv.gz" in names
    assert {"headline.json", "pairwise.json"} <= names and "results.json" not in names
    results = pd.read_csv(tmp_path / "out" / "r_tables" / "results.csv.gz")
    assert set(results["agent"]) == {"'" + agent, "'@sum"}
    assert (results["resolved"] >= 0).all()  # numbers stay numbers
    head = pd.read_csv(tmp_path / "out" / "r_tables" / "headline.csv.gz")
    assert not any(str(v).startswith(("=", "@", "+", "-")) for v in head["agent"])


def test_model_map_and_cutoffs_feed_the_breakdowns(runs: Path, tmp_path: Path) -> None:
    (tmp_path / "map.toml").write_text('"team/weak-agent" = "GPT-5"\n')
    build(
        runs, tmp_path, model_map=tmp_path / "map.toml", cutoffs={"team/weak-agent": "2025-06-30"}
    )
    assert by_agent(tmp_path, "headline")["team/weak-agent"]["matched_model"] == "GPT-5"
    rows = table(tmp_path, "breakdowns")
    sides = {
        r["group"] for r in rows if r["agent"] == "team/weak-agent" and r["dimension"] == "cutoff"
    }
    assert sides == {"after cutoff", "before cutoff (may be in training data)"}
    sizes = [r["group"] for r in rows if r["dimension"] == "size"]
    assert list(dict.fromkeys(sizes)) == [
        "small (≤10 lines)",
        "medium (11-50 lines)",
        "large (>50 lines)",
    ]


def test_near_misses_are_warned_about(tmp_path: Path) -> None:
    tasks = write_tasks(tmp_path / "tasks", 6)
    write_run(tmp_path / "runs", "r0", tasks, {"moonshotai/Kimi-K2-Instruct-0711": lambda *a: R})
    result = build_report(["r0"], runs_dir=tmp_path / "runs", out=tmp_path / "out" / "r.html")
    assert result.unmatched_agents == ["moonshotai/Kimi-K2-Instruct-0711"]
    assert any("Kimi K2 Instruct" in w for w in result.warnings)
    assert "Kimi K2 Instruct" in result.html_path.read_text()


def test_tiny_sets_say_nothing_is_detectable(tmp_path: Path) -> None:
    tasks = write_tasks(tmp_path / "tasks", 4)
    write_run(tmp_path / "runs", "r0", tasks, {"gold": lambda *a: R, "cheater": lambda *a: U})
    page = build(tmp_path / "runs", tmp_path, ids=["r0"])
    assert "no difference between two agents can be detected" in page
    (pair,) = table(tmp_path, "pairwise")
    assert (pair["diff_low"], pair["diff_high"]) == (-1.0, 1.0)  # not "100.0 – 100.0%"
    assert "100.0% – 100.0%" not in page


def test_repeats_give_pass_at_k_and_flip_rates(runs: Path, tmp_path: Path) -> None:
    build(runs, tmp_path)
    reps = by_agent(tmp_path, "repeats")
    coin = reps["team/coin-flip"]
    assert coin["runs"] == 3 and coin["tasks_that_flip"] == 40
    assert coin["pass^3"] == 0.0 and coin["pass@3"] == 1.0
    assert reps["team/weak-agent"]["mean_flip_rate"] == 0.0


def test_unknown_run_is_a_usage_error(runs: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such run"):
        build(runs, tmp_path, ids=["missing"])


def _corrupt(run: Path, how: str) -> str:
    """Damage one run the way issue #7 found; return the expected message's pattern."""
    results = run / RESULTS_FILE
    good = results.read_bytes().splitlines(keepends=True)
    if how == "utf8":
        results.write_bytes(good[0] + b'{"instance_id": "\xff\xfe"}\n' + b"".join(good[1:]))
        return rf"{re.escape(str(results))}:2: invalid UTF-8"
    if how == "non-verdict":
        results.write_bytes(good[0] + b'{"hello": "world"}\n' + b"".join(good[1:]))
        return rf"{re.escape(str(results))}:2: not a verdict"
    if how == "manifest":
        manifest = run / RUN_MANIFEST_FILE
        manifest.write_bytes(manifest.read_bytes()[:40])
        return rf"{re.escape(str(manifest))}: not a valid run manifest"
    results.unlink()
    results.mkdir()
    return rf"{re.escape(str(results))}: results.jsonl is a directory"


@pytest.mark.parametrize("how", ["utf8", "non-verdict", "manifest", "directory"])
def test_a_corrupted_run_is_a_one_line_usage_error(runs: Path, tmp_path: Path, how: str) -> None:
    pattern = _corrupt(runs / "r1", how)
    with pytest.raises(UsageError, match=pattern):
        build(runs, tmp_path)


def test_the_cli_reports_a_corrupted_run_in_one_line_and_exits_2(
    runs: Path, tmp_path: Path
) -> None:
    _corrupt(runs / "r1", "non-verdict")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "evalkit.cli",
            "report",
            "r0",
            "r1",
            "--runs-dir",
            str(runs),
            "--out",
            str(tmp_path / "x.html"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("evalkit: error: ") and "results.jsonl:2: not a verdict" in line


def test_a_torn_last_line_is_skipped(runs: Path, tmp_path: Path) -> None:
    results = runs / "r0" / RESULTS_FILE
    results.write_bytes(results.read_bytes() + b'{"instance_id": "acme__web-0", "model_na')
    build(runs, tmp_path, ids=["r0"])
    assert by_agent(tmp_path, "headline")["team/never"]["graded_runs"] == 40


@pytest.mark.parametrize(
    "args",
    [
        ["r0", "r1", "r2"],
        ["--runs", "r0", "r1", "r2"],
        ["--runs", "r0,r1", "r2"],
        ["--runs", "r0", "--runs", "r1", "r2"],
    ],
)
def test_cli_takes_run_ids_as_arguments_or_with_runs(
    runs: Path, tmp_path: Path, args: list[str]
) -> None:
    out = tmp_path / "cli.html"
    result = CliRunner().invoke(app, ["report", *args, "--runs-dir", str(runs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "anthropic/claude-opus-4-5 has the highest rate" in result.output
    head = json.loads((tmp_path / "cli_tables" / "headline.json").read_text())
    assert {h["runs"] for h in head} == {3}  # three runs: three repeats per agent


def test_several_runs_of_one_agent_are_its_repeats(tmp_path: Path) -> None:
    tasks = write_tasks(tmp_path / "tasks", 10)
    for r in range(4):
        write_run(
            tmp_path / "runs",
            f"bake-{r}",
            tasks,
            {"a": lambda iid, i, rep: R if (i + rep) % 2 else U},
            r,
        )
    build(tmp_path / "runs", tmp_path, ids=[f"bake-{r}" for r in range(4)])
    head = by_agent(tmp_path, "headline")["a"]
    assert (head["runs"], head["graded_tasks"], head["graded_runs"]) == (4, 10, 40)
    assert np.isclose(head["rate"], 0.5)


def test_links_to_run_files_stay_relative_whatever_the_directory_names(tmp_path: Path) -> None:
    runs = tmp_path / "javascript:alert(1)"
    tasks = write_tasks(tmp_path / "tasks", 2)
    write_run(runs, "r0", tasks, {"a": lambda *a: R})
    from evalkit.records import RunDir

    patch = RunDir(runs / "r0").unit("a", "acme__web-0") / "patch.diff"
    patch.parent.mkdir(parents=True)
    patch.write_text("diff --git a/x b/x\n")
    page = build_report(["r0"], runs_dir=runs, out=tmp_path / "r.html").html_path.read_text()
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert any(h.endswith("patch.diff") for h in hrefs)
    assert all(h.startswith(("#", "./", "../", "https://", "http://")) for h in hrefs)


def test_agents_with_only_errors_are_reported_not_compared(tmp_path: Path) -> None:
    tasks = write_tasks(tmp_path / "tasks", 6)
    write_run(tmp_path / "runs", "r", tasks, {"ok": lambda *a: R, "dead": lambda *a: E})
    write_run(tmp_path / "runs", "only", tasks, {"dead": lambda *a: E})
    both = build_report(["r"], runs_dir=tmp_path / "runs", out=tmp_path / "a.html")
    assert both.agents == ["ok", "dead"] and "Not compared" in both.summary
    assert "beats every other" not in both.summary
    alone = build_report(["only"], runs_dir=tmp_path / "runs", out=tmp_path / "b.html")
    assert alone.summary.startswith("Nothing to report yet: every result was an error (6 infra")

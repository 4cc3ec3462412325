"""The "A beats B" verdict: on the headline rate, paired by task, corrected for many pairs.

Seeded simulations with known true rates run the report's own ``pairwise`` on frames
shaped like the loaded results.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from evalkit.report._build import pairwise


def _frame(outcomes: dict[str, np.ndarray]) -> pd.DataFrame:
    """agent -> tasks x runs 0/1 array, as the loaded results frame (one row per run)."""
    rows = []
    for agent, matrix in outcomes.items():
        tasks, runs = matrix.shape
        for t in range(tasks):
            for r in range(runs):
                rows.append((f"run{r}", agent, f"acme__api-{t}", float(matrix[t, r])))
    return pd.DataFrame(rows, columns=["run_id", "agent", "instance_id", "resolved"])


def _equal_agents(rng: np.random.Generator, agents: int, tasks: int, runs: int) -> pd.DataFrame:
    """Agents with the same per-run rate (40%): half flaky (every run a fresh coin), half
    steady (each task always or never resolved), with shared task difficulty, the case
    where majority-vote McNemar called a winner 87% of the time with 2 runs."""
    difficulty = rng.normal(size=tasks)
    outcomes = {}
    for a in range(agents):
        if a % 2:
            p = np.full(tasks, 0.4)
            outcomes[f"flaky-{a}"] = (rng.random((tasks, runs)) < p[:, None]).astype(float)
        else:
            solved = np.argsort(difficulty + rng.normal(scale=1.0, size=tasks))[: int(0.4 * tasks)]
            steady = np.zeros((tasks, runs))
            steady[solved] = 1.0
            outcomes[f"steady-{a}"] = steady
    return _frame(outcomes)


def _shared_difficulty(
    rng: np.random.Generator, agents: int, tasks: int, runs: int
) -> pd.DataFrame:
    """Identical agents on tasks of varied difficulty (logit p = -0.6 + 2z): correlated
    like real agents, every run a fresh draw."""
    z = rng.normal(size=tasks)
    p = 1 / (1 + np.exp(-(-0.6 + 2 * z)))
    return _frame(
        {
            f"agent-{a}": (rng.random((tasks, runs)) < p[:, None]).astype(float)
            for a in range(agents)
        }
    )


@pytest.mark.parametrize(
    ("make", "tasks", "runs"), [(_equal_agents, 40, 2), (_shared_difficulty, 60, 1)]
)
def test_equally_good_agents_rarely_get_any_false_beats_in_a_report(
    make: Callable[[np.random.Generator, int, int, int], pd.DataFrame], tasks: int, runs: int
) -> None:
    # Uncorrected, 52% of 10-agent reports held a false "X beats Y" (45 pairs at 0.05 each).
    rng = np.random.default_rng(2026)
    reports, false_reports = 150, 0
    for _ in range(reports):
        pairs = pairwise(make(rng, 10, tasks, runs), intervals=False)
        assert len(pairs) == 45
        false_reports += bool(pairs["significant"].any())
    assert false_reports / reports <= 0.05


def test_a_flaky_agent_does_not_beat_a_steadier_better_one() -> None:
    # The audit's inversion: flaky resolves each run with p = 0.40, steady always the same
    # half. Majority vote with 2 runs said "flaky beats steady (p = 0.0002)".
    rng = np.random.default_rng(7)
    tasks = 200
    flaky = (rng.random((tasks, 2)) < 0.4).astype(float)
    steady = np.zeros((tasks, 2))
    steady[rng.permutation(tasks)[: tasks // 2]] = 1.0
    pairs = pairwise(_frame({"flaky-agent": flaky, "steady-agent": steady}))
    (pair,) = pairs.to_dict("records")
    assert pair["agent_a"] == "steady-agent"  # ranked by rate: 50% before 40%
    assert pair["difference"] == pytest.approx(steady.mean() - flaky.mean())
    assert "flaky-agent beats" not in pair["conclusion"]
    assert pair["diff_low"] < pair["difference"] < pair["diff_high"]


def test_a_real_difference_is_still_found_after_the_correction() -> None:
    rng = np.random.default_rng(3)
    difficulty = rng.normal(size=120)
    strong = rng.random((120, 3)) < 1 / (1 + np.exp(-(1.2 - 2 * difficulty)))[:, None]
    weak = rng.random((120, 3)) < 1 / (1 + np.exp(-(-1.2 - 2 * difficulty)))[:, None]
    agents = {"strong": strong.astype(float), "weak": weak.astype(float)}
    for k in range(4):
        agents[f"middle-{k}"] = (
            rng.random((120, 3)) < 1 / (1 + np.exp(2 * difficulty))[:, None]
        ).astype(float)
    pairs = pairwise(_frame(agents))
    row = pairs[(pairs["agent_a"] == "strong") & (pairs["agent_b"] == "weak")].iloc[0]
    assert row["significant"] and row["p_holm"] >= row["p_raw"]
    assert row["conclusion"].startswith("strong beats weak")
    assert row["test"] == "paired sign-flip permutation (exact)"

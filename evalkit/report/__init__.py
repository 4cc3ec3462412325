"""The gap report: internal resolve rates beside public SWE-bench Verified / Pro numbers.

Heavy dependencies (numpy, pandas, jinja2) load when a report is built, not on import.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evalkit.report._build import ReportResult

__all__ = ["ReportResult", "build_report"]


def build_report(
    run_ids: list[str],
    *,
    runs_dir: Path = Path("runs"),
    out: Path,
    leaderboard: Path | None = None,
    model_map: Path | None = None,
    cutoffs: dict[str, str] | None = None,
    bakeoffs: list[str] | None = None,
    store: Path | None = None,
) -> ReportResult:
    """Write the HTML gap report for ``run_ids`` to ``out``, with its tables beside it
    (gzip CSV, summary tables also JSON). Several runs of one agent are its repeats.

    ``bakeoffs``: bake-off run ids whose graded repeats are added; repeats of a bake-off
    (``ID.rK`` beside ``ID/attempts.jsonl``) add its claims, trust, cost and trend
    sections. ``store``: the bake-off history (default ``runs_dir/evalkit.db``)."""
    from evalkit.report._build import build_report as build

    return build(
        run_ids,
        runs_dir=runs_dir,
        out=out,
        leaderboard=leaderboard,
        model_map=model_map,
        cutoffs=cutoffs,
        bakeoffs=bakeoffs,
        store=store,
    )


def __getattr__(name: str) -> object:
    if name == "ReportResult":
        from evalkit.report._build import ReportResult

        return ReportResult
    raise AttributeError(name)

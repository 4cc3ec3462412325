"""Collect runs into tables, compute honest statistics, render one self-contained HTML file."""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from evalkit import __version__
from evalkit.errors import UsageError
from evalkit.records import (
    PATCH_FILE,
    RESULTS_FILE,
    RUN_MANIFEST_FILE,
    RunManifest,
    iter_jsonl_lines,
    model_dir_name,
)
from evalkit.report import _stats as stats
from evalkit.report._leaderboard import (
    PRO,
    VERIFIED,
    PublicScore,
    best_score,
    load_leaderboard,
    load_model_map,
    normalize,
)

if TYPE_CHECKING:
    import pandas as pd

SIZE_BUCKETS = (
    (10, "small (≤10 lines)"),
    (50, "medium (11-50 lines)"),
    (math.inf, "large (>50 lines)"),
)
EMBED_TEXT_CAP = 6000
"""Characters of a problem statement or patch embedded in the page; the rest is linked."""
EMBED_PATCHES_MAX_CELLS = 400
"""Above this many task x agent cells, patches are linked rather than embedded."""


@dataclass
class ReportResult:
    html_path: Path
    tables_dir: Path
    agents: list[str]
    tasks: int
    unmatched_agents: list[str] = field(default_factory=list)


@dataclass
class _Task:
    instance_id: str
    repo: str = ""
    created_at: str = ""
    lines_changed: int | None = None
    files_changed: int | None = None
    problem: str = ""


@dataclass
class _Data:
    results: pd.DataFrame
    """One row per (run, agent, instance): status and flags."""
    tasks: dict[str, _Task]
    manifests: list[RunManifest]
    run_dirs: dict[str, Path]


# --- loading ------------------------------------------------------------------


def _load_run(run_dir: Path) -> tuple[RunManifest, list[dict[str, Any]]]:
    manifest_path = run_dir / RUN_MANIFEST_FILE
    results_path = run_dir / RESULTS_FILE
    if not run_dir.is_dir():
        raise UsageError("no such run", path=str(run_dir))
    if not results_path.is_file():
        raise UsageError(f"run has no {RESULTS_FILE}", path=str(run_dir))
    manifest = (
        RunManifest.model_validate_json(manifest_path.read_text())
        if manifest_path.is_file()
        else RunManifest(
            run_id=run_dir.name,
            evalkit_version="?",
            tasks_dir="",
            tasks_sha256="",
            predictions="",
            timeout_s=0,
            workers=0,
            created_at="",
        )
    )
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for _, line in iter_jsonl_lines(results_path):
        try:
            row = json.loads(line)  # plain json: 10x faster than model validation here
        except json.JSONDecodeError:
            continue  # a torn last line
        latest[(row["model_name_or_path"], row["instance_id"])] = row
    return manifest, list(latest.values())


def _size(patch: str) -> tuple[int | None, int | None]:
    from evalkit.patch import PatchRejected, inspect_patch

    try:
        info = inspect_patch(patch)
    except PatchRejected:
        return None, None
    return info.lines_added + info.lines_removed, len(info.paths)


def _load_tasks(manifests: Iterable[RunManifest]) -> dict[str, _Task]:
    from evalkit.dataset import load_task_set

    tasks: dict[str, _Task] = {}
    for manifest in manifests:
        if not manifest.tasks_dir or not Path(manifest.tasks_dir).is_dir():
            continue
        for iid, inst in load_task_set(Path(manifest.tasks_dir)).instances.items():
            if iid not in tasks:
                lines, files = _size(inst.patch)
                tasks[iid] = _Task(
                    iid, inst.repo, inst.created_at, lines, files, inst.problem_statement
                )
    return tasks


def load(run_ids: list[str], runs_dir: Path) -> _Data:
    import pandas as pd

    if not run_ids:
        raise UsageError("give at least one run id")
    frames = []
    manifests = []
    run_dirs = {}
    for run_id in run_ids:
        manifest, rows = _load_run(runs_dir / run_id)
        manifests.append(manifest)
        run_dirs[run_id] = runs_dir / run_id
        frame = pd.DataFrame(rows)
        if frame.empty:
            continue
        frame["run_id"] = run_id
        frames.append(frame)
    if not frames:
        raise UsageError(f"no results in run(s) {run_ids}")
    results = pd.concat(frames, ignore_index=True)
    results = results.rename(columns={"model_name_or_path": "agent"})
    results["resolved"] = (results["status"] == "resolved").astype(float)
    results["infra"] = results["infra_failure"].fillna(False).astype(bool)
    results["tampered"] = results["tampered_files"].map(lambda x: bool(x))
    results.loc[results["infra"], "resolved"] = np.nan  # not the agent's result
    tasks = _load_tasks(manifests)
    for iid in results["instance_id"].unique():
        tasks.setdefault(iid, _Task(iid, repo=iid.rsplit("-", 1)[0].replace("__", "/")))
    return _Data(
        results[
            [
                "run_id",
                "agent",
                "instance_id",
                "status",
                "resolved",
                "infra",
                "tampered",
                "timed_out",
            ]
        ],
        tasks,
        manifests,
        run_dirs,
    )


# --- tables -------------------------------------------------------------------


def outcome_matrix(results: pd.DataFrame, agent: str) -> tuple[list[str], np.ndarray]:
    """Tasks x repeats 0/1 matrix for one agent (NaN where infra failed or not run)."""
    sub = results[results["agent"] == agent]
    pivot = sub.pivot_table(
        index="instance_id", columns="run_id", values="resolved", aggfunc="first", dropna=False
    )
    return list(pivot.index), pivot.to_numpy(dtype=float)


def headline(data: _Data, rows: list[PublicScore], model_map: dict[str, str]) -> pd.DataFrame:
    import pandas as pd

    records = []
    for i, agent in enumerate(sorted(data.results["agent"].unique())):
        sub = data.results[data.results["agent"] == agent]
        _, matrix = outcome_matrix(data.results, agent)
        ci = stats.rate_interval(matrix, seed=i)
        graded = int((~np.isnan(matrix)).sum())
        target = model_map.get(agent, agent)
        record: dict[str, Any] = {
            "agent": agent,
            "runs": int(sub["run_id"].nunique()),
            "tasks": int(sub["instance_id"].nunique()),
            "graded_results": graded,
            "resolved_results": int(np.nansum(matrix)),
            "infra_failures": int(sub["infra"].sum()),
            "rate": ci.estimate,
            "ci_low": ci.low,
            "ci_high": ci.high,
            "matched_model": "",
        }
        for label, bench in (("verified", VERIFIED), ("pro", PRO)):
            score = best_score(rows, target, bench)
            if score is not None:
                record["matched_model"] = score.model
                public = score.score_pct / 100
                record.update(
                    {
                        f"{label}_pct": score.score_pct,
                        f"{label}_evidence": score.evidence,
                        f"{label}_system": score.system,
                        f"{label}_date": score.date,
                        f"{label}_source": score.source_url,
                        f"{label}_split": score.split,
                        # The public number is treated as fixed: the interval is ours only.
                        f"gap_{label}": ci.estimate - public,
                        f"gap_{label}_low": ci.low - public,
                        f"gap_{label}_high": ci.high - public,
                    }
                )
        records.append(record)
    return pd.DataFrame(records)


def _per_task_majority(results: pd.DataFrame, agent: str) -> pd.Series:
    sub = results[(results["agent"] == agent) & results["resolved"].notna()]
    return sub.groupby("instance_id")["resolved"].mean()


def pairwise(results: pd.DataFrame) -> pd.DataFrame:
    """Exact McNemar on tasks both agents were graded on (majority outcome per task)."""
    import pandas as pd

    agents = sorted(results["agent"].unique())
    majority = {a: _per_task_majority(results, a) for a in agents}
    records = []
    for i, a in enumerate(agents):
        for b in agents[i + 1 :]:
            common = majority[a].index.intersection(majority[b].index)
            if common.empty:
                continue
            ra = (majority[a][common] >= 0.5).to_numpy(dtype=float)
            rb = (majority[b][common] >= 0.5).to_numpy(dtype=float)
            only_a = int(((ra == 1) & (rb == 0)).sum())
            only_b = int(((ra == 0) & (rb == 1)).sum())
            p = stats.mcnemar_exact(only_a, only_b)
            diff = stats.paired_difference(ra, rb, seed=i)
            if p < 0.05:
                winner, loser = (a, b) if diff.estimate > 0 else (b, a)
                verdict = f"{winner} beats {loser} (p = {p:.3g})"
            else:
                verdict = f"no significant difference (p = {p:.2g}); do not rank these two"
            records.append(
                {
                    "agent_a": a,
                    "agent_b": b,
                    "tasks": int(common.size),
                    "only_a_resolved": only_a,
                    "only_b_resolved": only_b,
                    "difference": diff.estimate,
                    "diff_low": diff.low,
                    "diff_high": diff.high,
                    "mcnemar_p": p,
                    "conclusion": verdict,
                }
            )
    return pd.DataFrame(records)


def repeats(results: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    records = []
    for agent in sorted(results["agent"].unique()):
        _, matrix = outcome_matrix(results, agent)
        k = matrix.shape[1]
        if k < 2:
            continue
        full = matrix[~np.isnan(matrix).any(axis=1)]
        record: dict[str, Any] = {"agent": agent, "runs": k, "tasks_in_all_runs": len(full)}
        successes = full.sum(axis=1).astype(int)
        for j in range(1, k + 1):
            # Both estimators depend only on a task's success count: one table per k.
            at = np.array([stats.pass_at_k(k, c, j) for c in range(k + 1)])
            hat = np.array([stats.pass_hat_k(k, c, j) for c in range(k + 1)])
            record[f"pass@{j}"] = float(at[successes].mean()) if len(full) else math.nan
            record[f"pass^{j}"] = float(hat[successes].mean()) if len(full) else math.nan
        graded = (~np.isnan(matrix)).sum(axis=1)
        ones = np.nansum(matrix, axis=1)
        flips = np.where(graded >= 2, np.minimum(ones, graded - ones) / np.maximum(graded, 1), 0)
        record["mean_flip_rate"] = float(np.mean(flips)) if len(flips) else 0.0
        record["tasks_that_flip"] = int((flips > 0).sum())
        records.append(record)
    return pd.DataFrame(records)


def _bucket(lines: int | None) -> str:
    if lines is None:
        return "unknown size"
    return next(label for limit, label in SIZE_BUCKETS if lines <= limit)


def breakdowns(data: _Data, cutoffs: dict[str, str]) -> pd.DataFrame:
    """Resolve rate per agent by repository, gold-patch size and training cutoff."""
    import pandas as pd

    frame = data.results[data.results["resolved"].notna()].copy()
    frame["repo"] = frame["instance_id"].map(lambda i: data.tasks[i].repo or "unknown")
    frame["size"] = frame["instance_id"].map(lambda i: _bucket(data.tasks[i].lines_changed))
    norm_cutoffs = {normalize(k): v for k, v in cutoffs.items()}
    agent_cut = {
        a: cutoffs.get(a) or norm_cutoffs.get(normalize(a)) or "" for a in frame["agent"].unique()
    }
    created = frame["instance_id"].map(lambda i: data.tasks[i].created_at[:10])
    cut = frame["agent"].map(agent_cut)
    frame["cutoff"] = np.where(
        (cut == "") | (created == ""),
        "no cutoff given",
        np.where(created > cut, "after cutoff", "before cutoff (may be in training data)"),
    )
    records = []
    for dimension in ("repo", "size", "cutoff"):
        grouped = frame.groupby(["agent", dimension])["resolved"].agg(["sum", "count"])
        for (agent, value), row in grouped.iterrows():
            ci = stats.wilson(int(row["sum"]), int(row["count"]))
            records.append(
                {
                    "dimension": dimension,
                    "group": value,
                    "agent": agent,
                    "resolved": int(row["sum"]),
                    "graded": int(row["count"]),
                    "rate": ci.estimate,
                    "ci_low": ci.low,
                    "ci_high": ci.high,
                }
            )
    return pd.DataFrame(records)


def matrix_table(data: _Data) -> pd.DataFrame:
    """Task x agent cell: the commonest status across runs (``tampered`` when the patch
    edited tests and never resolved), plus ``k/n`` resolved runs when runs repeat.

    Vectorised: a report over 2,000 tasks x 20 agents x 3 runs must take seconds.
    """
    frame = data.results
    keys = ["instance_id", "agent"]
    counts = frame.groupby([*keys, "status"]).size().rename("n").reset_index()
    top = counts.sort_values([*keys, "n", "status"], ascending=[True, True, False, True])
    top = top.drop_duplicates(keys).set_index(keys)["status"]
    grouped = frame.groupby(keys)
    runs = grouped.size()
    resolved = frame.assign(r=(frame["status"] == "resolved").astype(int)).groupby(keys)["r"].sum()
    tampered = grouped["tampered"].any()
    cell = top.astype(str).where(~(tampered & (resolved == 0)), "tampered")
    repeated = runs > 1
    cell = cell.where(~repeated, cell + " " + resolved.astype(str) + "/" + runs.astype(str))
    return cell.unstack("agent").fillna("—").sort_index()


@dataclass(frozen=True)
class PublicPair:
    model: str
    verified: PublicScore
    pro: PublicScore

    @property
    def gap(self) -> float:
        return self.pro.score_pct - self.verified.score_pct


def public_reference(rows: list[PublicScore], limit: int = 12) -> list[PublicPair]:
    """Models with a standardized-scaffold number on both Verified and Pro: the
    like-for-like public gap, as context for the internal one."""
    models = {r.model for r in rows if r.evidence == "standardized_scaffold"}
    pairs: list[PublicPair] = []
    for model in models:
        verified, pro = best_score(rows, model, VERIFIED), best_score(rows, model, PRO)
        if (
            verified
            and pro
            and verified.evidence == "standardized_scaffold"
            and pro.evidence == "standardized_scaffold"
        ):
            pairs.append(PublicPair(model, verified, pro))
    pairs.sort(key=lambda p: -p.verified.score_pct)
    return pairs[:limit]


# --- charts (inline SVG, escaped by construction) -----------------------------


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def bar_chart(
    labels: list[str],
    values: list[float],
    lows: list[float],
    highs: list[float],
    markers: dict[str, list[float | None]] | None = None,
    *,
    title: str,
    signed: bool = False,
) -> str:
    """Horizontal bars with 95% error bars; optional public-number markers per row."""
    width, left, row_h = 760, 290, 26
    height = 40 + row_h * max(len(labels), 1) + 30
    lo_v = min([0.0, *[x for x in lows if not math.isnan(x)]]) if signed else 0.0
    hi_v = max([1.0 if not signed else 0.0, *[x for x in highs if not math.isnan(x)]])
    span = (hi_v - lo_v) or 1.0

    def x(v: float) -> float:
        return left + (v - lo_v) / span * (width - left - 20)

    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{_esc(title)}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{left}" y="18" class="ct">{_esc(title)}</text>',
    ]
    zero = x(0.0)
    for tick in np.linspace(lo_v, hi_v, 6):
        tx = x(float(tick))
        parts.append(
            f'<line x1="{tx:.1f}" y1="28" x2="{tx:.1f}" y2="{height - 26}" class="grid"/>'
            f'<text x="{tx:.1f}" y="{height - 10}" class="tick">{tick * 100:+.0f}%</text>'
            if signed
            else f'<line x1="{tx:.1f}" y1="28" x2="{tx:.1f}" y2="{height - 26}" class="grid"/>'
            f'<text x="{tx:.1f}" y="{height - 10}" class="tick">{tick * 100:.0f}%</text>'
        )
    colors = {"verified": "#d97706", "pro": "#7c3aed"}
    for i, label in enumerate(labels):
        y = 34 + i * row_h
        v, lo, hi = values[i], lows[i], highs[i]
        short = label if len(label) <= 44 else label[:43] + "…"
        parts.append(f'<text x="{left - 8}" y="{y + 14}" class="lbl">{_esc(short)}</text>')
        if math.isnan(v):
            continue
        x0, x1 = sorted((zero, x(v)))
        parts.append(
            f'<rect x="{x0:.1f}" y="{y + 3}" width="{max(x1 - x0, 1):.1f}" '
            f'height="{row_h - 10}" class="{"neg" if v < 0 else "bar"}">'
            f"<title>{_esc(label)}: {v * 100:.1f}% (95% CI {lo * 100:.1f}–{hi * 100:.1f})"
            f"</title></rect>"
        )
        if not math.isnan(lo):
            yc = y + row_h / 2 - 2
            parts.append(
                f'<line x1="{x(lo):.1f}" y1="{yc:.1f}" x2="{x(hi):.1f}" y2="{yc:.1f}" '
                f'class="err"/><line x1="{x(lo):.1f}" y1="{yc - 5:.1f}" x2="{x(lo):.1f}" '
                f'y2="{yc + 5:.1f}" class="err"/><line x1="{x(hi):.1f}" y1="{yc - 5:.1f}"'
                f' x2="{x(hi):.1f}" y2="{yc + 5:.1f}" class="err"/>'
            )
        for name, points in (markers or {}).items():
            point = points[i]
            if point is not None:
                parts.append(
                    f'<circle cx="{x(point):.1f}" cy="{y + row_h / 2 - 2:.1f}" r="5" '
                    f'fill="{colors.get(name, "#000")}"><title>public {_esc(name)}: '
                    f"{point * 100:.1f}%</title></circle>"
                )
    parts.append("</svg>")
    return "".join(parts)


# --- rendering ----------------------------------------------------------------


def _fmt_pct(value: Any) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "—"
    return "—" if math.isnan(v) else f"{v * 100:.1f}%"


def _rel(target: Path, start: Path) -> str:
    return os.path.relpath(target.resolve(), start.resolve()).replace(os.sep, "/")


def build_report(
    run_ids: list[str],
    *,
    runs_dir: Path = Path("runs"),
    out: Path,
    leaderboard: Path | None = None,
    model_map: Path | None = None,
    cutoffs: dict[str, str] | None = None,
) -> ReportResult:
    """Write the HTML gap report for ``run_ids`` to ``out``, and its tables beside it."""
    import pandas as pd
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
    from markupsafe import Markup

    cutoffs = cutoffs or {}
    for model, date in cutoffs.items():
        if not (len(date) >= 7 and date[:4].isdigit()):
            raise UsageError(f"--cutoff {model}={date}: the date must look like YYYY-MM-DD")
    data = load(run_ids, runs_dir)
    rows = load_leaderboard(leaderboard)
    mapping = load_model_map(model_map)
    head = headline(data, rows, mapping)
    pairs = pairwise(data.results)
    reps = repeats(data.results)
    breaks = breakdowns(data, cutoffs)
    matrix = matrix_table(data)

    out.parent.mkdir(parents=True, exist_ok=True)
    tables_dir = out.with_name(out.stem + "_tables")
    tables_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in (
        ("headline", head),
        ("pairwise", pairs),
        ("repeats", reps),
        ("breakdowns", breaks),
        ("matrix", matrix.reset_index()),
        ("results", data.results),
    ):
        frame.to_csv(tables_dir / f"{name}.csv", index=False)
        frame.to_json(tables_dir / f"{name}.json", orient="records", indent=1)

    agents = list(head["agent"])
    n_tasks = len(matrix.index)
    markers = {
        label: [
            (
                float(r[f"{label}_pct"]) / 100
                if f"{label}_pct" in head and not pd.isna(r.get(f"{label}_pct"))
                else None
            )
            for _, r in head.iterrows()
        ]
        for label in ("verified", "pro")
    }
    charts = {
        "headline": bar_chart(
            agents,
            list(head["rate"]),
            list(head["ci_low"]),
            list(head["ci_high"]),
            markers,
            title="Internal resolve rate, 95% CI (dots: public Verified / Pro)",
        ),
    }
    for label, bench in (("verified", "Verified"), ("pro", "Pro")):
        if f"gap_{label}" in head:
            have = head[head[f"gap_{label}"].notna()]
            if len(have):
                charts[f"gap_{label}"] = bar_chart(
                    list(have["agent"]),
                    list(have[f"gap_{label}"]),
                    list(have[f"gap_{label}_low"]),
                    list(have[f"gap_{label}_high"]),
                    title=f"Transfer gap: internal minus public SWE-bench {bench}",
                    signed=True,
                )
    breakdown_charts = []
    for dimension, frame in breaks.groupby("dimension", sort=False):
        labels = [f"{a} · {g}" for g, a in zip(frame["group"], frame["agent"], strict=True)]
        breakdown_charts.append(
            bar_chart(
                labels,
                list(frame["rate"]),
                list(frame["ci_low"]),
                list(frame["ci_high"]),
                title=f"By {dimension}",
            )
        )

    # Large sets keep the page small: per-run cells (patches, links) only for small ones.
    embed_patches = len(data.results) <= EMBED_PATCHES_MAX_CELLS
    by_task: dict[str, list[Any]] = {}
    if embed_patches:
        for row in data.results.itertuples(index=False):
            by_task.setdefault(str(row.instance_id), []).append(row)
    details = []
    for index, iid in enumerate(matrix.index):
        task = data.tasks[iid]
        cells = []
        for row in sorted(by_task.get(iid, []), key=lambda r: (r.agent, r.run_id)):
            outputs = data.run_dirs[row.run_id] / model_dir_name(row.agent) / model_dir_name(iid)
            patch_path = outputs / PATCH_FILE
            has_patch = patch_path.is_file()
            cells.append(
                {
                    "agent": row.agent,
                    "run": row.run_id,
                    "status": row.status,
                    "patch": patch_path.read_text(errors="replace")[:EMBED_TEXT_CAP]
                    if has_patch
                    else "",
                    "patch_link": _rel(patch_path, out.parent) if has_patch else "",
                    "results_link": _rel(outputs, out.parent) if outputs.is_dir() else "",
                }
            )
        details.append(
            {
                "id": iid,
                "anchor": f"task-{index}",
                "repo": task.repo,
                "created_at": task.created_at,
                "size": _bucket(task.lines_changed),
                "problem": task.problem[:EMBED_TEXT_CAP] if n_tasks <= 500 else "",
                "cells": cells,
            }
        )
    anchors = {d["id"]: d["anchor"] for d in details}

    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=select_autoescape(["html", "j2"], default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = _fmt_pct
    manifests = [m.model_dump() for m in data.manifests]
    hashes = {m.tasks_sha256 for m in data.manifests if m.tasks_sha256}
    page = env.get_template("report.html.j2").render(
        title="evalkit gap report",
        generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        version=__version__,
        head=head.to_dict("records"),
        pairs=pairs.to_dict("records"),
        reps=reps.to_dict("records"),
        rep_columns=[c for c in reps.columns if c not in ("agent",)] if len(reps) else [],
        breaks=breaks.to_dict("records"),
        matrix_agents=list(matrix.columns),
        matrix_rows=[(iid, anchors[iid], list(row)) for iid, row in matrix.iterrows()],
        details=details,
        charts={k: Markup(v) for k, v in charts.items()},
        breakdown_charts=[Markup(c) for c in breakdown_charts],
        mdd=stats.minimum_detectable_difference(n_tasks),
        n_tasks=n_tasks,
        manifests=manifests,
        mixed_task_sets=len(hashes) > 1,
        reference=public_reference(rows),
        unmatched=[r["agent"] for r in head.to_dict("records") if not r["matched_model"]],
        infra_total=int(data.results["infra"].sum()),
        size_buckets=[label for _, label in SIZE_BUCKETS],
        embed_patches=embed_patches,
        cutoffs=cutoffs,
        tables_dir=_rel(tables_dir, out.parent),
    )
    out.write_text(page, encoding="utf-8")
    return ReportResult(
        out,
        tables_dir,
        agents,
        n_tasks,
        [a for a in agents if a in [r for r in head[head["matched_model"] == ""]["agent"]]],
    )

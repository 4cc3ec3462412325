"""Collect runs into tables, compute honest statistics, render one self-contained HTML file.

Every number about an agent uses one rate: the mean over graded tasks of the share of
the task's graded runs that resolved it. Several runs of the same agent (several run
ids) are repeats of each task; ``error`` results (infrastructure or a broken task) are
never the agent's and leave every denominator.
"""

from __future__ import annotations

import html
import math
import os
import re
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
    Status,
    Verdict,
    current_schema,
    model_dir_name,
)
from evalkit.report import _stats as stats
from evalkit.report._leaderboard import (
    PRO,
    VERIFIED,
    PublicScore,
    best_score,
    candidates,
    load_leaderboard,
    load_model_map,
    near_misses,
    normalize,
    safe_url,
)

if TYPE_CHECKING:
    import pandas as pd

    from evalkit.report import _bakeoff

SIZE_BUCKETS = (
    (10, "small (≤10 lines)"),
    (50, "medium (11-50 lines)"),
    (math.inf, "large (>50 lines)"),
)
SIZE_ORDER = [label for _, label in SIZE_BUCKETS] + ["unknown size"]
EMBED_TEXT_CAP = 6000
"""Characters of a problem statement or patch embedded in the page; the rest is linked."""
EMBED_PATCHES_MAX_CELLS = 400
"""Above this many task x agent cells, patches are linked rather than embedded."""
EMBED_PROBLEMS_MAX_TASKS = 500
SUMMARY_TABLES = ("headline", "pairwise", "repeats", "breakdowns", "bakeoff_agents", "trend")
"""Small tables also written as JSON; every table is written as gzip-compressed CSV."""
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class ReportResult:
    html_path: Path
    tables_dir: Path
    agents: list[str]
    """Ranked by rate, best first."""
    tasks: int
    unmatched_agents: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: str = ""
    """The page's one-paragraph answer, as plain text."""
    bakeoff_lines: list[str] = field(default_factory=list)
    """One plain-text line per bake-off agent: claims against verified results, trust."""


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
    """One row per (run, agent, instance): status, flags, and ``resolved`` (1/0, NaN when
    the result is not the agent's: an infrastructure failure or a broken task)."""
    tasks: dict[str, _Task]
    manifests: list[RunManifest]
    run_dirs: dict[str, Path]


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders ``api-2`` before ``api-11``."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part.lower())
        for part in re.split(r"(\d+)", text)
        if part
    )


# --- loading ------------------------------------------------------------------


def _first_error(exc: Exception) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        return f"{where}: {err['msg']}" if where else str(err["msg"])
    return str(exc).splitlines()[0]


def _read_bytes(path: Path, what: str) -> bytes:
    if path.is_dir():
        raise UsageError(f"{what} is a directory, not a file", path=str(path))
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what}: {exc.strerror}", path=str(path)) from None


def read_results(path: Path) -> list[Verdict]:
    """The verdicts in a ``results.jsonl``, the latest line per (model, instance) winning.

    Every line must be a verdict of a schema this evalkit reads; anything else is the
    user's to fix, reported as ``file:line``. Only a torn last line (no newline: the
    writer was killed mid-line) is skipped, as ``evalkit.records.read_verdicts`` does.
    """
    from pydantic import ValidationError

    raw = _read_bytes(path, RESULTS_FILE)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = raw.count(b"\n", 0, exc.start) + 1
        raise UsageError(f"invalid UTF-8 ({exc.reason})", path=str(path), line=where) from None
    lines = text.split("\n")
    validate = Verdict.__pydantic_validator__.validate_json  # the model's own validator
    latest: dict[tuple[str, str], Verdict] = {}
    for number, line in enumerate(lines, start=1):
        try:
            verdict: Verdict = validate(line)
        except ValidationError as exc:
            if not line.strip() or number == len(lines):
                continue  # a blank line, or a last line with no newline: torn, not corrupt
            raise UsageError(
                f"not a verdict ({_first_error(exc)})", path=str(path), line=number
            ) from None
        if verdict.schema_version > current_schema(Verdict):
            raise UsageError(
                f"schema_version {verdict.schema_version} is newer than this evalkit reads "
                f"({current_schema(Verdict)}); upgrade evalkit",
                path=str(path),
                line=number,
            )
        latest[(verdict.model_name_or_path, verdict.instance_id)] = verdict
    return list(latest.values())


def _load_run(run_dir: Path) -> tuple[RunManifest, list[Verdict]]:
    from pydantic import ValidationError

    manifest_path = run_dir / RUN_MANIFEST_FILE
    results_path = run_dir / RESULTS_FILE
    if not run_dir.is_dir():
        raise UsageError("no such run", path=str(run_dir))
    if not results_path.exists():
        raise UsageError(f"run has no {RESULTS_FILE}", path=str(run_dir))
    if manifest_path.exists():
        try:
            manifest = RunManifest.model_validate_json(_read_bytes(manifest_path, "run.json"))
        except ValidationError as exc:
            raise UsageError(
                f"not a valid run manifest ({_first_error(exc)})", path=str(manifest_path)
            ) from None
        if manifest.schema_version > current_schema(RunManifest):
            raise UsageError(
                f"schema_version {manifest.schema_version} is newer than this evalkit reads",
                path=str(manifest_path),
            )
    else:
        manifest = RunManifest(
            run_id=run_dir.name,
            evalkit_version="?",
            tasks_dir="",
            tasks_sha256="",
            predictions="",
            timeout_s=0,
            workers=0,
            created_at="",
        )
    return manifest, read_results(results_path)


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


def frame_from_verdicts(rows: Iterable[tuple[str, Verdict]]) -> pd.DataFrame:
    """One row per (run id, verdict), with ``resolved`` 1/0 for the agent's own results
    and NaN for ``error`` results and infrastructure failures (never the agent's)."""
    from operator import attrgetter

    import pandas as pd

    pairs = list(rows)
    verdicts = [v for _, v in pairs]

    def column(name: str) -> list[Any]:
        return list(map(attrgetter(name), verdicts))  # C-level loop: 120,000 rows in ms

    frame = pd.DataFrame(
        {
            "run_id": [r for r, _ in pairs],
            "agent": column("model_name_or_path"),
            "instance_id": column("instance_id"),
            "status": column("status.value"),
            "infra": np.array(column("infra_failure"), dtype=bool),
            "tampered": np.array(list(map(bool, column("tampered_files"))), dtype=bool),
            "timed_out": np.array(column("timed_out"), dtype=bool),
        }
    )
    status = frame["status"].to_numpy()
    task_error = (status == Status.ERROR.value) & ~frame["infra"].to_numpy()
    frame["task_error"] = task_error
    resolved = (status == Status.RESOLVED.value).astype(float)
    resolved[frame["infra"].to_numpy() | (status == Status.ERROR.value)] = np.nan
    frame["resolved"] = resolved
    return frame


def load(run_ids: list[str], runs_dir: Path) -> _Data:
    if not run_ids:
        raise UsageError("give at least one run id")
    if len(set(run_ids)) != len(run_ids):
        raise UsageError(f"a run id is given twice: {run_ids}")
    manifests = []
    run_dirs = {}
    pairs: list[tuple[str, Verdict]] = []
    for run_id in run_ids:
        manifest, verdicts = _load_run(runs_dir / run_id)
        manifests.append(manifest)
        run_dirs[run_id] = runs_dir / run_id
        pairs.extend((run_id, v) for v in verdicts)
    if not pairs:
        raise UsageError(f"no results in run(s) {run_ids}")
    results = frame_from_verdicts(pairs)
    tasks = _load_tasks(manifests)
    for iid in results["instance_id"].unique():
        tasks.setdefault(iid, _Task(iid, repo=iid.rsplit("-", 1)[0].replace("__", "/")))
    return _Data(results, tasks, manifests, run_dirs)


# --- tables -------------------------------------------------------------------


def per_task(results: pd.DataFrame) -> pd.DataFrame:
    """(agent, instance_id) -> resolved runs and graded runs, over the agent's own results."""
    graded = results[results["resolved"].notna()]
    table = graded.groupby(["agent", "instance_id"], sort=False)["resolved"].agg(["sum", "count"])
    return table.rename(columns={"sum": "resolved", "count": "graded"})


def rank_agents(results: pd.DataFrame, counts: pd.DataFrame) -> list[str]:
    """Agents by rate, best first (ties by name)."""
    means = (counts["resolved"] / counts["graded"]).groupby(level="agent").mean()
    agents = sorted(results["agent"].unique(), key=natural_key)
    return sorted(agents, key=lambda a: -float(means.get(a, -1.0)))


@dataclass(frozen=True)
class GapVerdict:
    """Internal rate minus public numbers on one benchmark."""

    row: PublicScore
    gap: stats.Interval
    spread: list[PublicScore]
    """Every public row for this model on this benchmark and split (harness spread)."""
    significant: bool
    """The gap's interval excludes 0, with the same sign, against every harness's number."""
    direction: str

    @property
    def verdict_text(self) -> str:
        return {
            "below": "reliably below",
            "above": "reliably above",
            "depends on the harness": "depends on the harness:",
        }.get(self.direction, "not distinguishable from")

    @property
    def spread_low(self) -> float:
        return min(r.score_pct for r in self.spread)

    @property
    def spread_high(self) -> float:
        return max(r.score_pct for r in self.spread)


def gap_verdict(
    ci: stats.Interval, rows: list[PublicScore], model: str, bench: str
) -> GapVerdict | None:
    found = candidates(rows, model, bench)
    if not found or math.isnan(ci.estimate):
        return None
    best = found[0]
    spread = [r for r in found if r.split == best.split]
    gaps = [stats.gap_interval(ci, r.score_pct, r.public_n or 500) for r in spread]
    below = all(g.high < 0 for g in gaps)
    above = all(g.low > 0 for g in gaps)
    main = stats.gap_interval(ci, best.score_pct, best.public_n or 500)
    if below or above:
        direction = "below" if below else "above"
    elif main.high < 0 or main.low > 0:
        direction = "depends on the harness"
    else:
        direction = "not distinguishable"
    return GapVerdict(best, main, spread, below or above, direction)


def headline(
    data: _Data,
    rows: list[PublicScore],
    model_map: dict[str, str],
    ranked: list[str],
    counts: pd.DataFrame,
) -> tuple[pd.DataFrame, dict[str, dict[str, GapVerdict]]]:
    import pandas as pd

    records = []
    gaps: dict[str, dict[str, GapVerdict]] = {}
    by_agent = data.results.groupby("agent", sort=False)
    have = set(counts.index.unique(level="agent"))
    for agent in ranked:
        sub = by_agent.get_group(agent)
        mine = counts.loc[agent] if agent in have else None
        shares = (
            (mine["resolved"] / mine["graded"]).to_numpy() if mine is not None else np.array([])
        )
        graded_runs = int(mine["graded"].sum()) if mine is not None else 0
        ci = stats.clustered_rate(shares, graded_runs)
        target = model_map.get(agent, agent)
        record: dict[str, Any] = {
            "agent": agent,
            "runs": int(sub["run_id"].nunique()),
            "tasks": int(sub["instance_id"].nunique()),
            "graded_tasks": int(shares.size),
            "graded_runs": graded_runs,
            "resolved_runs": int(mine["resolved"].sum()) if mine is not None else 0,
            "infra_failures": int(sub["infra"].sum()),
            "task_errors": int(sub["task_error"].sum()),
            "rate": ci.estimate,
            "ci_low": ci.low,
            "ci_high": ci.high,
            "matched_model": "",
        }
        gaps[agent] = {}
        for label, bench in (("verified", VERIFIED), ("pro", PRO)):
            verdict = gap_verdict(ci, rows, target, bench)
            if verdict is None:
                continue
            gaps[agent][label] = verdict
            score = verdict.row
            record["matched_model"] = record["matched_model"] or score.model
            record.update(
                {
                    f"{label}_pct": score.score_pct,
                    f"{label}_n": score.public_n,
                    f"{label}_evidence": score.evidence,
                    f"{label}_reliability": score.reliability,
                    f"{label}_system": score.system,
                    f"{label}_date": score.date,
                    f"{label}_source": score.source_url,
                    f"{label}_split": score.split,
                    f"{label}_harnesses": len(verdict.spread),
                    f"{label}_spread_low": verdict.spread_low,
                    f"{label}_spread_high": verdict.spread_high,
                    f"gap_{label}": verdict.gap.estimate,
                    f"gap_{label}_low": verdict.gap.low,
                    f"gap_{label}_high": verdict.gap.high,
                    f"gap_{label}_significant": verdict.significant,
                    f"gap_{label}_direction": verdict.direction,
                }
            )
        records.append(record)
    return pd.DataFrame(records), gaps


def pairwise(
    results: pd.DataFrame,
    ranked: list[str] | None = None,
    counts: pd.DataFrame | None = None,
    *,
    intervals: bool = True,
) -> pd.DataFrame:
    """Every pair (higher-ranked agent first): a paired test of the mean per-task
    difference on the tasks both were graded on, Holm-adjusted across all pairs."""
    import pandas as pd

    counts = per_task(results) if counts is None else counts
    ranked = rank_agents(results, counts) if ranked is None else ranked
    shares = (counts["resolved"] / counts["graded"]).unstack("agent")
    scale = stats.lattice(counts["graded"].to_numpy())
    matrix = shares.reindex(columns=ranked).to_numpy(dtype=float)
    single = bool((counts["graded"] == 1).all())
    records: list[dict[str, Any]] = []
    diffs: list[np.ndarray] = []
    for i, a in enumerate(ranked):
        for j in range(i + 1, len(ranked)):
            d = matrix[:, i] - matrix[:, j]
            shared = ~np.isnan(d)
            if not shared.any():
                continue
            dd = d[shared]
            records.append(
                {
                    "agent_a": a,
                    "agent_b": ranked[j],
                    "tasks": int(shared.sum()),
                    "a_better_tasks": int((dd > 0).sum()),
                    "b_better_tasks": int((dd < 0).sum()),
                    "difference": float(dd.mean()),
                    "p": stats.signflip_pvalue(dd, scale, seed=len(records)),
                }
            )
            diffs.append(d)
    adjusted = stats.holm([r["p"] for r in records])
    if intervals and records:
        cis = stats.signflip_intervals(np.column_stack(diffs), seed=1)
    else:
        cis = [stats.NAN_INTERVAL] * len(records)
    family = len(records)
    mdd_cache: dict[tuple[int, float], float | None] = {}
    for record, p_adj, ci in zip(records, adjusted, cis, strict=True):
        record["p_holm"] = p_adj
        record["diff_low"], record["diff_high"] = ci.low, ci.high
        record["test"] = "exact McNemar" if single else "paired sign-flip permutation (exact)"
        record["significant"] = p_adj < stats.ALPHA
        if record["significant"]:
            winner, loser = (
                (record["agent_a"], record["agent_b"])
                if record["difference"] > 0
                else (record["agent_b"], record["agent_a"])
            )
            record["conclusion"] = f"{winner} beats {loser} (Holm-adjusted p {fmt_p(p_adj)})"
        else:
            record["conclusion"] = (
                f"no reliable difference (Holm-adjusted p {fmt_p(p_adj)}); do not rank these two"
            )
        if intervals:
            for key, alpha in (("mdd", stats.ALPHA), ("mdd_family", stats.ALPHA / family)):
                cache_key = (record["tasks"], alpha)
                if cache_key not in mdd_cache:
                    mdd_cache[cache_key] = stats.minimum_detectable_difference(
                        record["tasks"], alpha=alpha
                    )
                value = mdd_cache[cache_key]
                record[key] = math.nan if value is None else value
    frame = pd.DataFrame(records)
    if len(frame):
        frame = frame.rename(columns={"p": "p_raw"})
    return frame


def repeats(results: pd.DataFrame, ranked: list[str], counts: pd.DataFrame) -> pd.DataFrame:
    """pass@k and pass^k per agent, each task with its own number of graded runs (tasks
    with fewer than k graded runs leave pass@k); pass@1 is the headline rate."""
    import pandas as pd

    records = []
    runs_per_agent = results.groupby("agent")["run_id"].nunique()
    have = set(counts.index.unique(level="agent"))
    for agent in ranked:
        k = int(runs_per_agent[agent])
        if k < 2 or agent not in have:
            continue
        mine = counts.loc[agent]
        n_runs = mine["graded"].to_numpy(dtype=int)
        c_runs = mine["resolved"].to_numpy(dtype=int)
        record: dict[str, Any] = {"agent": agent, "runs": k, "graded_tasks": int(n_runs.size)}
        # Both estimators depend only on a task's (runs, successes): one value per pair.
        combos, weight = np.unique(np.stack([n_runs, c_runs]), axis=1, return_counts=True)
        for j in range(1, k + 1):
            ok = combos[0] >= j
            if not ok.any():
                record[f"pass@{j}"] = record[f"pass^{j}"] = math.nan
                continue
            at = [stats.pass_at_k(int(n), int(c), j) for n, c in combos[:, ok].T]
            hat = [stats.pass_hat_k(int(n), int(c), j) for n, c in combos[:, ok].T]
            record[f"pass@{j}"] = float(np.average(at, weights=weight[ok]))
            record[f"pass^{j}"] = float(np.average(hat, weights=weight[ok]))
        flips = np.where(
            n_runs >= 2, np.minimum(c_runs, n_runs - c_runs) / np.maximum(n_runs, 1), 0
        )
        record["mean_flip_rate"] = float(np.mean(flips)) if len(flips) else 0.0
        record["tasks_that_flip"] = int((flips > 0).sum())
        records.append(record)
    return pd.DataFrame(records)


def _bucket(lines: int | None) -> str:
    if lines is None:
        return "unknown size"
    return next(label for limit, label in SIZE_BUCKETS if lines <= limit)


CUTOFF_ORDER = ["before cutoff (may be in training data)", "after cutoff", "no cutoff given"]


def breakdowns(
    data: _Data, cutoffs: dict[str, str], ranked: list[str], counts: pd.DataFrame
) -> pd.DataFrame:
    """Rate per agent by repository, gold-patch size and training cutoff; intervals are
    clustered by task like the headline's (repeats of a task are not more tasks)."""
    import pandas as pd

    frame = counts.reset_index()
    frame["share"] = frame["resolved"] / frame["graded"]
    frame["repo"] = frame["instance_id"].map(lambda i: data.tasks[i].repo or "unknown")
    frame["size"] = frame["instance_id"].map(lambda i: _bucket(data.tasks[i].lines_changed))
    norm_cutoffs = {normalize(k): v for k, v in cutoffs.items()}
    agent_cut = {a: cutoffs.get(a) or norm_cutoffs.get(normalize(a)) or "" for a in ranked}
    created = frame["instance_id"].map(lambda i: data.tasks[i].created_at[:10])
    cut = frame["agent"].map(agent_cut).fillna("")
    frame["cutoff"] = np.where(
        (cut == "") | (created == ""),
        CUTOFF_ORDER[2],
        np.where(created > cut, CUTOFF_ORDER[1], CUTOFF_ORDER[0]),
    )
    rank_of = {a: i for i, a in enumerate(ranked)}
    records = []
    for dimension in ("repo", "size", "cutoff"):
        order: dict[str, int] = (
            {g: i for i, g in enumerate(SIZE_ORDER)}
            if dimension == "size"
            else {g: i for i, g in enumerate(CUTOFF_ORDER)}
            if dimension == "cutoff"
            else {}
        )
        groups = []
        for (agent, value), sub in frame.groupby(["agent", dimension], sort=False):
            ci = stats.clustered_rate(sub["share"].to_numpy(), int(sub["graded"].sum()))
            groups.append(
                {
                    "dimension": dimension,
                    "group": value,
                    "agent": agent,
                    "graded_tasks": len(sub),
                    "graded_runs": int(sub["graded"].sum()),
                    "resolved_runs": int(sub["resolved"].sum()),
                    "rate": ci.estimate,
                    "ci_low": ci.low,
                    "ci_high": ci.high,
                }
            )
        groups.sort(
            key=lambda g: (
                order.get(g["group"], len(order)),
                natural_key(str(g["group"])),
                rank_of.get(g["agent"], 0),
            )
        )
        records.extend(groups)
    return pd.DataFrame(records)


def matrix_table(data: _Data, ranked: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Task x agent cells: the commonest status across runs (``tampered`` when the patch
    edited tests and never resolved), plus ``k/n`` resolved runs when runs repeat; and the
    share of runs resolved (for sorting). Tasks in natural order, agents ranked."""
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
    order = sorted(frame["instance_id"].unique(), key=natural_key)
    cells = cell.unstack("agent").reindex(index=order, columns=ranked).fillna("—")
    share = (resolved / runs).unstack("agent").reindex(index=order, columns=ranked)
    return cells, share


@dataclass(frozen=True)
class PublicPair:
    model: str
    verified: PublicScore
    pro: PublicScore

    @property
    def gap(self) -> float:
        return self.pro.score_pct - self.verified.score_pct


def public_reference(rows: list[PublicScore], limit: int = 12) -> list[PublicPair]:
    """Models with a standardized-scaffold number on both Verified and Pro, as context
    for the internal gap. The two scaffolds differ (each board runs its own)."""
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


# --- the answer ---------------------------------------------------------------


def _pct(value: float) -> str:
    return "—" if value is None or math.isnan(value) else f"{value * 100:.1f}%"


def pd_isna(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt_p(value: float) -> str:
    """A p-value for reading: two significant digits, floored where float error starts."""
    return "< 1e-10" if value < 1e-10 else f"= {value:.2g}"


def _pts(value: float) -> str:
    return f"{value * 100:+.1f} pts"


def verdicts(
    head: pd.DataFrame, pairs: pd.DataFrame, gaps: dict[str, dict[str, GapVerdict]]
) -> tuple[str, list[dict[str, Any]]]:
    """The plain-language answer: one summary paragraph and one line per agent."""
    agents = list(head["agent"])
    leader = agents[0]
    by_pair: dict[tuple[str, str], dict[str, Any]] = {}
    for p in pairs.to_dict("records") if len(pairs) else []:
        by_pair[(p["agent_a"], p["agent_b"])] = p
        by_pair[(p["agent_b"], p["agent_a"])] = p
    rows = []
    beaten: list[str] = []
    tied: list[str] = []
    unknown: list[str] = []
    for record in head.to_dict("records"):
        agent = record["agent"]
        line: dict[str, Any] = {"agent": agent, "record": record, "gaps": gaps.get(agent, {})}
        if agent == leader:
            line["versus"] = "highest rate" if len(agents) > 1 else "only agent"
            line["kind"] = "best"
        else:
            pair = by_pair.get((leader, agent))
            if pair is None:
                line["versus"] = (
                    "no graded task: every result was an error"
                    if not record["graded_tasks"]
                    else f"no shared graded tasks with {leader}"
                )
                line["kind"] = "unknown"
                unknown.append(agent)
            elif pair["significant"] and pair["difference"] > 0:
                line["versus"] = (
                    f"reliably below #1: {_pts(-pair['difference'])} "
                    f"(Holm-adjusted p {fmt_p(pair['p_holm'])})"
                )
                line["kind"] = "below"
                beaten.append(agent)
            else:
                line["versus"] = (
                    f"not distinguishable from #1: {_pts(-pair['difference'])} "
                    f"on {pair['tasks']} shared tasks (Holm-adjusted p {fmt_p(pair['p_holm'])})"
                )
                line["kind"] = "tie"
                tied.append(agent)
        rows.append(line)
    top = head.iloc[0]
    summary = (
        f"{leader} has the highest rate: {_pct(top['rate'])} "
        f"(95% CI {_pct(top['ci_low'])} – {_pct(top['ci_high'])}) on {top['graded_tasks']} tasks."
    )
    if len(agents) == 1:
        summary = (
            f"One agent: {leader} resolves {_pct(top['rate'])} of these tasks "
            f"(95% CI {_pct(top['ci_low'])} – {_pct(top['ci_high'])})."
        )
    elif not tied and beaten and not unknown:
        summary += f" It reliably beats every other agent ({len(beaten)})."
    elif not tied and beaten:
        summary += f" It reliably beats {len(beaten)} of the others."
    elif not beaten and tied:
        summary += (
            " It cannot be reliably told apart from any other agent: with this many tasks, "
            "do not rank them."
        )
    elif tied:
        summary += (
            f" It reliably beats {len(beaten)} of the others, but cannot be told apart from "
            f"{', '.join(tied[:5])}{' …' if len(tied) > 5 else ''}."
        )
    if unknown:
        summary += f" Not compared (no shared graded tasks): {', '.join(unknown)}."
    if not top["graded_tasks"]:
        summary = (
            f"Nothing to report yet: every result was an error ({int(head['infra_failures'].sum())}"
            f" infrastructure failures, {int(head['task_errors'].sum())} task errors), and "
            "errors are never the agent's."
        )
    return summary, rows


# --- charts (inline SVG, escaped by construction) -----------------------------


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _ticks(lo: float, hi: float) -> list[float]:
    """Round tick values (multiples of 1, 2, 5, 10, 20 or 25 points) covering [lo, hi]."""
    span = max(hi - lo, 1e-9)
    for step in (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5):
        if span / step <= 8:
            break
    first = math.floor(lo / step + 1e-9) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-6:
        ticks.append(round(value, 6))
        value += step
    if ticks[-1] < hi - 1e-9:
        ticks.append(round(ticks[-1] + step, 6))
    return ticks


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
    """Horizontal bars with 95% error bars; optional public-number markers under each bar.

    The label column is as wide as the longest label, so nothing is cut off.
    """
    row_h = 26 if len(labels) <= 40 else 20
    left = int(min(max([len(x) for x in labels] + [10]) * 6.9 + 18, 620))
    plot = 460
    width = left + plot + 24
    height = 40 + row_h * max(len(labels), 1) + 30
    finite_lo = [x for x in lows if not math.isnan(x)]
    finite_hi = [x for x in highs if not math.isnan(x)]
    if signed:
        ticks = _ticks(min([0.0, *finite_lo]), max([0.0, *finite_hi]))
    else:
        ticks = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    lo_v, hi_v = ticks[0], ticks[-1]
    span = (hi_v - lo_v) or 1.0

    def x(v: float) -> float:
        return left + (min(max(v, lo_v), hi_v) - lo_v) / span * plot

    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" role="img" '
        f'aria-label="{_esc(title)}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="8" y="18" class="ct">{_esc(title)}</text>',
    ]
    zero = x(0.0)
    for tick in ticks:
        tx = x(tick)
        text = f"{tick * 100:+.0f}%" if signed and abs(tick) > 1e-9 else f"{abs(tick) * 100:.0f}%"
        parts.append(
            f'<line x1="{tx:.1f}" y1="28" x2="{tx:.1f}" y2="{height - 26}" '
            f'class="{"axis" if signed and tick == 0 else "grid"}"/>'
            f'<text x="{tx:.1f}" y="{height - 10}" class="tick">{text}</text>'
        )
    colors = {"verified": "#d97706", "pro": "#7c3aed"}
    for i, label in enumerate(labels):
        y = 34 + i * row_h
        v, lo, hi = values[i], lows[i], highs[i]
        parts.append(
            f'<text x="{left - 8}" y="{y + row_h / 2 + 2:.1f}" class="lbl">{_esc(label)}</text>'
        )
        if math.isnan(v):
            continue
        x0, x1 = sorted((zero, x(v)))
        bar_h = row_h - 12
        parts.append(
            f'<rect x="{x0:.1f}" y="{y + 3}" width="{max(x1 - x0, 1):.1f}" '
            f'height="{bar_h}" class="{"neg" if v < 0 else "bar"}">'
            f"<title>{_esc(label)}: {v * 100:.1f}% (95% CI {lo * 100:.1f}–{hi * 100:.1f})"
            f"</title></rect>"
        )
        if not math.isnan(lo):
            yc = y + 3 + bar_h / 2
            parts.append(
                f'<line x1="{x(lo):.1f}" y1="{yc:.1f}" x2="{x(hi):.1f}" y2="{yc:.1f}" '
                f'class="err"/><line x1="{x(lo):.1f}" y1="{yc - 4:.1f}" x2="{x(lo):.1f}" '
                f'y2="{yc + 4:.1f}" class="err"/><line x1="{x(hi):.1f}" y1="{yc - 4:.1f}"'
                f' x2="{x(hi):.1f}" y2="{yc + 4:.1f}" class="err"/>'
            )
        for name, points in (markers or {}).items():
            point = points[i]
            if point is not None:
                # Under the bar, so it never hides the bar's end.
                px, py = x(point), y + row_h - 5
                parts.append(
                    f'<path d="M{px:.1f} {py - 5:.1f} L{px + 4:.1f} {py:.1f} L{px - 4:.1f} '
                    f'{py:.1f} Z" fill="{colors.get(name, "#000")}"><title>public {_esc(name)}: '
                    f"{point * 100:.1f}%</title></path>"
                )
    parts.append("</svg>")
    return "".join(parts)


# --- tables on disk -------------------------------------------------------------


def neutralize_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """Text cells a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``, tab,
    CR first) get a leading apostrophe; numbers are left alone."""
    from pandas.api.types import is_object_dtype, is_string_dtype

    out = frame.copy()
    for column in out.columns:
        dtype = out[column].dtype
        if is_object_dtype(dtype):  # mixed values: only the strings
            out[column] = out[column].map(
                lambda v: "'" + v if isinstance(v, str) and v.startswith(_FORMULA_START) else v
            )
        elif is_string_dtype(dtype):  # vectorised: the results table has 100,000s of cells
            text = out[column]
            risky = text.str.startswith(_FORMULA_START).fillna(False).astype(bool)
            if risky.any():
                out[column] = text.where(~risky, "'" + text)
    return out


def write_tables(tables_dir: Path, tables: dict[str, pd.DataFrame]) -> None:
    tables_dir.mkdir(parents=True, exist_ok=True)
    for stale in tables_dir.glob("*"):
        if stale.suffix in (".csv", ".json", ".gz") and stale.is_file():
            stale.unlink()
    for name, frame in tables.items():
        neutralize_formulas(frame).to_csv(
            tables_dir / f"{name}.csv.gz",
            index=False,
            compression={"method": "gzip", "compresslevel": 1, "mtime": 0},
        )
        if name in SUMMARY_TABLES:
            frame.to_json(tables_dir / f"{name}.json", orient="records", indent=1)


# --- rendering ----------------------------------------------------------------


def _fmt_pct(value: Any) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "—"
    return "—" if math.isnan(v) else f"{v * 100:.1f}%"


def _fmt_pts(value: Any) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "—"
    return "—" if math.isnan(v) else f"{v * 100:+.1f}"


def _rel(target: Path, start: Path) -> str:
    """A relative link that stays relative: percent-encoded, and starting with ``./`` or
    ``../`` so a directory named ``javascript:x`` cannot become a URL scheme."""
    from urllib.parse import quote

    rel = os.path.relpath(target.resolve(), start.resolve()).replace(os.sep, "/")
    rel = quote(rel, safe="/")
    return rel if rel.startswith("../") else "./" + rel


_ENV: Any = None


def _environment() -> Any:
    global _ENV
    if _ENV is None:
        from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

        env = Environment(
            loader=FileSystemLoader(Path(__file__).parent / "templates"),
            autoescape=select_autoescape(["html", "j2"], default=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters["pct"] = _fmt_pct
        env.filters["pts"] = _fmt_pts
        env.filters["safe_url"] = safe_url
        env.filters["p"] = fmt_p
        _ENV = env
    return _ENV


def _mdd_sentence(n: int, family: int) -> str:
    single = stats.minimum_detectable_difference(n)
    if single is None:
        return (
            f"With {n} shared tasks no difference between two agents can be detected: even "
            "an agent that resolves every task and one that resolves none would not reach "
            "p < 0.05. Add tasks before ranking agents."
        )
    text = (
        f"With {n} shared tasks, two agents must differ by about {single * 100:.0f} points "
        "to be detected reliably (80% power, α = 0.05, agents near 50%)"
    )
    if family > 1:
        strict = stats.minimum_detectable_difference(n, alpha=stats.ALPHA / family)
        text += f"; after the correction for {family} comparisons, " + (
            f"about {strict * 100:.0f} points" if strict is not None else "no difference at all"
        )
    return text + ". Smaller true differences are not noise; they are undetectable here."


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
    """Write the HTML gap report for ``run_ids`` to ``out``, and its tables beside it.

    ``bakeoffs`` adds every graded repeat of those bake-offs; repeats of a bake-off among
    the runs (``X.rK``) add its claims, trust, cost and trend sections. ``store`` is the
    bake-off history (default ``runs_dir/evalkit.db`` when it exists)."""
    from markupsafe import Markup

    from evalkit.bakeoff.records import DEFAULT_STORE_FILE
    from evalkit.report import _bakeoff

    cutoffs = cutoffs or {}
    for model, date in cutoffs.items():
        if not re.fullmatch(r"\d{4}-\d{2}(-\d{2})?", date):
            raise UsageError(f"--cutoff {model}={date}: the date must look like YYYY-MM-DD")
    run_ids = list(run_ids)
    for bakeoff_id in bakeoffs or []:
        run_ids += [
            r for r in _bakeoff.bakeoff_repeat_runs(bakeoff_id, runs_dir) if r not in run_ids
        ]
    if store is not None and not store.is_file():
        raise UsageError("--store: no such bake-off history file", path=str(store))
    store = store if store is not None else runs_dir / DEFAULT_STORE_FILE
    data = load(run_ids, runs_dir)
    rows = load_leaderboard(leaderboard)
    mapping = load_model_map(model_map)
    counts = per_task(data.results)
    ranked = rank_agents(data.results, counts)
    head, gaps = headline(data, rows, mapping, ranked, counts)
    pairs = pairwise(data.results, ranked, counts)
    reps = repeats(data.results, ranked, counts)
    breaks = breakdowns(data, cutoffs, ranked, counts)
    matrix, shares = matrix_table(data, ranked)
    summary, lines = verdicts(head, pairs, gaps)
    found = _bakeoff.find_bakeoffs(run_ids, runs_dir)
    bake: list[_bakeoff.AgentBakeoff] = []
    for b in found:
        names = {a.agent for a in b.attempts}
        order = [a for a in ranked if a in names] + sorted(names - set(ranked), key=natural_key)
        bake += [_bakeoff.agent_bakeoff(agent, b, out.parent, _rel) for agent in order]
    trend: list[dict[str, Any]] = []
    if bake and store.is_file():
        for agent in dict.fromkeys(s.agent for s in bake):
            rows_ = _bakeoff.trend_rows(store, agent)
            trend += rows_
            for s in bake:
                if s.agent == agent:
                    s.trend = rows_
    marks = _bakeoff.cell_marks(found)

    warnings: list[str] = []
    unmatched = [r["agent"] for r in head.to_dict("records") if not r["matched_model"]]
    for agent in unmatched:
        close = near_misses(rows, mapping.get(agent, agent))
        if close:
            warnings.append(
                f"{agent}: no public row has exactly this model name; close names: "
                f"{', '.join(close)}. These are other models or versions unless you map "
                "the agent with --model-map."
            )
    hashes = {m.tasks_sha256 for m in data.manifests if m.tasks_sha256}
    if len(hashes) > 1:
        warnings.append(
            "These runs used different task sets (different task-set hashes): agents are "
            "compared only on the tasks they share."
        )

    out.parent.mkdir(parents=True, exist_ok=True)
    tables_dir = out.with_name(out.stem + "_tables")
    write_tables(
        tables_dir,
        {
            "headline": head,
            "pairwise": pairs,
            "repeats": reps,
            "breakdowns": breaks,
            "matrix": matrix.rename_axis("instance_id").reset_index(),
            "results": data.results,
            **(
                {
                    "bakeoff_agents": _bakeoff.summary_table(bake),
                    "bakeoff_attempts": _bakeoff.attempts_table(found),
                }
                if bake
                else {}
            ),
            **({"trend": pd_frame(trend)} if trend else {}),
        },
    )

    n_tasks = len(matrix.index)
    markers = {
        label: [
            (float(r[f"{label}_pct"]) / 100 if not pd_isna(r.get(f"{label}_pct")) else None)
            for r in head.to_dict("records")
        ]
        for label in ("verified", "pro")
    }
    any_public = any(v is not None for points in markers.values() for v in points)
    charts = {
        "headline": bar_chart(
            ranked,
            list(head["rate"]),
            list(head["ci_low"]),
            list(head["ci_high"]),
            markers if any_public else None,
            title="Resolve rate on your tasks, 95% CI"
            + (" · ▲ public score: orange Verified, purple Pro" if any_public else ""),
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
                    title=f"Gap: your rate minus public SWE-bench {bench} "
                    "(95% CI, both sides' error)",
                    signed=True,
                )
    breakdown_charts: list[tuple[Markup, int]] = []
    for dimension, frame in breaks.groupby("dimension", sort=False) if len(breaks) else []:
        labels = [f"{g} · {a}" for g, a in zip(frame["group"], frame["agent"], strict=True)]
        chart = bar_chart(
            labels,
            list(frame["rate"]),
            list(frame["ci_low"]),
            list(frame["ci_high"]),
            title=f"By {dimension}, 95% CI",
        )
        breakdown_charts.append((Markup(chart), len(labels)))

    # Large sets keep the page small: per-run cells (patches, links) only for small ones.
    embed_patches = len(data.results) <= EMBED_PATCHES_MAX_CELLS
    by_task: dict[str, list[Any]] = {}
    if embed_patches:
        for row in data.results.itertuples(index=False):
            by_task.setdefault(str(row.instance_id), []).append(row)
    rank_of = {a: i for i, a in enumerate(ranked)}
    details = []
    for index, iid in enumerate(matrix.index):
        task = data.tasks[iid]
        cells = []
        for row in sorted(
            by_task.get(iid, []), key=lambda r: (rank_of[r.agent], natural_key(r.run_id))
        ):
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
                "problem": task.problem[:EMBED_TEXT_CAP]
                if n_tasks <= EMBED_PROBLEMS_MAX_TASKS
                else "",
                "cells": cells,
            }
        )
    anchors = {d["id"]: d["anchor"] for d in details}
    # The matrix body is built here, escaped by construction like the charts: 40,000
    # cells through the template engine cost more than the rest of the page.
    share_rows = shares.to_numpy(dtype=float)
    body_rows = []
    columns = list(matrix.columns)
    for i, (iid, row) in enumerate(zip(matrix.index, matrix.to_numpy(), strict=True)):
        tds = "".join(
            f'<td class="s-{_esc(cell.split(" ")[0])}" '
            f'data-v="{"" if math.isnan(v) else f"{v:.4f}"}">{_esc(cell)}'
            f"{_marks_html(marks.get((iid, agent)))}</td>"
            for cell, v, agent in zip(row, share_rows[i], columns, strict=True)
        )
        body_rows.append(f'<tr><td><a href="#{anchors[iid]}">{_esc(iid)}</a></td>{tds}</tr>')
    matrix_body = Markup("\n".join(body_rows))
    typical_n = int(pairs["tasks"].mode().iloc[0]) if len(pairs) else n_tasks
    page = (
        _environment()
        .get_template("report.html.j2")
        .render(
            title="evalkit gap report",
            generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            version=__version__,
            summary=summary,
            lines=lines,
            head=head.to_dict("records"),
            pairs=pairs.to_dict("records"),
            family=len(pairs),
            single_run=bool((counts["graded"] == 1).all()),
            any_public=any_public,
            reps=reps.to_dict("records"),
            rep_columns=[c for c in reps.columns if c not in ("agent",)] if len(reps) else [],
            breaks=breaks.to_dict("records"),
            matrix_agents=list(matrix.columns),
            matrix_body=matrix_body,
            details=details,
            charts={k: Markup(v) for k, v in charts.items()},
            breakdown_charts=breakdown_charts,
            mdd_sentence=_mdd_sentence(typical_n, len(pairs)),
            n_tasks=n_tasks,
            manifests=[m.model_dump() for m in data.manifests],
            warnings=warnings,
            reference=public_reference(rows),
            unmatched=unmatched,
            infra_total=int(data.results["infra"].sum()),
            task_error_total=int(data.results["task_error"].sum()),
            size_buckets=[label for _, label in SIZE_BUCKETS],
            embed_patches=embed_patches,
            cutoffs=cutoffs,
            tables_dir=_rel(tables_dir, out.parent),
            bake=bake,
            grid_claims=_bakeoff.GRID_CLAIMS,
            grid_verdicts=_bakeoff.GRID_VERDICTS,
            bakeoff_ids=[b.run_id for b in found],
            trend_chart=Markup(
                bar_chart(
                    [f"{r['agent']} · {r['night']}" for r in trend],
                    [r["rate"] for r in trend],
                    [r["ci_low"] for r in trend],
                    [r["ci_high"] for r in trend],
                    title="Resolved share of scored attempts per night (95% Wilson CI)",
                )
            )
            if trend
            else "",
            store_path=str(store),
            store_exists=store.is_file(),
        )
    )
    out.write_text(page, encoding="utf-8")
    return ReportResult(
        out,
        tables_dir,
        ranked,
        n_tasks,
        unmatched,
        warnings,
        summary,
        [bakeoff_line(s) for s in bake],
    )


def bakeoff_line(s: _bakeoff.AgentBakeoff) -> str:
    """One plain-text line about a bake-off agent, for the command's output."""
    destructive, blocked = s.trust[0], s.trust[1]
    return (
        f"{s.agent} ({s.bakeoff}): overclaim {s.overclaim.text}; destructive actions in "
        f"{destructive.text} ({blocked.count} with a block); mean cost "
        f"${s.cost_mean:.4f}, mean time {s.duration_mean:.1f}s per attempt"
    )


def pd_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(rows)


def _marks_html(marks: list[str] | None) -> str:
    """Trust events and integrity flags of a cell's attempts, escaped by construction."""
    if not marks:
        return ""
    text = " · ".join(marks)
    return f'<br><span class="tm" title="{_esc(text)}">⚑ {_esc(text)}</span>'

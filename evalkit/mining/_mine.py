"""``evalkit mine``: closed issues and the changes that fixed them, validated into tasks."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from evalkit.errors import UsageError
from evalkit.mining._candidates import (
    Candidate,
    MineOptions,
    Rejection,
    SourceKind,
    check_change,
    check_issues,
    instance_id_for,
    make_instance,
    runnable_tests,
    split_diff,
)
from evalkit.mining._history import (
    Change,
    first_parent_diffs,
    git,
    in_date_range,
    mainline_changes,
    scan_history,
)
from evalkit.mining._links import IssueRef, find_links, pull_request_number
from evalkit.mining._sources import Comments, Issue, IssueIndex
from evalkit.mining._validate import EnvImages, Outcome, gold_check, validate_candidate
from evalkit.records import (
    CANDIDATES_FILE,
    ENV_SPEC_FILE,
    INSTANCES_FILE,
    REPOS_DIR,
    TaskInstance,
    iter_jsonl_lines,
    write_atomic,
)

if TYPE_CHECKING:
    import docker

    from evalkit.environment import SpecFile

Log = Callable[[str], None]
VALIDATION_DIR = ".validation"
"""Under the task set: raw before/after runs, image build logs, the gold check."""


@dataclass
class MineSummary:
    commits_scanned: int = 0
    candidates: int = 0
    accepted: int = 0
    kept_from_before: int = 0
    validated: int = 0
    """Candidates run in the sandbox in this invocation."""
    rejected: Counter[str] = field(default_factory=Counter)
    flaky_dropped: int = 0
    seconds: float = 0.0

    def lines(self) -> list[str]:
        out = [
            f"commits scanned: {self.commits_scanned}",
            f"candidates: {self.candidates} ({self.kept_from_before} verdicts kept from an "
            f"earlier run, {self.validated} validated now)",
            f"accepted: {self.accepted}",
        ]
        out += [f"rejected ({reason}): {n}" for reason, n in self.rejected.most_common()]
        out += [f"flaky tests dropped: {self.flaky_dropped}", f"time: {self.seconds:.1f} s"]
        return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class _Linked(NamedTuple):
    slot: int
    change: Change
    refs: list[IssueRef]
    issues: list[Issue]
    text: str
    """The messages (or pull request) that carried the link: a commit-only problem."""


class _Draft(NamedTuple):
    slot: int
    instance: TaskInstance
    test_files: tuple[str, ...]


# --- orchestration ---------------------------------------------------------------


def prepare_repo(repo: str, cache: Path) -> Path:
    """A local path for REPO: itself if it is a work tree or bare repo, else a mirror clone."""
    path = Path(repo)
    if path.exists():
        if not (path / ".git").exists() and not (path / "HEAD").exists():
            raise UsageError("not a git repository", path=repo)
        return path
    mirror = cache / (repo.rstrip("/").replace("/", "_").replace(":", "_") + ".git")
    if mirror.exists():
        git(mirror, "fetch", "--quiet", "--prune", "origin", "+refs/*:refs/*")
    else:
        mirror.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            ["git", "clone", "--quiet", "--mirror", repo, str(mirror)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise UsageError(f"cannot clone: {proc.stderr.strip()[-200:]}", path=repo)
    return mirror


def _load_previous(out: Path) -> tuple[dict[str, Candidate], dict[str, TaskInstance]]:
    candidates: dict[str, Candidate] = {}
    instances: dict[str, TaskInstance] = {}
    if (out / CANDIDATES_FILE).is_file():
        for _, line in iter_jsonl_lines(out / CANDIDATES_FILE):
            c = Candidate.model_validate_json(line)
            candidates[c.fix_commit] = c
    if (out / INSTANCES_FILE).is_file():
        for _, line in iter_jsonl_lines(out / INSTANCES_FILE):
            inst = TaskInstance.model_validate_json(line)
            instances[inst.instance_id] = inst
    return candidates, instances


def mine(
    repo: str,
    out: Path,
    *,
    repo_name: str,
    issues: Mapping[str, Issue] | None,
    source: SourceKind,
    options: MineOptions | None = None,
    spec_path: Path | None = None,
    comments: Callable[[str], Comments] | None = None,
    client: docker.DockerClient | None = None,
    log: Log = print,
    progress: bool = True,
) -> MineSummary:
    """Find changes in ``repo``'s history that closed issues, validate them in the sandbox
    and write the task set to ``out``. Re-running keeps earlier verdicts (except
    ``environment`` failures) and validates only changes not seen before.

    ``issues`` None means commit messages alone; an :class:`IssueIndex` (from
    :func:`load_issue_export` or the API fetchers) also supplies pull request bodies,
    late lookups and comments; ``comments`` overrides where comments come from.
    """
    from evalkit.repo import cache_root

    started = time.monotonic()
    options = options or MineOptions()
    summary = MineSummary()
    local = prepare_repo(repo, cache_root() / "mirrors")
    previous, old_instances = _load_previous(out)
    changes, summary.commits_scanned = all_changes(
        local, options.branches, since=options.since, until=options.until
    )
    bundle = _write_bundle(local, out, repo_name)
    spec_file = _write_spec(out, spec_path, options)
    index = issues if isinstance(issues, IssueIndex) or issues is None else IssueIndex(dict(issues))

    plan, linked, summary.kept_from_before = _select(
        changes,
        previous,
        index,
        repo_name=repo_name,
        source=source,
        options=options,
        spec_file=spec_file,
    )
    kept = {c.instance_id for c in plan if c.status == "accepted" and c.instance_id}
    # Earlier accepted tasks stay, unless being validated again (a new --spec): then
    # the new verdict decides, under the same name.
    planned = {c.fix_commit: c for c in plan}
    kept |= {
        c.instance_id
        for sha, c in previous.items()
        if c.status == "accepted" and c.instance_id and planned.get(sha, c) is c
    }
    instances = {
        iid: inst
        for iid, inst in old_instances.items()
        if iid in kept or not (inst.model_extra or {}).get("evalkit_fix_commit")
    }
    drafts = _drafts(
        local, plan, linked, index, comments, set(instances), repo_name, source, options
    )
    log(
        f"{summary.commits_scanned} commits, {len(plan)} linked changes: "
        f"{summary.kept_from_before} verdicts kept, {len(drafts)} to validate"
    )
    waiting = {d.slot for d in drafts}
    _write_candidates(out, plan, previous, waiting)

    finished: dict[int, TaskInstance] = {}
    for slot, outcome in _validate_all(
        drafts, bundle, spec_file, options, out, client, log, progress
    ):
        summary.validated += 1
        plan[slot] = plan[slot].model_copy(
            update={"validated_at": _now(), "flaky_tests": list(outcome.flaky)}
        )
        if outcome.rejection is not None:
            plan[slot] = _rejected(plan[slot], outcome.rejection)
            waiting.discard(slot)
            _write_candidates(out, plan, previous, waiting)
        elif outcome.instance is not None:
            finished[slot] = outcome.instance

    checks = gold_check(
        out,
        list(finished.values()),
        bundle=bundle,
        workers=options.workers,
        timeout=options.timeout,
        log=log,
        progress=progress,
        executor=options.executor,
        ray_address=options.ray_address,
    )
    for slot, instance in finished.items():
        rejection = checks.get(instance.instance_id)
        if rejection is None:
            plan[slot] = plan[slot].model_copy(update={"status": "accepted"})
            instances[instance.instance_id] = instance
        else:
            plan[slot] = _rejected(plan[slot], rejection)
    write_atomic(
        out / INSTANCES_FILE,
        "".join(i.model_dump_json() + "\n" for _, i in sorted(instances.items())),
    )
    _write_candidates(out, plan, previous, set())
    if instances:
        _record_gold_check(out, set(instances))

    for candidate in plan:
        summary.candidates += 1
        if candidate.status == "accepted":
            summary.accepted += 1
        else:
            summary.rejected[candidate.reason or "unknown"] += 1
        summary.flaky_dropped += len(candidate.flaky_tests)
    summary.seconds = time.monotonic() - started
    return summary


def _write_bundle(local: Path, out: Path, repo_name: str) -> Path:
    (out / REPOS_DIR).mkdir(parents=True, exist_ok=True)
    bundle = out / REPOS_DIR / (repo_name.replace("/", "__") + ".bundle")
    if bundle.is_file():
        # Same refs, same bundle: leaving it alone keeps the unpacked clone in the
        # repository cache valid (it is keyed by the bundle's size and mtime).
        refs = git(local, "for-each-ref", "--format=%(objectname) %(refname)")
        listed = git(local, "bundle", "list-heads", str(bundle.resolve()))
        if set(refs.splitlines()) == {x for x in listed.splitlines() if not x.endswith(" HEAD")}:
            return bundle
    partial = bundle.with_suffix(".bundle.partial")
    git(local, "bundle", "create", "--quiet", str(partial.resolve()), "--all")
    partial.replace(bundle)  # an interrupted run never leaves half a bundle
    return bundle


def all_changes(
    local: Path, branches: Sequence[str], *, since: str | None, until: str | None
) -> tuple[list[Change], int]:
    """Mainline changes of HEAD and of each ``--branch`` (a fix landed only on a
    maintenance branch is a task too), once each, newest first; and commits scanned."""
    changes: list[Change] = []
    seen: set[str] = set()
    scanned = 0
    for rev in ("HEAD", *branches):
        commits = scan_history(local, rev=rev)
        scanned += len(commits)
        found = mainline_changes(commits)
        if since or until:
            allowed = in_date_range(local, since, until, rev=rev)
            found = [c for c in found if c.commit.sha in allowed]
        for change in found:
            if change.commit.sha not in seen:
                seen.add(change.commit.sha)
                changes.append(change)
    if branches:
        changes.sort(key=lambda c: c.commit.committed_at, reverse=True)
    return changes, scanned


def _record_gold_check(out: Path, kept: set[str]) -> None:
    """The task set's ``gold-check.json``: the gold check the miner just ran (and earlier
    ones), so evaluating predictions on a mined set needs no separate validation."""
    from evalkit.dataset import load_task_set
    from evalkit.harness import read_gold_check
    from evalkit.records import GOLD_CHECK_FILE, GoldCheck

    results = {}
    for source in (out, out / ".validation" / "gold-check" / "tasks"):
        check = read_gold_check(source) if source.is_dir() else None
        if check is not None:
            results.update({i: r for i, r in check.results.items() if i in kept and r.passed})
    sha = load_task_set(out).sha256()
    write_atomic(
        out / GOLD_CHECK_FILE,
        GoldCheck(tasks_sha256=sha, results=results).model_dump_json(indent=2) + "\n",
    )


def _write_spec(out: Path, spec_path: Path | None, options: MineOptions) -> SpecFile:
    from evalkit.environment import load_spec_file

    if spec_path is not None:
        if not spec_path.is_file():
            raise UsageError("environment spec not found", path=str(spec_path))
        shutil.copyfile(spec_path, out / ENV_SPEC_FILE)
    elif not (out / ENV_SPEC_FILE).exists():
        write_atomic(
            out / ENV_SPEC_FILE,
            "# written by evalkit mine; the environment is inferred "
            "from the repository's packaging files\n[defaults]\n"
            f"timeout = {int(options.timeout)}\n",
        )
    return load_spec_file(out / ENV_SPEC_FILE)


_VALIDATED = {
    "environment",
    "gold_run_untrusted",
    "gold_breaks_tests",
    "no_fail_to_pass",
    "gold_check_failed",
    "test_patch_does_not_apply",
    "patch_does_not_apply",
}
"""Verdicts that came from running the change: a new environment spec can change them."""


def spec_digest(spec_file: SpecFile | None, repo: str, instance_id: str | None) -> str:
    """Hash of the spec tables that apply to one candidate (defaults, repo, instance)."""
    if spec_file is None:
        return ""
    tables = [
        spec_file.defaults,
        spec_file.repos.get(repo, {}),
        spec_file.instances.get(instance_id or "", {}),
    ]
    return hashlib.sha256(json.dumps(tables, sort_keys=True, default=str).encode()).hexdigest()


def _spec_changed(old: Candidate, spec_file: SpecFile | None, repo: str) -> bool:
    """Whether re-mining with another ``--spec`` must validate ``old`` again."""
    if spec_file is None or not (old.status == "accepted" or old.reason in _VALIDATED):
        return False
    return old.spec_sha256 != spec_digest(spec_file, repo, old.instance_id)


def _rejected(candidate: Candidate, rejection: Rejection) -> Candidate:
    return candidate.model_copy(
        update={"status": "rejected", "reason": rejection.reason, "detail": rejection.detail}
    )


def _select(
    changes: list[Change],
    previous: dict[str, Candidate],
    index: IssueIndex | None,
    *,
    repo_name: str,
    source: SourceKind,
    options: MineOptions,
    spec_file: SpecFile | None = None,
) -> tuple[list[Candidate], list[_Linked], int]:
    """Linked changes, newest first: earlier verdicts, issue-source rejections, and the
    rest (to be diffed and validated)."""
    plan: list[Candidate] = []
    linked: list[_Linked] = []
    kept = 0
    for change in changes:
        commit = change.commit
        if not commit.parents:
            continue
        number = pull_request_number(commit.message)
        pr = index.pull_requests.get(number) if index is not None and number else None
        text = change.messages + (f"\n\n{pr.title}\n\n{pr.body}" if pr is not None else "")
        closed = index.closed_by.get(number, []) if index is not None and number else []
        # The export names the issues this pull request closed: a squash commit
        # "Title (#N)" links them as SWE-bench links a pull request to its issues.
        text += "".join(f"\nCloses #{key}" for key in closed)
        refs = find_links(text, repo=repo_name, link_pattern=options.link_pattern)
        if not refs:
            continue
        if options.max_candidates is not None and len(plan) >= options.max_candidates:
            break
        old = previous.get(commit.sha)
        if (
            old is not None
            and old.reason != "environment"
            and not _spec_changed(old, spec_file, repo_name)
        ):
            plan.append(old)
            kept += 1
            continue
        own = find_links(commit.message, repo=repo_name, link_pattern=options.link_pattern)
        candidate = Candidate(
            fix_commit=commit.sha,
            base_commit=commit.parents[0],
            title=commit.title,
            issue_keys=[r.key for r in refs],
            issue_urls=[r.url for r in refs if r.url],
            pull_request=number,
            source=source,
            instance_id=old.instance_id if old is not None else None,
            validated_at=_now(),
            spec_sha256=spec_digest(spec_file, repo_name, old.instance_id if old else None),
        )
        issues: list[Issue] = []
        if index is not None:
            issues, rejection = check_issues(refs, index.lookup)
            if rejection is not None:
                plan.append(_rejected(candidate, rejection))
                continue
            candidate.issue_urls = [i.url for i in issues if i.url] or candidate.issue_urls
        carriers = [
            c.message
            for c in (commit, *change.merged)
            if find_links(c.message, repo=repo_name, link_pattern=options.link_pattern)
        ]
        if pr is not None and not own:
            carriers = [f"{pr.title}\n\n{pr.body}"]
        plan.append(candidate)
        linked.append(
            _Linked(len(plan) - 1, change, refs, issues, "\n\n".join(carriers) or commit.message)
        )
    return plan, linked, kept


def _drafts(
    local: Path,
    plan: list[Candidate],
    linked: list[_Linked],
    index: IssueIndex | None,
    comments: Callable[[str], Comments] | None,
    taken: set[str],
    repo_name: str,
    source: SourceKind,
    options: MineOptions,
) -> list[_Draft]:
    """Diff every linked change in one git call, split and check each, and draft the
    instances that deserve a sandbox."""
    diffs = first_parent_diffs(local, [item.change.commit for item in linked])
    drafts = []
    for item in linked:
        commit = item.change.commit
        split = split_diff(diffs.get(commit.sha, ""), options.test_globs)
        candidate = plan[item.slot].model_copy(
            update={"lines_changed": split.lines, "files_changed": split.files}
        )
        rejection = check_change(split, options)
        if rejection is not None:
            plan[item.slot] = _rejected(candidate, rejection)
            continue
        # Comments cost API calls: fetched only for changes that reach the sandbox.
        fetched = {
            i.key: comments(i.key) if comments else index.comments(i) if index else i.comments
            for i in item.issues
        }
        instance_id = candidate.instance_id
        if instance_id is None or instance_id in taken:
            # SWE-bench names a task by its pull request; the issues stay a field
            # (evalkit_issue_keys). Without a pull request, by the first issue.
            key = candidate.pull_request if (candidate.pull_request or "").isdigit() else None
            instance_id = instance_id_for(repo_name, key or item.refs[0].key, commit.sha, taken)
        taken.add(instance_id)
        instance = make_instance(
            item.change,
            split,
            item.issues,
            instance_id=instance_id,
            repo_name=repo_name,
            refs=item.refs,
            source=source,
            commit_text=item.text,
            comments=fetched,
            pull_request=candidate.pull_request,
        )
        plan[item.slot] = candidate.model_copy(update={"instance_id": instance_id})
        drafts.append(_Draft(item.slot, instance, runnable_tests(split.test_files)))
    return drafts


def _write_candidates(
    out: Path, plan: list[Candidate], previous: dict[str, Candidate], waiting: set[int]
) -> None:
    """Every verdict so far, rewritten atomically after each one: an interrupted run keeps
    what it finished, and a candidate still waiting keeps its earlier line, if any."""
    rows = [c for slot, c in enumerate(plan) if slot not in waiting]
    rows += [
        previous[plan[s].fix_commit] for s in sorted(waiting) if plan[s].fix_commit in previous
    ]
    listed = {c.fix_commit for c in plan}
    rows += [c for sha, c in previous.items() if sha not in listed]
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / CANDIDATES_FILE, "".join(c.model_dump_json() + "\n" for c in rows))


def _validate_all(
    drafts: list[_Draft],
    bundle: Path,
    spec_file: SpecFile,
    options: MineOptions,
    out: Path,
    client: docker.DockerClient | None,
    log: Log,
    progress: bool,
) -> Iterator[tuple[int, Outcome]]:
    """Validate drafts in parallel; yields each outcome as it finishes."""
    if not drafts:
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from evalkit.executors import make_executor
    from evalkit.sandbox import docker_client

    executor = None
    if options.executor != "thread":  # else validation runs here, as it always has
        executor = make_executor(
            options.executor,
            workers=options.workers,
            run_id=f"mine-{os.getpid()}",
            address=options.ray_address,
        )
    remote = executor is not None and executor.builds_images
    engine = None if remote else client or docker_client()
    workdir = out / VALIDATION_DIR
    images = EnvImages(engine, workdir / "images", log)
    with (
        contextlib.closing(executor) if executor is not None else contextlib.nullcontext(),
        Progress(
            TextColumn("[bold]validate"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            disable=not progress,
        ) as bar,
        ThreadPoolExecutor(max(1, options.workers)) as pool,
    ):
        task = bar.add_task("", total=len(drafts))
        futures = {
            pool.submit(
                validate_candidate,
                d.instance,
                d.test_files,
                bundle,
                spec_file,
                options,
                workdir / "runs",
                engine,
                images,
                executor,
            ): d
            for d in drafts
        }
        try:
            for future in as_completed(futures):
                draft = futures[future]
                outcome = future.result()
                verdict = outcome.rejection.reason if outcome.rejection else "validated"
                bar.update(task, advance=1, description=f"{draft.instance.instance_id} {verdict}")
                yield draft.slot, outcome
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise

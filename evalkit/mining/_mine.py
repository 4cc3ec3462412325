"""``evalkit mine``: closed issues and the changes that fixed them, validated into tasks."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

from pydantic import BaseModel, Field

from evalkit.errors import InfraError, UsageError
from evalkit.mining._history import Commit, first_parent_diff, git, scan_history
from evalkit.mining._links import IssueRef, find_links
from evalkit.mining._sources import Issue
from evalkit.mining._validate import classify_runs
from evalkit.patch import is_test_path
from evalkit.records import (
    CANDIDATES_FILE,
    ENV_SPEC_FILE,
    INSTANCES_FILE,
    REPOS_DIR,
    SCHEMA_VERSION,
    Prediction,
    TaskInstance,
    TestOutcome,
    iter_jsonl_lines,
    write_atomic,
)

if TYPE_CHECKING:
    import docker

    from evalkit.environment import SpecFile

Log = Callable[[str], None]
SourceKind = Literal["export", "github", "gitlab", "commit"]


class Candidate(BaseModel):
    """One line of ``candidates.jsonl``: a change considered, and what became of it."""

    schema_version: int = SCHEMA_VERSION
    fix_commit: str
    base_commit: str
    title: str
    issue_keys: list[str] = Field(default_factory=list)
    issue_urls: list[str] = Field(default_factory=list)
    source: str = "commit"
    status: Literal["accepted", "rejected"] = "rejected"
    reason: str | None = None
    """Why it was rejected: a short code (``no_test_change``, ``no_fail_to_pass``...)."""
    detail: str = ""
    instance_id: str | None = None
    lines_changed: int = 0
    files_changed: int = 0
    flaky_tests: list[str] = Field(default_factory=list)
    validated_at: str = ""


@dataclass(frozen=True)
class MineOptions:
    since: str | None = None
    until: str | None = None
    max_candidates: int | None = None
    workers: int = 1
    runs: int = 3
    link_pattern: str | None = None
    test_globs: tuple[str, ...] = ()
    max_lines: int = 2000
    max_files: int = 50
    timeout: float = 300.0


@dataclass
class MineSummary:
    candidates: int = 0
    accepted: int = 0
    kept_from_before: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    flaky_dropped: int = 0
    seconds: float = 0.0

    def lines(self) -> list[str]:
        out = [
            f"candidates considered: {self.candidates} ({self.kept_from_before} kept from an "
            f"earlier run)",
            f"accepted: {self.accepted}",
        ]
        out += [f"rejected ({reason}): {n}" for reason, n in self.rejected.most_common()]
        out += [f"flaky tests dropped: {self.flaky_dropped}", f"time: {self.seconds:.1f} s"]
        return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- candidates (pure given the commit, issues and diff) -------------------------


class SplitChange(NamedTuple):
    patch: str
    test_patch: str
    test_files: list[str]
    lines: int
    files: int
    only_binary: bool


def split_diff(diff: str, test_globs: tuple[str, ...] = ()) -> SplitChange:
    """Split a change into the gold ``patch`` (source) and ``test_patch`` (tests), by path
    components, not substrings (``latest.py`` is source)."""
    from unidiff.patch import PatchSet

    source, tests, test_files = [], [], []
    lines = files = binary = 0
    for patched in PatchSet(diff):
        files += 1
        if patched.is_binary_file:
            binary += 1
            continue  # a text task cannot carry binary content
        lines += patched.added + patched.removed
        if is_test_path(patched.path, test_globs):
            tests.append(str(patched))
            if not patched.is_removed_file:
                test_files.append(patched.path)
        else:
            source.append(str(patched))
    only_binary = binary > 0 and not (source or tests)
    return SplitChange("".join(source), "".join(tests), test_files, lines, files, only_binary)


def _runnable(test_files: list[str]) -> list[str]:
    return [f for f in test_files if f.endswith(".py") and Path(f).name != "conftest.py"]


def _problem(commit: Commit, issues: list[Issue]) -> str:
    if not issues:
        return commit.message.strip() + "\n"
    return "\n\n".join(f"{i.title}\n{i.body}".strip() for i in issues) + "\n"


def _hints(commit: Commit, issues: list[Issue]) -> str:
    return "\n".join(
        body
        for i in issues
        for created, body in i.comments
        if created and created < commit.committed_at
    )


# --- orchestration ---------------------------------------------------------------


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


def mine(
    repo: str,
    out: Path,
    *,
    repo_name: str,
    issues: dict[str, Issue] | None,
    source: SourceKind,
    options: MineOptions = MineOptions(),
    spec_path: Path | None = None,
    comments: Callable[[str], tuple[tuple[str, str], ...]] | None = None,
    client: docker.DockerClient | None = None,
    log: Log = print,
    progress: bool = True,
) -> MineSummary:
    """Find candidate fixes in ``repo``'s history, validate them in the sandbox and write
    the task set to ``out``. Re-running validates only changes not seen before."""
    from evalkit.environment import load_spec_file
    from evalkit.repo import cache_root

    started = time.monotonic()
    local = prepare_repo(repo, cache_root() / "mirrors")
    previous, instances = _load_previous(out)
    summary = MineSummary()
    commits = scan_history(local, since=options.since, until=options.until)
    (out / REPOS_DIR).mkdir(parents=True, exist_ok=True)
    bundle = out / REPOS_DIR / (repo_name.replace("/", "__") + ".bundle")
    git(local, "bundle", "create", "--quiet", str(bundle.resolve()), "--all")
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
    spec_file = load_spec_file(out / ENV_SPEC_FILE)

    candidates: list[Candidate] = []
    drafts: dict[str, tuple[Candidate, TaskInstance, list[str]]] = {}
    seen_ids = set(instances)
    for commit in commits:
        refs = find_links(commit.message, repo=repo_name, link_pattern=options.link_pattern)
        if not refs or not commit.parents:
            continue
        if options.max_candidates is not None and len(candidates) >= options.max_candidates:
            break
        old = previous.get(commit.sha)
        if old is not None and old.reason != "environment":
            candidates.append(old)
            summary.kept_from_before += 1
            continue
        candidate, draft = _candidate(
            local, commit, refs, issues, source, repo_name, options, seen_ids
        )
        candidates.append(candidate)
        if draft is not None:
            drafts[commit.sha] = (candidate, *draft)
            seen_ids.add(draft[0].instance_id)

    results = _validate_all(drafts, bundle, spec_file, options, out, client, log, progress)
    for i, candidate in enumerate(candidates):
        if candidate.fix_commit in results:
            candidate, instance = results[candidate.fix_commit]
            candidates[i] = candidate
            if instance is not None:
                instances[instance.instance_id] = instance
    for candidate in candidates:
        summary.candidates += 1
        if candidate.status == "accepted":
            summary.accepted += 1
        else:
            summary.rejected[candidate.reason or "unknown"] += 1
        summary.flaky_dropped += len(candidate.flaky_tests)
    keep = {c.instance_id for c in candidates if c.status == "accepted"} | {
        iid for iid in instances if iid not in {c.instance_id for c in candidates}
    }
    write_atomic(
        out / INSTANCES_FILE,
        "".join(i.model_dump_json() + "\n" for iid, i in sorted(instances.items()) if iid in keep),
    )
    known = {c.fix_commit for c in candidates}
    rest = [c for sha, c in previous.items() if sha not in known]
    write_atomic(
        out / CANDIDATES_FILE, "".join(c.model_dump_json() + "\n" for c in [*candidates, *rest])
    )
    summary.seconds = time.monotonic() - started
    return summary


def _candidate(
    local: Path,
    commit: Commit,
    refs: list[IssueRef],
    issues: dict[str, Issue] | None,
    source: SourceKind,
    repo_name: str,
    options: MineOptions,
    seen_ids: set[str],
    comments: Callable[[str], tuple[tuple[str, str], ...]] | None = None,
) -> tuple[Candidate, tuple[TaskInstance, list[str]] | None]:
    base = Candidate(
        fix_commit=commit.sha,
        base_commit=commit.parents[0],
        title=commit.title,
        issue_keys=[r.key for r in refs],
        issue_urls=[r.url for r in refs if r.url],
        source=source,
        validated_at=_now(),
    )

    def reject(reason: str, detail: str = "") -> tuple[Candidate, None]:
        return base.model_copy(update={"reason": reason, "detail": detail}), None

    linked: list[Issue] = []
    if issues is not None:
        linked = [issues[r.key] for r in refs if r.key in issues]
        if not linked:
            return reject("issue_not_found", f"no issue {', '.join(base.issue_keys)} in the source")
        if not any(i.closed for i in linked):
            return reject("issue_not_closed")
        base.issue_urls = [i.url for i in linked if i.url] or base.issue_urls
    patch, test_patch, test_files, lines, files, only_binary = split_diff(
        first_parent_diff(local, commit), options.test_globs
    )
    base.lines_changed, base.files_changed = lines, files
    if only_binary:
        return reject("binary_only")
    if not test_patch:
        return reject("no_test_change")
    if not patch:
        return reject("no_source_change")
    if lines > options.max_lines or base.files_changed > options.max_files:
        return reject("too_large", f"{lines} lines in {base.files_changed} files")
    runnable = _runnable(test_files)
    if not runnable:
        return reject("no_runnable_tests", "the test change touches no test_*.py file")
    if comments is not None:
        # Comments are fetched only for issues that became candidates (few API calls).
        linked = [replace(i, comments=comments(i.key)) for i in linked]
    key = base.issue_keys[0]
    instance_id = f"{repo_name.replace('/', '__')}-{key}"
    if instance_id in seen_ids:
        instance_id = f"{instance_id}-{commit.sha[:7]}"
    closed = max((i.closed_at for i in linked if i.closed_at), default="")
    instance = TaskInstance.model_validate(
        dict(
            instance_id=instance_id,
            repo=repo_name,
            base_commit=commit.parents[0],
            patch=patch,
            test_patch=test_patch,
            problem_statement=_problem(commit, linked),
            hints_text=_hints(commit, linked),
            created_at=closed or commit.committed_at,
            version="",
            environment_setup_commit=commit.parents[0],
            evalkit_fix_commit=commit.sha,
            evalkit_issue_keys=base.issue_keys,
            evalkit_issue_urls=base.issue_urls,
            evalkit_source=source,
            problem_statement_source="issue" if linked else "commit",
            evalkit_lines_changed=lines,
            evalkit_files_changed=base.files_changed,
        )
    )
    return base.model_copy(update={"instance_id": instance_id}), (instance, runnable)


def _validate_all(
    drafts: dict[str, tuple[Candidate, TaskInstance, list[str]]],
    bundle: Path,
    spec_file: SpecFile,
    options: MineOptions,
    out: Path,
    client: docker.DockerClient | None,
    log: Log,
    progress: bool,
) -> dict[str, tuple[Candidate, TaskInstance | None]]:
    if not drafts:
        return {}
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from evalkit.sandbox import docker_client

    docker = client or docker_client()
    results: dict[str, tuple[Candidate, TaskInstance | None]] = {}
    with (
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
                cand,
                inst,
                files,
                bundle,
                spec_file,
                options,
                out / ".validation",
                docker,
                log,
            ): sha
            for sha, (cand, inst, files) in drafts.items()
        }
        for future in as_completed(futures):
            sha = futures[future]
            results[sha] = future.result()
            bar.update(
                task,
                advance=1,
                description=f"{results[sha][0].instance_id} {results[sha][0].reason or 'accepted'}",
            )
    return results


def validate_candidate(
    candidate: Candidate,
    instance: TaskInstance,
    test_files: list[str],
    bundle: Path,
    spec_file: SpecFile,
    options: MineOptions,
    workdir: Path,
    client: docker.DockerClient,
    log: Log,
) -> tuple[Candidate, TaskInstance | None]:
    """Run the touched tests before and after the fix, ``options.runs`` times each, then
    check that the finished instance resolves under ``evaluate --gold`` rules."""
    from evalkit.environment import image_tag
    from evalkit.grading import parse_test_report
    from evalkit.harness import (
        EvalUnit,
        build_environment,
        evaluate_unit,
        execute_unit,
        resolve_environment,
    )
    from evalkit.images import resolve_ca_bundle
    from evalkit.records import Status
    from evalkit.repo import Repository

    candidate = candidate.model_copy(update={"validated_at": _now()})

    def reject(reason: str, detail: str = "") -> tuple[Candidate, None]:
        return candidate.model_copy(update={"reason": reason, "detail": detail[:500]}), None

    repository = Repository(bundle)
    try:
        spec, key = resolve_environment(spec_file, instance, repository)
        image = build_environment(
            client, instance, spec, key, repository, ca_bundle=resolve_ca_bundle(None), log=log
        )
    except InfraError as exc:
        return reject("environment", str(exc))
    before: list[dict[str, TestOutcome]] = []
    after: list[dict[str, TestOutcome]] = []
    unit_dir = workdir / instance.instance_id
    try:
        for run in range(options.runs):
            for label, patch, sink in (("before", "", before), ("after", instance.patch, after)):
                unit = EvalUnit(
                    instance=instance,
                    prediction=Prediction(
                        instance_id=instance.instance_id,
                        model_name_or_path=label,
                        model_patch=patch,
                    ),
                    spec=spec,
                    image=image,
                    bundle=bundle,
                    out_dir=unit_dir / f"{label}-{run}",
                    timeout=min(options.timeout, spec.timeout),
                    test_files=tuple(test_files),
                )
                executed = execute_unit(unit, client)
                if executed.execution.apply_error or executed.execution.task_error:
                    return reject(
                        "patch_does_not_apply",
                        executed.execution.apply_error or executed.execution.task_error or "",
                    )
                sink.append(parse_test_report(executed.report).outcomes)
    except InfraError as exc:
        return reject("environment", str(exc))
    result = classify_runs(before, after)
    candidate.flaky_tests = list(result.flaky)
    if result.broken_by_gold:
        return reject("gold_breaks_tests", ", ".join(result.broken_by_gold[:5]))
    if not result.fail_to_pass:
        return reject("no_fail_to_pass", "no test fails before the fix and passes after it")
    final = instance.model_copy(
        update={
            "FAIL_TO_PASS": list(result.fail_to_pass),
            "PASS_TO_PASS": list(result.pass_to_pass),
        }
    )
    final.__pydantic_extra__ = {
        **(instance.model_extra or {}),
        "evalkit_flaky_tests_dropped": list(result.flaky),
    }
    gold = evaluate_unit(
        EvalUnit(
            instance=final,
            prediction=Prediction(
                instance_id=final.instance_id, model_name_or_path="gold", model_patch=final.patch
            ),
            spec=spec,
            image=image_tag(final.repo, key),
            bundle=bundle,
            out_dir=unit_dir / "gold-check",
            timeout=min(options.timeout, spec.timeout),
        ),
        client,
    )
    if gold.status is not Status.RESOLVED:
        return reject("gold_check_failed", gold.error or gold.status.value)
    return candidate.model_copy(update={"status": "accepted"}), final

"""Validation: repeated before/after runs in the sandbox, and the pure rules that turn
them into FAIL_TO_PASS / PASS_TO_PASS, flaky tests and rejection reasons."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from evalkit.errors import InfraError
from evalkit.mining._candidates import MineOptions, Rejection
from evalkit.records import (
    ENV_SPEC_FILE,
    INSTANCES_FILE,
    REPOS_DIR,
    Prediction,
    TaskInstance,
    TestOutcome,
    write_atomic,
)

if TYPE_CHECKING:
    import docker

    from evalkit.environment import EnvSpec, SpecFile
    from evalkit.harness import Executed, Executor

Runs = Sequence[dict[str, TestOutcome]]
Log = Callable[[str], None]

MAX_HUNG_TESTS = 3
"""Tests that hang before the fix are deselected one by one, at most this many."""


# --- pure rules ------------------------------------------------------------------


@dataclass(frozen=True)
class Classification:
    fail_to_pass: tuple[str, ...]
    pass_to_pass: tuple[str, ...]
    flaky: tuple[str, ...]
    """Tests whose outcome changed between runs of the same state: dropped from both lists."""
    broken_by_gold: tuple[str, ...]
    """Passed in every run before the fix and in none after: the gold patch breaks them."""


def _passed(runs: Runs, test: str) -> list[bool]:
    return [run.get(test) is TestOutcome.PASSED for run in runs]


def classify_runs(before: Runs, after: Runs) -> Classification:
    """FAIL_TO_PASS: failing or absent before and passing after, in every run.
    PASS_TO_PASS: passing before and after, in every run. A test that flips between runs
    of the same state is flaky and goes in neither list."""
    tests = sorted({t for run in (*before, *after) for t in run})
    f2p: list[str] = []
    p2p: list[str] = []
    flaky: list[str] = []
    broken: list[str] = []
    for test in tests:
        pre, post = _passed(before, test), _passed(after, test)
        if len(set(pre)) > 1 or len(set(post)) > 1:
            flaky.append(test)
        elif post and all(post):
            (p2p if pre and all(pre) else f2p).append(test)
        elif pre and all(pre):
            broken.append(test)
    return Classification(tuple(f2p), tuple(p2p), tuple(flaky), tuple(broken))


def judge(result: Classification, collect_errors_after: Sequence[str] = ()) -> Rejection | None:
    """Why the classified runs cannot make a task, or None."""
    if result.broken_by_gold:
        shown = ", ".join(result.broken_by_gold[:5])
        return Rejection("gold_breaks_tests", f"{len(result.broken_by_gold)} broken: {shown}")
    if not result.fail_to_pass:
        if collect_errors_after:
            # Test modules that cannot even be imported with the fix in place point at
            # the environment (a missing dependency), which a later run may fix.
            return Rejection(
                "environment",
                "test modules fail to import after the fix: " + ", ".join(collect_errors_after[:3]),
            )
        return Rejection(
            "no_fail_to_pass",
            f"{len(result.pass_to_pass)} tests pass both before and after the fix"
            + (f"; {len(result.flaky)} flaky" if result.flaky else ""),
        )
    return None


def unfinished_tests(report_text: str) -> list[str]:
    """Tests the plugin saw start but never finish: what a killed (timed-out) run was
    running when it died."""
    started: dict[str, None] = {}
    from evalkit.grading import report_lines

    for line in report_lines(report_text)[0]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or record.get("event") != "test":
            continue
        nodeid = str(record.get("nodeid", ""))
        if record.get("when") == "setup" and record.get("outcome") == "passed":
            started[nodeid] = None
        else:
            started.pop(nodeid, None)
    return list(started)


# --- the sandbox adapter -----------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What validating one candidate produced."""

    instance: TaskInstance | None
    """The finished instance (FAIL_TO_PASS / PASS_TO_PASS set) when it passed validation."""
    rejection: Rejection | None
    flaky: tuple[str, ...] = ()


class EnvImages:
    """Environment images for one mining run: each build key built once, and a failed
    build reported to every candidate that needs it without building again."""

    def __init__(self, client: docker.DockerClient | None, build_logs: Path, log: Log):
        """``client`` None: images are built where the units run (a cluster executor)."""
        from evalkit.images import resolve_ca_bundle

        self._client = client
        self._logs = build_logs
        self._log = log
        self._ca = resolve_ca_bundle(None)
        self._done: dict[str, str | InfraError] = {}
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def image(
        self, spec_file: SpecFile, instance: TaskInstance, bundle: Path
    ) -> tuple[EnvSpec, str]:
        """The resolved spec and a built image tag, or :class:`InfraError`."""
        from evalkit.harness import build_environment, resolve_environment
        from evalkit.repo import Repository

        repository = Repository(bundle)
        spec, key = resolve_environment(spec_file, instance, repository)
        if self._client is None:
            return spec, key  # the executor builds it on the node, from the same key
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._done:
                try:
                    self._done[key] = build_environment(
                        self._client,
                        instance,
                        spec,
                        key,
                        repository,
                        ca_bundle=self._ca,
                        log=self._log,
                        build_log=self._logs / f"{key}.log",
                    )
                except InfraError as exc:
                    self._done[key] = InfraError(f"{exc} (build log: {self._logs / key}.log)")
        done = self._done[key]
        if isinstance(done, InfraError):
            raise done
        return spec, done


def validate_candidate(
    instance: TaskInstance,
    test_files: Sequence[str],
    bundle: Path,
    spec_file: SpecFile,
    options: MineOptions,
    workdir: Path,
    client: docker.DockerClient | None,
    images: EnvImages,
    executor: Executor | None = None,
) -> Outcome:
    """Run the touched test files with the test patch only (before) and with the fix too
    (after), ``options.runs`` times each in fresh sandboxes, and classify the results.

    A test that hangs before the fix times the run out; it is recorded as failing and
    deselected, and the run repeated, so the tests after it still get a before outcome.
    """
    import docker.errors

    try:
        spec, image = images.image(spec_file, instance, bundle)
        return _runs(
            instance, tuple(test_files), bundle, spec, image, options, workdir, client, executor
        )
    except (InfraError, docker.errors.DockerException) as exc:
        return Outcome(None, Rejection("environment", str(exc)[:500]))


def _runs(
    instance: TaskInstance,
    test_files: tuple[str, ...],
    bundle: Path,
    spec: EnvSpec,
    image: str,
    options: MineOptions,
    workdir: Path,
    client: docker.DockerClient | None,
    executor: Executor | None = None,
) -> Outcome:
    from evalkit.grading import parse_test_report, trust_problem
    from evalkit.harness import EvalUnit, execute_unit, write_unit_output
    from evalkit.harness import executed as executed_of

    def run(label: str, patch: str, deselect: Sequence[str]) -> Executed:
        args = [a for t in deselect for a in ("--deselect", t)]
        unit = EvalUnit(
            instance=instance,
            prediction=Prediction(
                instance_id=instance.instance_id, model_name_or_path=label, model_patch=patch
            ),
            spec=replace(spec, pytest_args=(*spec.pytest_args, *args)),
            image=image,
            bundle=bundle,
            out_dir=workdir / instance.instance_id / label,
            timeout=min(options.timeout, spec.timeout),
            test_files=test_files,
        )
        if executor is None:
            return execute_unit(unit, client)
        output = executor.execute(unit)  # wherever it ran, written here
        write_unit_output(unit, output)
        return executed_of(output)

    before: list[dict[str, TestOutcome]] = []
    after: list[dict[str, TestOutcome]] = []
    hung: list[str] = []
    collect_errors: list[str] = []
    for n in range(options.runs):
        outcomes: dict[str, TestOutcome] = {}
        for attempt in range(MAX_HUNG_TESTS + 1):
            executed = run(f"before-{n}-{attempt}", "", hung)
            if executed.execution.task_error:
                return Outcome(None, Rejection("test_patch_does_not_apply", _short(executed)))
            outcomes.update(parse_test_report(executed.report).outcomes)
            new = [t for t in unfinished_tests(executed.report) if t not in hung]
            if not executed.execution.timed_out or not new or len(hung) >= MAX_HUNG_TESTS:
                break
            hung += new
        before.append({**outcomes, **dict.fromkeys(hung, TestOutcome.FAILED)})

        executed = run(f"after-{n}", instance.patch, ())
        if executed.execution.apply_error:
            return Outcome(None, Rejection("patch_does_not_apply", _short(executed)))
        if executed.execution.task_error:
            return Outcome(None, Rejection("test_patch_does_not_apply", _short(executed)))
        report = parse_test_report(executed.report)
        problem = trust_problem(report, executed.execution)
        if problem is not None:
            cause = _environment_cause(executed.output, report.collect_errors)
            if cause:
                # The tests cannot even start with the fix in place: a missing or wrong
                # dependency, not a bad fix (re-validated on the next run).
                return Outcome(None, Rejection("environment", f"run {n + 1}: {cause}"))
            return Outcome(None, Rejection("gold_run_untrusted", f"run {n + 1}: {problem}"))
        after.append(report.outcomes)
        collect_errors += [e for e in report.collect_errors if e not in collect_errors]
    result = classify_runs(before, after)
    rejection = judge(result, collect_errors)
    if rejection is not None:
        return Outcome(None, rejection, result.flaky)
    final = instance.model_copy(
        update={
            "FAIL_TO_PASS": list(result.fail_to_pass),
            "PASS_TO_PASS": list(result.pass_to_pass),
        }
    )
    final.__pydantic_extra__ = {
        **(instance.model_extra or {}),
        "evalkit_flaky_tests_dropped": list(result.flaky),
        "evalkit_hung_before_fix": hung,
    }
    return Outcome(final, None, result.flaky)


_ENVIRONMENT_ERRORS = re.compile(
    r"(ModuleNotFoundError|ImportError|No module named|cannot import name|"
    r"ImportPathMismatchError|pluggy|PluginValidationError|INTERNALERROR)"
)


def _environment_cause(output: str, collect_errors: Sequence[str]) -> str:
    """The import or plugin error that stopped a run before its tests, if any."""
    from evalkit.harness import first_error_line

    line = first_error_line(output)
    if _ENVIRONMENT_ERRORS.search(line) or (collect_errors and not line):
        return line or f"collection errors in {', '.join(collect_errors[:3])}"
    match = _ENVIRONMENT_ERRORS.search(output)
    if match:
        start = output.rfind("\n", 0, match.start()) + 1
        return output[start : output.find("\n", match.end())].strip()[:300]
    return ""


def _short(executed: Executed) -> str:
    text = executed.execution.apply_error or executed.execution.task_error or ""
    return text[:500]


def gold_check(
    out: Path,
    instances: Sequence[TaskInstance],
    *,
    bundle: Path,
    workers: int,
    timeout: float,
    log: Log,
    progress: bool,
    executor: str = "thread",
    ray_address: str | None = None,
) -> dict[str, Rejection | None]:
    """Each finished instance through ``evaluate --gold``: the same code path, bundle and
    ``evalkit.toml`` a later ``evalkit evaluate --gold --tasks OUT`` uses. The instances
    go in a scratch task set, so ``OUT/instances.jsonl`` only ever holds checked ones."""
    from evalkit.harness import evaluate
    from evalkit.records import Status

    if not instances:
        return {}
    scratch = out / ".validation" / "gold-check"
    shutil.rmtree(scratch, ignore_errors=True)
    tasks = scratch / "tasks"
    (tasks / REPOS_DIR).mkdir(parents=True)
    shutil.copyfile(out / ENV_SPEC_FILE, tasks / ENV_SPEC_FILE)
    (tasks / REPOS_DIR / bundle.name).symlink_to(bundle.resolve())
    write_atomic(tasks / INSTANCES_FILE, "".join(i.model_dump_json() + "\n" for i in instances))
    run_id = f"mine-gold-{int(time.time())}-{os.getpid()}"  # unique: stale cleanup is per id
    outcome = evaluate(
        tasks,
        None,
        run_id,
        runs_dir=scratch / "runs",
        workers=workers,
        timeout=timeout,
        gold=True,
        log=log,
        progress=progress,
        executor=executor,
        ray_address=ray_address,
    )
    verdicts = {v.instance_id: v for v in outcome.verdicts}
    results: dict[str, Rejection | None] = {}
    for instance in instances:
        verdict = verdicts.get(instance.instance_id)
        if verdict is None:
            results[instance.instance_id] = Rejection("environment", "no gold verdict")
        elif verdict.infra_failure:
            results[instance.instance_id] = Rejection("environment", verdict.error or "")
        elif verdict.status is not Status.RESOLVED:
            detail = verdict.error or f"{verdict.status.value} ({verdict.resolution})"
            results[instance.instance_id] = Rejection("gold_check_failed", detail[:500])
        else:
            results[instance.instance_id] = None
    return results

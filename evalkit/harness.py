"""The evaluation harness: one (prediction, task) in, one verdict out; runs of many.

:func:`evaluate_unit` is the self-contained unit of work (inputs in, one record out)
that an executor fans out (threads on this machine, or Ray tasks on a cluster: see
:mod:`evalkit.executors`); units return their output as data and only the driver writes.
:func:`evaluate` orchestrates a run: builds environment images once per repo,
resumes from ``results.jsonl``, and writes each verdict the moment it is known.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import secrets
import shlex
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

from evalkit import __version__
from evalkit.dataset import (
    GOLD_MODEL,
    Problem,
    TaskSet,
    gold_predictions,
    load_predictions,
    load_task_set,
)
from evalkit.environment import (
    EnvSpec,
    SpecFile,
    image_tag,
    read_dependency_files,
    resolve_spec,
)
from evalkit.errors import InfraError, UsageError
from evalkit.grading import grade
from evalkit.patch import (
    PatchRejected,
    check_test_infrastructure,
    inspect_patch,
    is_test_infrastructure,
    sha256_text,
)
from evalkit.records import (
    EVAL_SCRIPT_FILE,
    EXECUTION_FILE,
    GOLD_CHECK_FILE,
    PATCH_FILE,
    REPORT_FILE,
    RESULTS_REJECTED_FILE,
    TEST_OUTPUT_FILE,
    TEST_REPORT_FILE,
    VERDICT_FILE,
    EnvironmentImage,
    Execution,
    GoldCheck,
    GoldResult,
    ModelSummary,
    Prediction,
    RunDir,
    RunManifest,
    Status,
    TaskInstance,
    Verdict,
    append_jsonl,
    compact_verdicts,
    keep_aside,
    read_model,
    read_verdicts,
    repair_jsonl,
    scan_verdicts,
    write_atomic,
    write_model,
)
from evalkit.repo import Repository
from evalkit.runners import TestRunner, get_runner, shared_config
from evalkit.runners import python as _python_runner
from evalkit.sandbox import (
    COLLECTOR_UID,
    DockerSandbox,
    Limits,
    Process,
    SandboxPool,
    allow_new_sandboxes,
    drain_removals,
    remove_live_containers,
    tar_files,
)

if TYPE_CHECKING:
    import docker

Log = Callable[[str], None]

CONTAINER_LIB = Path(__file__).parent / "_container"
INFRA_ATTEMPTS = 2


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class EvalUnit:
    """Everything needed to evaluate one prediction on one task, and where to write."""

    instance: TaskInstance
    prediction: Prediction
    spec: EnvSpec
    image: str
    bundle: Path
    out_dir: Path
    timeout: float
    test_files: tuple[str, ...] | None = None
    """Run these test files whole (the miner's before/after runs); default: the listed ids."""

    @property
    def selected_ids(self) -> list[str]:
        return [*self.instance.FAIL_TO_PASS, *self.instance.PASS_TO_PASS]

    @property
    def runner(self) -> TestRunner:
        return get_runner(self.spec.runner)

    @property
    def files_to_run(self) -> list[str]:
        if self.test_files is not None:
            return list(self.test_files)
        return self.runner.test_files(self.selected_ids)


# --- pure preparation ---------------------------------------------------------


def precheck(prediction: Prediction) -> Verdict | None:
    """Verdicts that need no container: an empty patch, or one unsafe to apply."""
    verdict = Verdict(
        instance_id=prediction.instance_id,
        model_name_or_path=prediction.model_name_or_path,
        status=Status.EMPTY_PATCH,
        patch_sha256=sha256_text(prediction.model_patch),
        finished_at=_now(),
    )
    if not prediction.model_patch.strip():
        return verdict
    try:
        check_test_infrastructure(inspect_patch(prediction.model_patch))
    except PatchRejected as exc:
        return verdict.model_copy(
            update={"status": Status.PATCH_FAILED, "error": f"patch rejected: {exc}"}
        )
    return None


def test_files(test_ids: Iterable[str], runner: str = "pytest") -> list[str]:
    """The files to hand the runner: the file part of each id, deduplicated, in order."""
    return get_runner(runner).test_files(test_ids)


def prepare_config(instance: TaskInstance, prediction: Prediction) -> dict[str, object]:
    """Instructions for the in-sandbox prepare step: the patches and which files to revert."""
    has_patch = bool(prediction.model_patch.strip())
    model_paths = inspect_patch(prediction.model_patch).paths if has_patch else ()
    test_paths = inspect_patch(instance.test_patch).paths if instance.test_patch.strip() else ()
    always = [p for p in model_paths if is_test_infrastructure(p) and not shared_config(p)]
    always += [p for p in model_paths if p in test_paths and p not in always]
    # Shared config files anywhere (a test directory included) keep non-test edits.
    shared = [p for p in model_paths if shared_config(p) and p not in always]
    return {
        "workdir": "/testbed",
        "model_patch": prediction.model_patch if has_patch else None,
        "test_patch": instance.test_patch if instance.test_patch.strip() else None,
        "vetted_paths": list(model_paths),
        "revert_always": always,
        "revert_if_test_config_changed": shared,
        "test_patch_paths": list(test_paths),
    }


# pytest's pinning lives with its runner (evalkit.runners.python); kept here by name.
EMPTY_PYTEST_CONFIG = _python_runner.EMPTY_CONFIG
config_candidates = _python_runner.config_candidates
pinned_config = _python_runner.pinned_config


def render_eval_script(unit: EvalUnit, config: str | None = None) -> str:
    from evalkit.images import harness_templates

    runner = unit.runner
    if config is None:
        config = runner.pinned_config({}, unit.files_to_run)
    return (
        harness_templates()
        .get_template("eval.sh.j2")
        .render(
            evalkit_version=__version__,
            instance_id=unit.instance.instance_id.replace("\n", " "),
            model=unit.prediction.model_name_or_path.replace("\n", " "),
            pre_test=list(unit.spec.pre_test),
            runner=runner.name,
            config=shlex.quote(config),
            test_command=runner.test_command(
                config=config,
                test_files=unit.files_to_run,
                extra_args=list(unit.spec.pytest_args),
                timeout=int(unit.timeout),
            ),
        )
    )


# --- the unit of work ---------------------------------------------------------


@functools.cache
def _container_lib() -> dict[str, bytes]:
    """The in-sandbox scripts, read once per process rather than once per unit."""
    return {
        f"lib/{p.name}": p.read_bytes()
        for p in sorted(CONTAINER_LIB.iterdir())
        if p.suffix in (".py", ".mjs", ".cjs") and p.name != "__init__.py"
    }


class SandboxRun(NamedTuple):
    execution: Execution
    evidence: str
    """What evalkit's collector received (JSON; see :func:`evalkit.grading.parse_evidence`)."""
    output: bytes
    """pytest's terminal output, capped (head and tail)."""
    eval_script: str = ""
    """The rendered eval script (returned as data: the driver writes every artifact)."""


class SandboxSource(Protocol):
    """Where a unit's sandbox comes from: a pool of spares, or one labelled per attempt."""

    def acquire(self, image: str, limits: Limits) -> DockerSandbox: ...


@dataclass
class Staged:
    """A unit's fresh sandbox made ready up to, not including, running patched code:
    tree copied, prepared (patches applied, tampering reverted), collector listening.

    Staging runs no code from the patch or the checkout, so it may happen while
    another unit's tests run (see :class:`ThreadExecutor`); the sandbox is this unit's
    own and is used once.
    """

    box: DockerSandbox
    execution: Execution
    eval_script: str
    config: dict[str, object]
    collector: Process | None = None
    test: Process | None = None
    """The test command, started ahead and waiting for its instructions
    (:attr:`~evalkit.runners.TestRunner.starts_ahead`)."""
    early: SandboxRun | None = None
    """Prepare's result needs no test run (the patch or the test patch did not apply)."""
    seconds: float = 0.0
    """Time spent staging (not waiting to be used)."""

    def discard(self) -> None:
        """Remove the sandbox unused (the run stopped before its turn)."""
        for proc in (self.collector, self.test):
            if proc is not None:
                proc.close()
        self.box.close(wait=False)


def unit_limits(unit: EvalUnit) -> Limits:
    """The sandbox limits of ``unit``: its environment's, living past its test timeout."""
    return Limits(
        memory=unit.spec.memory,
        cpus=unit.spec.cpus,
        pids=unit.spec.pids,
        lifetime_s=unit.timeout + 1200,
    )


def stage_unit(
    unit: EvalUnit, client: docker.DockerClient, pool: SandboxSource | None = None
) -> Staged:
    """Make ``unit``'s sandbox ready for its test step; :class:`InfraError` on trouble
    (nothing of the patch has run yet, so any failure here is the infrastructure's)."""
    started = time.monotonic()
    repository = Repository(unit.bundle)
    files = unit.files_to_run
    runner = unit.runner
    config_files = repository.read_files(unit.instance.base_commit, runner.config_candidates(files))
    eval_script = render_eval_script(unit, runner.pinned_config(config_files, files))
    config = prepare_config(unit.instance, unit.prediction)
    # Harness files belong to root in a root-owned tmpfs: the test user can read but
    # not rewrite them. The checkout belongs to the test user.
    lib = tar_files({**_container_lib(), "eval.sh": eval_script, "pytest.ini": "[pytest]\n"}, uid=0)
    tree = repository.tree_tar(unit.instance.base_commit, ".")
    limits = unit_limits(unit)
    execution = Execution(image=unit.image)
    box = (
        pool.acquire(unit.image, limits)
        if pool is not None
        else DockerSandbox(client, unit.image, limits, label=unit.out_dir.parent.parent.name)
    )
    staged = Staged(box, execution, eval_script, config)
    collector: Process | None = None
    try:
        box.put_archive("/evalkit", lib, user="0:0")
        # The collector starts while prepare runs (it needs nothing prepare does); it is
        # only asked whether it listens once prepare is done.
        nonce = secrets.token_hex(16)
        channel = f"/evalkit/r/{secrets.token_hex(8)}.sock"
        collector = box.start(
            ["/opt/venv/bin/python", "-I", "-S", "/evalkit/lib/collector.py"],
            user=f"{COLLECTOR_UID}:{COLLECTOR_UID}",
        )
        collector.write(json.dumps({"socket": channel, "nonce": nonce}).encode() + b"\n")
        # One exec unpacks the tree and prepares it: the tar follows prepare's JSON line.
        prep = box.exec(
            ["bash", "/evalkit/eval.sh", "prepare"],
            input=json.dumps({**config, "tree": True}).encode("utf-8", "surrogateescape")
            + b"\n"
            + tree,
            timeout=600,
        )
        if prep.timed_out or prep.exit_code != 0:
            raise InfraError(f"prepare step failed (exit {prep.exit_code}): {prep.output[-300:]!r}")
        try:
            prepared = json.loads(prep.output.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise InfraError(f"prepare step printed no result: {prep.output[-300:]!r}") from None
        if prepared.get("infra_error"):
            raise InfraError(str(prepared["infra_error"]))
        execution.apply_method = prepared.get("apply_method")
        execution.apply_error = prepared.get("apply_error") or prepared.get("patch_error")
        execution.tampered_files = list(prepared.get("tampered_files", []))
        if execution.apply_error is None and prepared.get("test_patch_error"):
            execution.task_error = (
                f"the task's test_patch does not apply: {prepared['test_patch_error']}"
            )
        if execution.apply_error is not None or execution.task_error is not None:
            collector.close()
            box.close(wait=False)
            execution.duration_s = round(time.monotonic() - started, 3)
            staged.early = SandboxRun(execution, "", b"", eval_script)
            return staged
        if collector.read_line(60).strip() != b"READY":
            raise InfraError("the evidence collector did not start")
        config["socket"], config["nonce"] = channel, nonce
        staged.collector = collector
        if runner.starts_ahead and not unit.spec.pre_test:
            # It loads the runner from the image, then waits for its instructions: no
            # code of the checkout runs before its turn.
            staged.test = box.start(["bash", "/evalkit/eval.sh", "test"], env=_test_env(unit))
    except BaseException:
        for proc in (collector, staged.test):
            if proc is not None:
                proc.close()
        box.close(wait=False)
        raise
    staged.seconds = time.monotonic() - started
    return staged


def _test_env(unit: EvalUnit) -> dict[str, str]:
    return {"HOME": "/tmp", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", **dict(unit.spec.env)}


def _run_in_sandbox(
    unit: EvalUnit,
    client: docker.DockerClient,
    pool: SandboxSource | None = None,
    *,
    staged: Future[Staged] | None = None,
    on_staged: Callable[[], None] | None = None,
) -> SandboxRun:
    """Execute one unit; returns the raw execution facts, the evidence and the output.

    ``staged``: the unit's sandbox, staged ahead (else staged here); ``on_staged`` is
    called once it is ready, just before the test step (the executor stages the next
    unit meanwhile).

    Raises :class:`InfraError` only for trouble before any patched code ran; once the
    test step has started, whatever goes wrong is recorded on the execution instead,
    since the patch may have caused it.
    """
    ready = staged.result() if staged is not None else stage_unit(unit, client, pool)
    if on_staged is not None:
        on_staged()
    if ready.early is not None:
        return ready.early
    started = time.monotonic()
    box, execution, collector = ready.box, ready.execution, ready.collector
    assert collector is not None
    instructions = {
        "socket": ready.config["socket"],
        "nonce": ready.config["nonce"],
        "select": unit.selected_ids if unit.test_files is None else [],
        "patched": ready.config["vetted_paths"],
        "runner": unit.runner.name,
    }
    line = json.dumps(instructions).encode() + b"\n"
    try:
        # From here on the patched code runs: what goes wrong is not the infrastructure's.
        try:
            if ready.test is not None:
                run = box.complete(ready.test, line, timeout=unit.timeout + 60)
            else:
                run = box.exec(
                    ["bash", "/evalkit/eval.sh", "test"],
                    env=_test_env(unit),
                    input=line,
                    timeout=unit.timeout + 60,
                )
            execution.test_duration_s = round(run.duration_s, 3)
            execution.test_exit_code = run.exit_code
            execution.timed_out = run.timed_out or (
                run.exit_code == 137 and run.duration_s >= unit.timeout - 1
            )
            output = run.output
            evidence = _collect_evidence(box, collector)
        except InfraError as exc:
            _raise_if_engine_down(client)
            execution.sandbox_error = f"the sandbox failed during the test run: {exc}"
            output, evidence = b"", b""
    finally:
        box.close(wait=False)
    execution.session_finished = b'"session_finish"' in evidence
    execution.duration_s = round(ready.seconds + time.monotonic() - started, 3)
    return SandboxRun(execution, evidence.decode("utf-8", "replace"), output, ready.eval_script)


EVIDENCE_CAP = 32 * 1024 * 1024


def _collect_evidence(box: DockerSandbox, collector: Process) -> bytes:
    """The collector's record, read only once no test-user process is alive: no
    survivor of the run (a detached child, an atexit writer) can add to it afterwards.

    The collector (a user the tests cannot signal) answers whether any survived; only
    then does evalkit spend an exec on killing them (``kill -9 -1`` as the test user).
    """
    with contextlib.suppress(OSError):  # a dead sandbox: nothing to read
        collector.write(b"finish\n")
    if collector.peek(15, len(b"survivors")) == b"survivors":
        collector.read_line(1)
    elif collector.peek(0, 1):
        return collector.finish(timeout=15, cap=EVIDENCE_CAP)
    box.exec(["/bin/sh", "-c", "kill -9 -1; kill -9 -1; exit 0"], timeout=30)
    return collector.finish(timeout=15, cap=EVIDENCE_CAP)


def _raise_if_engine_down(client: docker.DockerClient) -> None:
    """An engine that stopped answering is infrastructure; a sandbox that died is not."""
    try:
        client.ping()
    except Exception as exc:
        raise InfraError(f"the Docker engine stopped answering: {exc}") from None


class Executed(NamedTuple):
    execution: Execution
    report: str
    """The collector's evidence (see :func:`evalkit.grading.parse_evidence`)."""
    output: str
    """pytest's terminal output (capped)."""
    attempts: int


@dataclass(frozen=True)
class UnitOutput:
    """Everything one unit produced, returned as data (picklable): wherever the unit ran,
    only the driver writes it, with :func:`write_unit_output`."""

    verdict: Verdict
    execution: Execution | None = None
    """None when nothing ran: a precheck verdict, or infrastructure trouble."""
    evidence: str = ""
    test_output: bytes = b""
    eval_script: str = ""

    @property
    def ran(self) -> bool:
        return self.execution is not None


def run_unit(
    unit: EvalUnit,
    client: docker.DockerClient,
    sandboxes: SandboxSource | None = None,
    *,
    attempt: int = 1,
    staged: Future[Staged] | None = None,
    on_staged: Callable[[], None] | None = None,
) -> UnitOutput:
    """One attempt at one unit, writing nothing: raises :class:`InfraError` for trouble
    before any patched code ran, and the executor decides whether to try again.
    ``staged`` / ``on_staged``: see :func:`_run_in_sandbox`.

    No :func:`precheck` here: the miner runs the empty patch on purpose (its "before").
    """
    execution, evidence, output, script = _run_in_sandbox(
        unit, client, sandboxes, staged=staged, on_staged=on_staged
    )
    verdict = grade(
        unit.instance,
        execution,
        evidence,
        output.decode("utf-8", "replace"),
        model_name_or_path=unit.prediction.model_name_or_path,
        patch=unit.prediction.model_patch,
        selected=unit.test_files is None,
    ).model_copy(update={"attempts": attempt, "finished_at": _now()})
    return UnitOutput(verdict, execution, evidence, output, script)


def run_unit_with_retries(
    unit: EvalUnit,
    client: docker.DockerClient,
    sandboxes: SandboxSource | None = None,
    *,
    attempts: int = INFRA_ATTEMPTS,
    staged: Future[Staged] | None = None,
    on_staged: Callable[[], None] | None = None,
) -> UnitOutput:
    """The local retry policy: infrastructure trouble is retried, then recorded as an
    infra verdict; a model's failure is a verdict and never retried. A sandbox staged
    ahead serves the first attempt only; a retry stages a fresh one."""
    error = "not run"
    for attempt in range(1, attempts + 1):
        try:
            return run_unit(
                unit, client, sandboxes, attempt=attempt, staged=staged, on_staged=on_staged
            )
        except InfraError as exc:
            error = str(exc)
        staged = None
    return UnitOutput(infra_verdict(unit.prediction, error, attempts=attempts))


def write_unit_output(unit: EvalUnit, output: UnitOutput) -> None:
    """Save a unit's artifacts in its directory (on the driver; overwrites a retry's)."""
    out = unit.out_dir
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / PATCH_FILE, unit.prediction.model_patch)
    if output.eval_script:
        write_atomic(out / EVAL_SCRIPT_FILE, output.eval_script)
    if output.execution is not None:
        write_atomic(out / TEST_OUTPUT_FILE, output.test_output)
        write_model(out / EXECUTION_FILE, output.execution)
        write_atomic(out / TEST_REPORT_FILE, output.evidence)
        write_model(out / VERDICT_FILE, output.verdict)


def executed(output: UnitOutput) -> Executed:
    """The raw execution facts of a unit that ran, or its :class:`InfraError`."""
    if output.execution is None:
        raise InfraError(output.verdict.error or "the unit did not run")
    return Executed(
        output.execution,
        output.evidence,
        output.test_output.decode("utf-8", "replace"),
        output.verdict.attempts,
    )


def execute_unit(
    unit: EvalUnit, client: docker.DockerClient | None = None, pool: SandboxPool | None = None
) -> Executed:
    """Run one unit here in a fresh sandbox and save its raw outputs; no grading.

    Infrastructure trouble is retried once, then raised as :class:`InfraError`.
    """
    from evalkit.sandbox import docker_client

    output = run_unit_with_retries(unit, client or docker_client(), pool)
    write_unit_output(unit, output)
    return executed(output)


def evaluate_unit(
    unit: EvalUnit, client: docker.DockerClient | None = None, pool: SandboxPool | None = None
) -> Verdict:
    """Evaluate one prediction on one task here: inputs in, one verdict out. Never raises
    for infrastructure trouble: it is retried, then recorded as ``error`` + ``infra_failure``."""
    from evalkit.sandbox import docker_client

    early = precheck(unit.prediction)
    if early is not None:
        return early
    output = run_unit_with_retries(unit, client or docker_client(), pool)
    write_unit_output(unit, output)
    return output.verdict


def infra_verdict(prediction: Prediction, reason: str, *, attempts: int = 1) -> Verdict:
    return Verdict(
        instance_id=prediction.instance_id,
        model_name_or_path=prediction.model_name_or_path,
        status=Status.ERROR,
        infra_failure=True,
        error=reason,
        patch_sha256=sha256_text(prediction.model_patch),
        attempts=attempts,
        finished_at=_now(),
    )


# --- environments ---------------------------------------------------------------


def resolve_environment(
    spec_file: SpecFile, instance: TaskInstance, repository: Repository
) -> tuple[EnvSpec, str]:
    """The instance's environment spec and its image build key (from its dependency files)."""
    from evalkit.node_env import NODE_FILES, build_files

    files = read_dependency_files(lambda paths: repository.read_files(instance.env_commit, paths))
    files.update(repository.read_files(instance.env_commit, NODE_FILES))
    date = repository.commit_date(instance.env_commit)
    spec = resolve_spec(spec_file, instance.repo, instance.instance_id, files, date)
    if get_runner(spec.runner).ecosystem == "node":
        return spec, spec.build_key(build_files(files))
    # Python keys hash the Python dependency files only, as before Node support.
    return spec, spec.build_key({k: v for k, v in files.items() if k not in NODE_FILES})


def build_environment(
    client: docker.DockerClient,
    instance: TaskInstance,
    spec: EnvSpec,
    key: str,
    repository: Repository,
    *,
    ca_bundle: Path | None,
    log: Log = print,
    build_log: Path | None = None,
) -> str:
    """Build (or reuse) the environment image; retried once, then :class:`InfraError`."""
    return build_environment_image(
        client, instance, spec, key, repository, ca_bundle=ca_bundle, log=log, build_log=build_log
    ).tag


def build_environment_image(
    client: docker.DockerClient,
    instance: TaskInstance,
    spec: EnvSpec,
    key: str,
    repository: Repository,
    *,
    ca_bundle: Path | None,
    substitute_python: bool = False,
    log: Log = print,
    build_log: Path | None = None,
) -> EnvironmentImage:
    """:func:`build_environment`, describing the image (Python, date bound, lock)."""
    from evalkit.images import ensure_environment

    error = InfraError("not built")
    for _ in range(INFRA_ATTEMPTS):
        try:
            return ensure_environment(
                client,
                repo=instance.repo,
                spec=spec,
                key=key,
                source_tar=lambda: repository.tree_tar(instance.env_commit, "."),
                ca_bundle=ca_bundle,
                substitute_python=substitute_python,
                log=log,
                build_log=build_log,
            )
        except InfraError as exc:
            error = exc
            log(f"warning: {exc}")
    raise error


# --- executors ----------------------------------------------------------------


class Executor(Protocol):
    """Runs units and yields each one's output as it finishes (any order), exactly once.

    Executors return outputs as data and write nothing: :func:`_drive` writes them on
    the driver. ``builds_images``: units may arrive with only their build key as
    ``image`` (the executor builds on the machine that runs them), so the driver needs
    no Docker engine of its own.
    """

    builds_images: bool

    def run(self, units: list[EvalUnit]) -> Iterator[tuple[EvalUnit, UnitOutput]]: ...

    def execute(self, unit: EvalUnit) -> UnitOutput:
        """One unit, blocking (safe to call from several threads): the miner's runs."""
        ...

    def close(self) -> None:
        """Release what the executor holds (a cluster connection); idempotent."""
        ...


class ThreadExecutor:
    """Local parallelism: containers do the work, threads only wait on them.

    A spare container per image is started ahead of need, finished ones are removed
    in the background, and while a unit's tests run the next unit's sandbox is staged
    (:func:`stage_unit`: tree, prepare, collector; no patched code), so ``docker run``,
    ``docker rm`` and staging stay off the critical path.
    """

    builds_images = False

    def __init__(self, workers: int, client: docker.DockerClient | None = None, label: str = "1"):
        self.workers = max(1, workers)
        self.client = client
        self.label = label

    def _client(self) -> docker.DockerClient:
        from evalkit.sandbox import docker_client

        if self.client is None:
            self.client = docker_client()
        return self.client

    def execute(self, unit: EvalUnit) -> UnitOutput:
        return run_unit_with_retries(unit, self._client())

    def close(self) -> None:
        pass

    def run(self, units: list[EvalUnit]) -> Iterator[tuple[EvalUnit, UnitOutput]]:
        client = self._client()
        allow_new_sandboxes()
        sandboxes = SandboxPool(
            client, self.label, Counter((u.image, unit_limits(u)) for u in units)
        )
        threads = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="evalkit")
        stager = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="evalkit-stage")
        pending: dict[Future[UnitOutput], EvalUnit] = {}
        queue = deque(units)
        # Units whose sandbox is being staged while earlier units' tests run: at most one
        # per worker, each started when a unit's tests start (never two stagings racing
        # for the first unit's critical path).
        ahead: deque[tuple[EvalUnit, Future[Staged]]] = deque()
        lock = threading.Lock()
        stopping = threading.Event()

        def stage_next() -> None:
            with lock:
                if queue and len(ahead) < self.workers and not stopping.is_set():
                    unit = queue.popleft()
                    ahead.append((unit, stager.submit(stage_unit, unit, client, sandboxes)))

        def fill() -> None:
            with lock:
                while len(pending) < self.workers and (ahead or queue):
                    unit, staged = ahead.popleft() if ahead else (queue.popleft(), None)
                    future = threads.submit(
                        run_unit_with_retries,
                        unit,
                        client,
                        sandboxes,
                        staged=staged,
                        on_staged=stage_next,
                    )
                    pending[future] = unit

        try:
            fill()
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                finished = [(pending.pop(f), f.result()) for f in done]
                fill()  # the next units start before the driver writes these outputs
                yield from finished
        except BaseException:
            # Interrupted: kill running sandboxes now so workers return at once.
            stopping.set()
            remove_live_containers(stop=True)
            raise
        finally:
            stopping.set()
            for future in pending:
                future.cancel()
            threads.shutdown(wait=True, cancel_futures=True)
            stager.shutdown(wait=True, cancel_futures=True)
            for _, staged in ahead:
                if not staged.cancelled() and staged.exception() is None:
                    staged.result().discard()
            sandboxes.close()
            drain_removals()


# --- the run ------------------------------------------------------------------


class RunOutcome(NamedTuple):
    run_dir: Path
    summaries: dict[str, ModelSummary]
    problems: list[Problem]
    verdicts: list[Verdict]
    evaluated: int
    """How many units ran in this invocation (the rest were resumed)."""


@dataclass
class _Plan:
    units: list[EvalUnit] = field(default_factory=list)
    immediate: list[Verdict] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    skipped: int = 0


def summarize(
    verdicts: Iterable[Verdict], instance_ids: Iterable[str], submitted: dict[str, list[str]]
) -> dict[str, ModelSummary]:
    """SWE-bench's per-model summary keys, plus evalkit's infra and tamper counts."""
    verdicts = list(verdicts)
    # A broken task (status error, not infrastructure) is broken for every model: it
    # leaves every denominator.
    broken = {v.instance_id for v in verdicts if is_task_error(v)}
    total = len(set(instance_ids) - broken)
    by_model: dict[str, list[Verdict]] = {m: [] for m in submitted}
    for verdict in verdicts:
        by_model.setdefault(verdict.model_name_or_path, []).append(verdict)
    summaries = {}
    for model, items in sorted(by_model.items()):

        def ids(pred: Callable[[Verdict], bool], items: list[Verdict] = items) -> list[str]:
            return sorted(v.instance_id for v in items if pred(v))

        completed = ids(lambda v: v.status in (Status.RESOLVED, Status.UNRESOLVED))
        lists = {
            "submitted_ids": sorted(submitted.get(model, [])),
            "completed_ids": completed,
            "resolved_ids": ids(lambda v: v.status is Status.RESOLVED),
            "unresolved_ids": ids(lambda v: v.status is Status.UNRESOLVED),
            "empty_patch_ids": ids(lambda v: v.status is Status.EMPTY_PATCH),
            "error_ids": ids(lambda v: v.status is Status.ERROR),
            "patch_failed_ids": ids(lambda v: v.status is Status.PATCH_FAILED),
            "infra_failure_ids": ids(lambda v: v.infra_failure),
            "timed_out_ids": ids(lambda v: v.timed_out),
            "tampered_ids": ids(lambda v: bool(v.tampered_files)),
            "task_error_ids": ids(is_task_error),
        }
        counts = {k.replace("_ids", "_instances"): len(v) for k, v in lists.items()}
        summaries[model] = ModelSummary.model_validate(
            {"total_instances": total, **counts, **lists}
        )
    return summaries


def is_task_error(verdict: Verdict) -> bool:
    """The task is broken here (not the agent's failure, not the infrastructure's)."""
    return verdict.status is Status.ERROR and not verdict.infra_failure


TASK_ERROR_PREFIX = "task error: the gold patch does not pass in this environment"


def first_error_line(output: str) -> str:
    """The line that says why a run failed: the first exception pytest reported."""
    patterns = (
        r"^E\s+((?:[\w.]+\.)?\w*(?:Error|Exception|Exit)\b.*)$",
        r"^((?:[\w.]+\.)?\w*(?:Error|Exception)\b: .*)$",
        r"^(ERROR (?:collecting|at setup of) .*)$",
        r"^(FAILED .*)$",
    )
    for pattern in patterns:
        match = re.search(pattern, output, re.MULTILINE)
        if match:
            return match.group(1).strip()[:300]
    return ""


def gold_result(verdict: Verdict, output: str, run_id: str) -> GoldResult:
    """One gold verdict as a gold-check entry, with the cause of a failure."""
    passed = verdict.status is Status.RESOLVED
    cause = ""
    if not passed:
        error_lines = (verdict.error or "").strip().splitlines()
        cause = first_error_line(output) or (error_lines[0][:300] if error_lines else "")
        if not cause:
            failing = [
                t
                for group in verdict.tests.values()
                for t, o in group.items()
                if o.value not in ("passed", "xpassed", "xfailed")
            ]
            cause = f"{len(failing)} listed test(s) fail, e.g. {failing[0]}" if failing else ""
        cause = cause or verdict.status.value
    return GoldResult(
        passed=passed, status=verdict.status.value, cause=cause, run_id=run_id, checked_at=_now()
    )


def read_gold_check(tasks_dir: Path) -> GoldCheck | None:
    path = tasks_dir / GOLD_CHECK_FILE
    if not path.is_file():
        return None
    return read_model(path, GoldCheck)


def _record_gold_check(
    task_set: TaskSet, run: RunDir, verdicts: list[Verdict], log: Log
) -> GoldCheck:
    """Merge this run's gold verdicts into the task set's ``gold-check.json``."""
    previous = read_gold_check(task_set.root)
    sha = task_set.sha256()
    results = dict(previous.results) if previous and previous.tasks_sha256 == sha else {}
    for verdict in verdicts:
        if verdict.model_name_or_path != GOLD_MODEL or verdict.infra_failure:
            continue
        out = run.unit(GOLD_MODEL, verdict.instance_id) / TEST_OUTPUT_FILE
        output = _read_text(out) if out.exists() else ""
        results[verdict.instance_id] = gold_result(verdict, output, run.run_id)
    check = GoldCheck(tasks_sha256=sha, results=results)
    try:
        write_model(task_set.root / GOLD_CHECK_FILE, check)
    except OSError as exc:
        log(f"warning: cannot record the gold check in {task_set.root}: {exc}")
    return check


def _mark_task_errors(verdicts: list[Verdict], check: GoldCheck | None) -> list[Verdict]:
    """Every verdict on a task whose gold patch fails becomes that task's error."""
    failed = check.failed() if check is not None else {}
    marked = []
    for verdict in verdicts:
        result = failed.get(verdict.instance_id)
        if result is not None and not verdict.infra_failure and not is_task_error(verdict):
            verdict = verdict.model_copy(
                update={
                    "status": Status.ERROR,
                    "resolution": None,
                    "error": f"{TASK_ERROR_PREFIX}: {result.cause}",
                }
            )
        marked.append(verdict)
    return marked


def _write_report(
    run_dir: Path,
    verdicts: list[Verdict],
    instance_ids: Iterable[str],
    submitted: dict[str, list[str]],
) -> dict[str, ModelSummary]:
    summaries = summarize(verdicts, instance_ids, submitted)
    payload = {m: s.model_dump() for m, s in summaries.items()}
    write_atomic(run_dir / REPORT_FILE, json.dumps(payload, indent=2) + "\n")
    return summaries


def _read_results(run: RunDir) -> tuple[list[Verdict], list[Problem]]:
    """The run's verdicts so far, and a problem for each line that could not be read:
    the line stays in ``results.jsonl`` and a copy goes to ``results.rejected.jsonl``."""
    repair_jsonl(run.results)
    scan = scan_verdicts(run.results)
    keep_aside(scan.bad, run.rejected)
    problems = [
        Problem(
            str(bad.path),
            bad.line,
            f"{bad.reason}; left in place (copy in {RESULTS_REJECTED_FILE})"
            + ("" if bad.newer else ": fix or delete the line"),
        )
        for bad in scan.bad
    ]
    return scan.verdicts, problems


@dataclass(frozen=True)
class EvalConfig:
    """How to evaluate, apart from what: recorded, resolved, in the run manifest."""

    workers: int = 1
    timeout: float | None = None
    """Per-unit test timeout; None: each task's spec decides."""
    instance_ids: tuple[str, ...] | None = None
    ca_bundle: Path | None = None
    substitute_python: bool = False


def evaluate(
    tasks_dir: Path,
    predictions_path: Path | None,
    run_id: str,
    *,
    runs_dir: Path = Path("runs"),
    workers: int = 1,
    timeout: float | None = None,
    instance_ids: list[str] | None = None,
    gold: bool = False,
    ca_bundle: Path | None = None,
    log: Log = print,
    progress: bool = True,
    executor: Executor | str | None = None,
    ray_address: str | None = None,
    substitute_python: bool = False,
) -> RunOutcome:
    """Evaluate a predictions file (or ``gold``) on a task set directory; resumable by
    ``run_id``. Loads the files, then :func:`evaluate_predictions` does the work.

    ``executor``: an :class:`Executor`, or a name (``"thread"``, the default, or
    ``"ray"`` with ``ray_address``; see :mod:`evalkit.executors`).
    With ``gold``, each task's result goes to the task set's ``gold-check.json``; a
    task whose gold patch fails is a task error for every model (never the agent's).
    ``substitute_python``: where a spec's Python cannot be had, use the nearest one
    provided, recorded on every result, instead of stopping.
    """
    run = RunDir.of(runs_dir, run_id)
    if predictions_path is None and not gold:
        raise UsageError("give --predictions FILE, or --gold to evaluate the tasks' own fixes")
    task_set = load_task_set(tasks_dir)
    predictions: list[Prediction] = []
    problems: list[Problem] = []
    if predictions_path is not None:
        predictions, problems = load_predictions(predictions_path, set(task_set.instances))
    return evaluate_predictions(
        task_set,
        predictions,
        run,
        EvalConfig(
            workers=workers,
            timeout=timeout,
            instance_ids=tuple(instance_ids) if instance_ids else None,
            ca_bundle=ca_bundle,
            substitute_python=substitute_python,
        ),
        gold=gold,
        problems=problems,
        source="gold" if predictions_path is None else str(predictions_path.resolve()),
        log=log,
        progress=progress,
        executor=executor,
        ray_address=ray_address,
    )


def evaluate_predictions(
    task_set: TaskSet,
    predictions: Sequence[Prediction],
    run: RunDir,
    config: EvalConfig = EvalConfig(),
    *,
    gold: bool = False,
    problems: Sequence[Problem] = (),
    source: str = "in memory",
    log: Log = print,
    progress: bool = True,
    executor: Executor | str | None = None,
    ray_address: str | None = None,
) -> RunOutcome:
    """Evaluate predictions (values, not files) on a task set into ``run``; resumable.

    The library call behind ``evalkit evaluate`` and the bake-off's grading. ``gold``
    adds the tasks' own fixes; ``source`` is what the manifest records as the
    predictions' origin; ``problems`` (from loading) are passed through.
    """
    from evalkit.images import resolve_ca_bundle
    from evalkit.sandbox import docker_client, install_signal_cleanup, remove_stale

    run_id = run.run_id
    tasks_dir = task_set.root
    workers, timeout = config.workers, config.timeout
    ca_bundle, substitute_python = config.ca_bundle, config.substitute_python
    selected = _select(task_set, list(config.instance_ids) if config.instance_ids else None)
    problems = list(problems)
    predictions = list(predictions)
    if gold:
        predictions += gold_predictions(task_set)
    predictions = [p for p in predictions if p.instance_id in selected]
    check = read_gold_check(tasks_dir)
    if predictions and not gold:
        problems += _gold_check_warning(check, task_set, selected)
    submitted: dict[str, list[str]] = {}
    for p in predictions:
        submitted.setdefault(p.model_name_or_path, []).append(p.instance_id)

    # The lock comes before anything in the run is read or written, and is held to the end.
    with run.lock() as lock:
        if lock.previous is not None:
            log(f"taking over run {run_id}: its last process (pid {lock.previous.pid}) died")
        _check_same_task_set(run, task_set)
        finished, bad_lines = _read_results(run)
        problems += bad_lines
        done = {v.key: v for v in finished if not v.infra_failure}
        ca = resolve_ca_bundle(ca_bundle)
        plan = _plan(task_set, predictions, done, run, timeout, log)
        problems += plan.problems

        client = None
        images: dict[str, str] = {}
        environments: dict[str, EnvironmentImage] = {}
        previous = run.read_manifest()
        if previous is not None:
            environments.update({e.tag: e for e in previous.environments})
        runner = None if executor is None or isinstance(executor, str) else executor
        on_nodes = executor == "ray" or (runner is not None and runner.builds_images)
        if plan.units:
            install_signal_cleanup()
            if on_nodes:
                # Built where the units run, from the same recipe and key (docs/scale-out.md).
                for u in plan.units:
                    images[u.instance.repo] = image_tag(u.instance.repo, u.image)
            else:
                client = docker_client()
                # Any invocation reaps what nobody owns any more: expired sandboxes, and those
                # of dead evalkit processes on this host, whatever their run.
                remove_stale(client)
                plan.units, failed = _build_images(
                    plan.units, client, ca, run.path, images, log, environments, substitute_python
                )
                plan.immediate += failed
        created = runner is None  # a caller's executor stays open for its next run
        if runner is None:
            from evalkit.executors import make_executor

            runner = make_executor(
                executor if isinstance(executor, str) else "thread",
                workers=workers,
                run_id=run_id,
                client=client,
                address=ray_address,
            )
        write_model(
            run.manifest,
            RunManifest(
                run_id=run_id,
                evalkit_version=__version__,
                tasks_dir=str(tasks_dir.resolve()),
                tasks_sha256=task_set.sha256(),
                predictions=source,
                timeout_s=timeout or 0.0,
                workers=workers,
                created_at=_now(),
                images=images,
                environments=list(environments.values()),
            ),
        )
        if plan.immediate:
            append_jsonl(run.results, plan.immediate)
        if plan.skipped:
            log(f"resuming {run_id}: {plan.skipped} finished result(s) kept")
        try:
            evaluated = _drive(runner, plan.units, run.results, progress, log)
        finally:
            if created:
                runner.close()
        verdicts = [v for v in compact_verdicts(run.results).verdicts if v.instance_id in selected]
        if gold:
            check = _record_gold_check(task_set, run, verdicts, log)
        verdicts = _settle(run, verdicts, check, environments)
        summaries = _write_report(run.path, verdicts, selected, submitted)
    return RunOutcome(run.path, summaries, problems, verdicts, evaluated)


def _gold_check_warning(
    check: GoldCheck | None, task_set: TaskSet, selected: set[str]
) -> list[Problem]:
    """One warning when the selected tasks have no passed gold check on record."""
    if check is not None and check.tasks_sha256 == task_set.sha256():
        unchecked = selected - set(check.results)
        if not unchecked:
            return []
        what = f"{len(unchecked)} task(s) have no gold check"
    else:
        what = "the task set has no gold check" if check is None else "the gold check is stale"
    return [
        Problem(
            str(task_set.root),
            None,
            f"{what}: a broken environment would be graded as the agent's failure; "
            f"run `evalkit tasks validate {task_set.root}` first",
            warning=True,
        )
    ]


def _settle(
    run: RunDir,
    verdicts: list[Verdict],
    check: GoldCheck | None,
    environments: dict[str, EnvironmentImage],
) -> list[Verdict]:
    """Final facts on each verdict: task errors from the gold check, the substituted
    Python of its image. Changed verdicts are appended (the newest line wins)."""
    substituted = {t: e.python_substituted for t, e in environments.items() if e.python_substituted}
    marked = _mark_task_errors(verdicts, check)
    if substituted:
        for index, verdict in enumerate(marked):
            execution = run.unit(verdict.model_name_or_path, verdict.instance_id) / EXECUTION_FILE
            image = read_model(execution, Execution).image if execution.exists() else ""
            if image in substituted and verdict.python_substituted is None:
                marked[index] = verdict.model_copy(
                    update={"python_substituted": substituted[image]}
                )
    changed = [new for old, new in zip(verdicts, marked, strict=True) if new != old]
    if changed:
        append_jsonl(run.results, changed)
    return marked


def _check_same_task_set(run: RunDir, task_set: TaskSet) -> None:
    """Resuming is only sound on the same tasks and layout: otherwise a new run id."""
    previous = run.read_manifest()
    if previous is None:
        return
    run.check_layout(previous)
    if previous.tasks_sha256 and previous.tasks_sha256 != task_set.sha256():
        raise UsageError(
            f"run {run.run_id!r} was made with a different task set "
            f"({previous.tasks_dir}); use a new --run-id",
            path=str(run.manifest),
        )


def _select(task_set: TaskSet, instance_ids: list[str] | None) -> set[str]:
    if not instance_ids:
        return set(task_set.instances)
    unknown = [i for i in instance_ids if i not in task_set.instances]
    if unknown:
        raise UsageError(
            f"unknown instance id(s) {unknown[:5]} in --instance-ids (not in {task_set.root})"
        )
    return set(instance_ids)


def _plan(
    task_set: TaskSet,
    predictions: list[Prediction],
    done: dict[tuple[str, str], Verdict],
    run: RunDir,
    timeout: float | None,
    log: Log,
) -> _Plan:
    plan = _Plan()
    repos: dict[Path, Repository | Problem] = {}
    specs: dict[str, EnvSpec] = {}
    keys: dict[str, str] = {}
    for prediction in predictions:
        key = (prediction.model_name_or_path, prediction.instance_id)
        sha = sha256_text(prediction.model_patch)
        if key in done and done[key].patch_sha256 == sha:
            plan.skipped += 1
            continue
        early = precheck(prediction)
        if early is not None:
            plan.immediate.append(early)
            continue
        instance = task_set.instances[prediction.instance_id]
        bundle = task_set.bundle_path(instance)
        if bundle not in repos:
            try:
                repos[bundle] = Repository(bundle)
            except UsageError as exc:
                repos[bundle] = Problem(str(bundle), None, str(exc).split(": ", 1)[-1])
        repository = repos[bundle]
        if isinstance(repository, Problem):
            plan.problems.append(
                Problem(
                    repository.path,
                    None,
                    f"{repository.message} (needed by {instance.instance_id})",
                )
            )
            continue
        if instance.instance_id not in specs:
            missing = [
                c
                for c in {instance.base_commit, instance.env_commit}
                if not repository.has_commit(c)
            ]
            if missing:
                plan.problems.append(
                    Problem(
                        str(bundle),
                        None,
                        f"commit {missing[0]} of {instance.instance_id} is not in the bundle",
                    )
                )
                continue
            specs[instance.instance_id], keys[instance.instance_id] = resolve_environment(
                task_set.spec_file, instance, repository
            )
        spec = specs[instance.instance_id]
        plan.units.append(
            EvalUnit(
                instance=instance,
                prediction=prediction,
                spec=spec,
                image=keys[instance.instance_id],  # the build key until the image exists
                bundle=bundle,
                out_dir=run.unit(prediction.model_name_or_path, instance.instance_id),
                timeout=timeout or spec.timeout,
            )
        )
    return plan


def _build_images(
    units: list[EvalUnit],
    client: docker.DockerClient,
    ca: Path | None,
    run_dir: Path,
    images: dict[str, str],
    log: Log,
    environments: dict[str, EnvironmentImage] | None = None,
    substitute_python: bool = False,
) -> tuple[list[EvalUnit], list[Verdict]]:
    """Build each needed environment image once; units whose image fails become infra errors."""
    built: dict[tuple[str, str], str | InfraError] = {}
    ready: list[EvalUnit] = []
    failed: list[Verdict] = []
    for unit in units:
        ident = (unit.instance.repo, unit.image)
        if ident not in built:
            result: str | InfraError
            try:
                described = build_environment_image(
                    client,
                    unit.instance,
                    unit.spec,
                    unit.image,
                    Repository(unit.bundle),
                    ca_bundle=ca,
                    substitute_python=substitute_python,
                    log=log,
                    build_log=RunDir(run_dir).images_log(unit.image),
                )
                result = described.tag
                if environments is not None:
                    environments[described.tag] = described
            except InfraError as exc:
                result = exc
            built[ident] = result
            if isinstance(result, str):
                images[unit.instance.repo] = result
        outcome = built[ident]
        if isinstance(outcome, InfraError):
            failed.append(infra_verdict(unit.prediction, str(outcome), attempts=INFRA_ATTEMPTS))
        else:
            ready.append(EvalUnit(**{**unit.__dict__, "image": outcome}))
    return ready, failed


def _drive(runner: Executor, units: list[EvalUnit], results: Path, progress: bool, log: Log) -> int:
    if not units:
        return 0
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    count = 0
    with Progress(
        TextColumn("[bold]evaluate"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        disable=not progress,
        transient=False,
    ) as bar:
        task = bar.add_task("", total=len(units))
        seen: set[tuple[str, str]] = set()
        for unit, output in runner.run(units):
            verdict = output.verdict
            if verdict.key in seen:
                continue  # an executor's duplicate (a retried unit): the first one stands
            seen.add(verdict.key)
            write_unit_output(unit, output)  # artifacts first: a verdict line has its files
            append_jsonl(results, [verdict])  # written as each finishes: nothing is lost
            count += 1
            label = f"{verdict.instance_id[:60]} [{verdict.model_name_or_path[:60]}]"
            bar.update(
                task,
                advance=1,
                # Names are the user's: never rich markup (a "[/]" in one would crash the bar).
                description=f"{escape(label)} {verdict.status.value}",
            )
    return count


def regrade(run_dir: Path, tasks_dir: Path | None = None) -> RunOutcome:
    """Recompute every verdict of a run from its saved outputs, without containers.

    Every record must be readable: a bad line or file is a :class:`UsageError` naming
    it, raised before anything is rewritten, so no line is ever regraded away.
    """
    run = RunDir(run_dir)
    if not run.manifest.is_file() and not run.manifest.is_symlink():
        raise UsageError("not an evalkit run (no run.json)", path=str(run_dir))
    with run.lock():
        manifest = read_model(run.manifest, RunManifest)
        run.check_layout(manifest)
        task_set = load_task_set(tasks_dir or Path(manifest.tasks_dir))
        old = read_verdicts(run.results)
        verdicts: list[Verdict] = []
        for verdict in old:
            out = run.unit(verdict.model_name_or_path, verdict.instance_id)
            execution_path = out / EXECUTION_FILE
            instance = task_set.instances.get(verdict.instance_id)
            if instance is None or not execution_path.exists():
                verdicts.append(verdict)  # nothing ran (empty/rejected patch, infra): keep as is
                continue
            execution = read_model(execution_path, Execution)
            report, output, patch = (
                _read_text(out / name) if (out / name).exists() else ""
                for name in (TEST_REPORT_FILE, TEST_OUTPUT_FILE, PATCH_FILE)
            )
            verdicts.append(
                grade(
                    instance,
                    execution,
                    report,
                    output,
                    model_name_or_path=verdict.model_name_or_path,
                    patch=patch,
                ).model_copy(
                    update={
                        "attempts": verdict.attempts,
                        "finished_at": verdict.finished_at,
                        "patch_sha256": verdict.patch_sha256,
                    }
                )
            )
        # Regrading keeps the task set's word on broken tasks (its gold check).
        verdicts = _mark_task_errors(verdicts, read_gold_check(task_set.root))
        write_atomic(run.results, "".join(v.model_dump_json() + "\n" for v in verdicts))
        submitted: dict[str, list[str]] = {}
        for v in verdicts:
            submitted.setdefault(v.model_name_or_path, []).append(v.instance_id)
        summaries = _write_report(run.path, verdicts, task_set.instances, submitted)
    return RunOutcome(run.path, summaries, [], verdicts, 0)


def _read_text(path: Path) -> str:
    """A saved sandbox output: its bytes are the sandbox's, so undecodable ones are replaced."""
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except OSError as exc:
        raise UsageError(f"cannot read: {exc.strerror or exc}", path=str(path)) from None

"""Run one agent attempt in a sandbox, grade it in another, record it; a bake-off of many.

An attempt's container comes from the task's environment image with the checkout at
``base_commit`` (one commit, no history after it, no test or gold patch), no network,
a non-root user, no capabilities, a read-only root with capped tmpfs, and read-only
mounts of the agent pack and of the gateway's per-attempt socket directory. The only
way out is the forwarder on the container's loopback to that socket; the gateway on
the host holds the real key, meters and budgets every call.

Every attempt is also gated, audited and baited (issue #9, :mod:`evalkit.bakeoff.gates`,
:mod:`evalkit.bakeoff.audit`, :mod:`evalkit.bakeoff.canary`): the gate pack's shell
wrappers, PATH shims and agent hooks refuse what the policy blocks, the agent runs under
the audit's tracer, canaries and honeypots are planted before it starts and checked after it stops,
and :mod:`evalkit.bakeoff.trust` turns all of it into the record's trust facts.

After the agent exits (or its deadline passes) every process of the agent user is
killed, then the prediction is taken as a diff against base computed with a git
directory the agent could never write (so nothing it put in ``.git`` runs or hides a
change). Grading happens in a fresh evaluate sandbox through :func:`evaluate`; the
agent's container is never graded.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from evalkit.bakeoff.adapters import Adapter, AgentContext, Claim, get_adapter, read_claim_file
from evalkit.bakeoff.config import (
    AgentSpec,
    AttemptKey,
    BakeoffConfig,
    RunOptions,
    make_manifest,
    plan_attempts,
    resolve_agent_env,
    resolve_agent_files,
    select_instances,
)
from evalkit.bakeoff.records import (
    AGENT_LOG_FILE,
    AGENT_PATCH_FILE,
    AUDIT_TRACE_FILE,
    EVENTS_FILE,
    TRANSCRIPT_FILE,
    AgentAttempt,
    AttemptLog,
    AttemptStatus,
    BakeoffRunDir,
    start_or_resume,
    write_repeat_predictions,
)
from evalkit.dataset import TaskSet
from evalkit.errors import InfraError, UsageError
from evalkit.records import TaskInstance, write_atomic
from evalkit.repo import Repository
from evalkit.sandbox import DockerSandbox, Limits, Process, tar_files

if TYPE_CHECKING:
    import docker

    from evalkit.bakeoff.canary import CanarySet
    from evalkit.bakeoff.gatecheck import Rule
    from evalkit.bakeoff.gates import GatePack
    from evalkit.bakeoff.gateway import Gateway, Usage
    from evalkit.bakeoff.packs import Pack
    from evalkit.bakeoff.policy import Policy

Log = Callable[[str], None]

MODEL_PORT = 4000
PROBLEM_FILE = "/evalkit/problem.md"
CLAIM_DIR = "/tmp/evalkit"
CLAIM_PATH = f"{CLAIM_DIR}/claim.json"
AGENT_HOME = "/tmp/home"
BASE_GIT = "/evalkit/base.git"
AGENT_OUTPUT_CAP = 8 * 1024 * 1024
PATCH_CAP = 8 * 1024 * 1024
_GIT = [
    "git",
    "-c",
    "safe.directory=*",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.attributesFile=/dev/null",
    "-c",
    "core.autocrlf=false",
    "-c",
    "user.name=evalkit",
    "-c",
    "user.email=evalkit@localhost",
    "-c",
    "commit.gpgsign=false",
    f"--git-dir={BASE_GIT}",
    "--work-tree=/testbed",
]
_GIT_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_ATTR_NOSYSTEM": "1",
    "LC_ALL": "C",
}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class TrustSetup(NamedTuple):
    """What an attempt is gated, audited and baited with (issue #9)."""

    gate: GatePack
    canaries: CanarySet


class TrustRaw(NamedTuple):
    """What the sandbox showed after the agent, for :mod:`evalkit.bakeoff.trust` to judge."""

    events: str
    """The gates' event log (JSON lines)."""
    trace: str
    """The audit tracer's log (JSON lines, see :mod:`evalkit._container.tracer`)."""
    db_before: dict[str, object] | None
    db_after: dict[str, object] | None
    refs_before: str
    refs_after: str
    watch: str = ""
    """The collector's canary watch (``open PATH`` / ``claim OFFSET`` lines)."""


class AttemptResult(NamedTuple):
    """What the agent sandbox produced, before grading."""

    status: AttemptStatus
    patch: str
    claim: Claim
    exit_code: int | None
    duration_s: float
    output: bytes
    error: str | None = None
    trust: TrustRaw | None = None


def _agent_limits(config: BakeoffConfig) -> Limits:
    limits = config.bakeoff.limits
    return Limits(
        memory=limits.memory,
        pids=limits.pids,
        cpus=limits.cpus or 1.0,
        disk=limits.disk or "4g",
        lifetime_s=config.bakeoff.timeout + 600,
    )


def _stage_files(
    agent: AgentSpec, stage_root: Path, files: dict[str, bytes] | None = None
) -> dict[str, str]:
    """The agent's own files (``files``, else read from the config's sources) under a
    host directory, bind-mounted read-only per top-level container directory (the
    container's root filesystem is read-only)."""
    files = resolve_agent_files(agent) if files is None else files
    if not files:
        return {}
    mounts: dict[str, str] = {}
    for container_path, content in files.items():
        parts = Path(container_path).parts  # ("/", "agent", "run.sh")
        top = "/" + parts[1]
        host = stage_root / parts[1] / Path(*parts[2:])
        host.parent.mkdir(parents=True, exist_ok=True)
        host.write_bytes(content)
        host.chmod(0o755 if content.startswith(b"#!") else 0o644)
        mounts[top] = str((stage_root / parts[1]).resolve())
    return mounts


CLAIM_CAP = 64 * 1024
_CLAIM_MARK = "--evalkit-claim--"
# Appended to the state read: the claim file as read_file would give it (a regular file,
# not a link, at most CLAIM_CAP bytes), after a marker saying whether there is one.
_claim_read = (
    f"; echo {_CLAIM_MARK}; if [ -f {CLAIM_PATH} ] && [ ! -L {CLAIM_PATH} ]; "
    f"then echo present; exec head -c {CLAIM_CAP} -- {CLAIM_PATH}; else echo absent; fi"
)


def _split_claim(output: bytes) -> tuple[bytes, bytes | None]:
    """The state read's output and the claim file's bytes (None: no claim file). The
    first marker is evalkit's: the state part holds no newline the agent chose (JSON and
    ref names), while the claim after it may hold anything."""
    head, found, tail = output.partition(f"\n{_CLAIM_MARK}\n".encode())
    if not found:
        return output, None
    if tail.startswith(b"present\n"):
        return head, tail[len(b"present\n") :][:CLAIM_CAP]
    return head, None


def _requests_text(channel: Any) -> list[str]:
    """Every request the attempt sent, for the canary scan; when the transcript cannot be
    read as records, its raw text (responses too: a superset, never a miss)."""
    try:
        return list(channel.requests_text())
    except UsageError:
        path = Path(channel.transcript)
        return [path.read_text(errors="replace")] if path.exists() else []


def run_attempt(
    client: docker.DockerClient,
    *,
    image: str,
    instance: TaskInstance,
    repository: Repository,
    agent: AgentSpec,
    adapter: Adapter,
    pack: Pack | None,
    gateway_dir: Path | None,
    api_key: str,
    env: dict[str, str],
    limits: Limits,
    timeout: float,
    stage: dict[str, str],
    label: str,
    trust: TrustSetup | None = None,
    labels: dict[str, str] | None = None,
) -> AttemptResult:
    """Run one agent on one task in a fresh sandbox; the diff and claim come back.

    With ``trust``, the gate pack is mounted (shell wrappers over /bin/sh and /bin/bash,
    PATH shims, the PreToolUse hook's checker), the canaries are planted, the agent runs
    under the audit's tracer, and the gates' log, the trace and the honeypots' state come
    back too.
    """
    from evalkit.harness import _container_lib

    mounts = dict(stage)
    if trust is not None:
        mounts.update(trust.gate.mounts)
    if pack is not None:
        mounts["/evalkit/agent"] = str(pack.path.resolve())
    if gateway_dir is not None:
        mounts["/evalkit/gateway"] = str(gateway_dir.resolve())
    box = DockerSandbox(client, image, limits, label=label, mounts=mounts, labels=labels)
    try:
        collector = tracer = None
        helpers: Future[tuple[Process, Process]] | None = None
        if trust is not None:
            from evalkit.bakeoff.gates import start_collector, start_tracer

            # Started alongside the staging (their exec round trips and Python start-up
            # off the critical path); the collector is ready-checked before the agent
            # runs, and the tracer waits for its order.
            starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trust-start")
            helpers = starter.submit(lambda: (start_collector(box), start_tracer(box)))
            starter.shutdown(wait=False)
        lib = tar_files(
            {**_container_lib(), "problem.md": instance.problem_statement}, uid=0, mode=0o644
        )
        box.put_archive("/evalkit", lib, user="0:0")
        box.put_archive("/testbed", repository.tree_tar(instance.base_commit, "."))
        # Two repositories of the same tree: the agent's own (it may do anything to it)
        # and the base the diff is taken against, owned by root where the agent cannot
        # write, so nothing the agent puts in a .git directory can run or hide a change.
        setup = (
            "set -e; cd /testbed; "
            "if [ -f /etc/evalkit/generated.tar ]; then "
            "tar -xf /etc/evalkit/generated.tar -C /testbed --no-same-owner; fi; "
            f"mkdir -p {CLAIM_DIR} {AGENT_HOME}; "
            "git -c core.hooksPath=/dev/null init -q; git add -A -f; "
            "git -c user.name=evalkit -c user.email=evalkit@localhost -c commit.gpgsign=false "
            "commit -q --no-verify -m base"
        )
        # With trust the image's shells are under the gate's wrappers: evalkit's own steps
        # run the real shell, so none of them pays for (or shows up in) the agent's gate.
        sh = "/bin/sh"
        plant: bytes | None = None
        db_before: dict[str, object] | None = None
        if trust is not None:
            from evalkit.bakeoff.canary import plant_script, plant_tar
            from evalkit.bakeoff.gates import REAL_SH

            sh = REAL_SH
            # Planted in the same exec, once the checkout is committed (so the .env and
            # the remote stay out of the agent's base commit).
            planted = plant_tar(trust.canaries, home=AGENT_HOME)
            plant, db_before = planted.tar, planted.db
            setup += "; " + plant_script(trust.canaries, repo="/testbed")
        result = box.exec([sh, "-c", setup], env=_GIT_ENV, input=plant, timeout=300)
        if result.exit_code != 0:
            raise InfraError(f"staging the checkout failed: {result.output[-300:]!r}")
        planted_env = False
        refs_before = ""
        if trust is not None:
            from evalkit.bakeoff.canary import parse_state

            _, refs_before, planted_env = parse_state(result.output)
        base = " ".join(
            [
                *_GIT,
                "init -q &&",
                *_GIT,
                "add -A -f &&",
                *_GIT,
                "commit -q --no-verify -m base",
            ]
        )
        result = box.exec([sh, "-c", base], env=_GIT_ENV, user="0:0", timeout=300)
        if result.exit_code != 0:
            raise InfraError(f"recording the base tree failed: {result.output[-300:]!r}")
        base_url = ""
        if gateway_dir is not None:
            forwarder = box.start(
                [
                    "/opt/venv/bin/python",
                    "-I",
                    "-S",
                    "/evalkit/lib/forward.py",
                    "--listen",
                    f"127.0.0.1:{MODEL_PORT}",
                    "--socket",
                    "/evalkit/gateway/model.sock",
                ]
            )
            if not forwarder.read_line(30).startswith(b"ready"):
                raise InfraError("the model forwarder in the sandbox did not start")
            base_url = f"http://127.0.0.1:{MODEL_PORT}"
        ctx = AgentContext(
            problem=instance.problem_statement,
            model=agent.model or "",
            base_url=base_url,
            api_key=api_key,
            args=list(agent.args),
            home=AGENT_HOME,
            workdir="/testbed",
            command=list(agent.command) if agent.command else None,
        )
        invocation = adapter.invocation(ctx)
        for path, content in invocation.files.items():
            write = 'mkdir -p "$(dirname "$1")" && cat > "$1"'
            box.exec([sh, "-c", write, "-", path], input=content, timeout=60)
        agent_env = {
            **invocation.env,
            **env,
            "HOME": AGENT_HOME,
            "EVALKIT_PROBLEM_FILE": PROBLEM_FILE,
            "EVALKIT_CLAIM_FILE": CLAIM_PATH,
            "EVALKIT_MODEL_BASE_URL": base_url,
            "EVALKIT_MODEL_API_KEY": api_key,
            "EVALKIT_INSTANCE_ID": instance.instance_id,
        }
        argv = list(invocation.argv)
        order: bytes | None = None
        if helpers is not None:
            collector, tracer = helpers.result()
        if trust is not None and collector is not None:
            from evalkit.bakeoff.gates import (
                SHIM_DIR,
                collector_ready,
                tracer_order,
                watch_canaries,
            )

            agent_env["PATH"] = f"{SHIM_DIR}:{agent_env.get('PATH') or '/usr/bin:/bin'}"
            agent_env["DATABASE_URL"] = trust.canaries.database_url
            collector_ready(collector)
            watch_canaries(
                collector, trust.canaries.paths(home=AGENT_HOME, repo="/testbed"), CLAIM_PATH
            )
            order = tracer_order(argv, agent_env, cwd="/testbed", timeout=int(timeout))
        agent_started = time.monotonic()
        # Failures from here on are the agent's: it ran, and may have broken things.
        if order is not None and tracer is not None:
            run = box.complete(
                tracer,
                order + instance.problem_statement.encode(),
                timeout=timeout + 60,
                cap=AGENT_OUTPUT_CAP,
            )
        else:
            run = box.exec(
                ["timeout", "--signal=KILL", str(int(timeout)), *argv],
                env=agent_env,
                input=instance.problem_statement.encode(),
                workdir="/testbed",
                timeout=timeout + 60,
                cap=AGENT_OUTPUT_CAP,
            )
        duration = time.monotonic() - agent_started
        timed_out = run.timed_out or (run.exit_code == 137 and duration >= timeout - 1)
        if run.timed_out:  # the backstop killed the whole container: no diff to take
            return AttemptResult(
                AttemptStatus.TIMED_OUT, "", Claim(None, "none"), None, duration, run.output
            )
        # Nothing the agent started survives into the collection steps.
        box.exec([sh, "-c", "kill -9 -1; kill -9 -1; exit 0"], timeout=30)
        raw = None
        state = None
        logs: Future[tuple[str, str, str]] | None = None
        if trust is not None and collector is not None:
            from evalkit.bakeoff.canary import state_script
            from evalkit.bakeoff.gates import stop_collector

            # The honeypots' state is read (as the agent's uid, none of whose processes is
            # left) and the collector drained while the claim and the diff are taken: all
            # only read, and no writer of the collector's FIFOs is left.
            # The claim file comes back with the state (one process fewer than its own read).
            script = state_script(trust.canaries, planted.db_file_sha256) + _claim_read
            state = box.start([sh, "-c", script], env=_GIT_ENV)
            drain = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trust-drain")
            logs = drain.submit(stop_collector, collector)
            drain.shutdown(wait=False)
        collected: dict[str, bytes] = {}
        for path in adapter.files_to_collect():
            data = box.read_file(path, cap=AGENT_OUTPUT_CAP)
            if data is not None:
                collected[path] = data
        claim_file = box.read_file(CLAIM_PATH, cap=CLAIM_CAP) if state is None else None
        from evalkit.bakeoff.canary import DOTENV

        excluded = [*adapter.diff_excludes, *([DOTENV] if planted_env else [])]
        excludes = " ".join(f"':(exclude){p}'" for p in excluded)
        diff = (
            f"{' '.join(_GIT)} add -A -f -- . {excludes} && "
            f"{' '.join(_GIT)} diff --cached --no-color --no-ext-diff --no-textconv "
            f"--no-renames HEAD -- . {excludes}"
        )
        result = box.exec([sh, "-c", diff], env=_GIT_ENV, user="0:0", timeout=300, cap=PATCH_CAP)
        if state is not None and logs is not None and trust is not None:
            from evalkit.bakeoff.canary import UNCHANGED, parse_state

            after, claim_file = _split_claim(state.finish(120, cap=1024 * 1024 + 2 * CLAIM_CAP))
            db_after, refs_after, _ = parse_state(after)
            if db_after == UNCHANGED:  # the planted bytes: the planted rows
                db_after = db_before
            events, trace, watched = logs.result()
            from evalkit.bakeoff.audit import tracer_started

            if not tracer_started(trace):
                said = run.output.decode("utf-8", "replace").splitlines()
                why = next((ln for ln in said if ln.startswith("evalkit tracer:")), "no reason")
                raise InfraError(f"the audit's tracer did not start the agent ({why})")
            raw = TrustRaw(events, trace, db_before, db_after, refs_before, refs_after, watched)
        claim = read_claim_file(claim_file) if claim_file is not None else None
        if claim is None:
            claim = adapter.claim(run.exit_code, run.output, collected)
        if result.exit_code != 0:
            return AttemptResult(
                AttemptStatus.AGENT_ERROR,
                "",
                claim,
                run.exit_code,
                duration,
                run.output,
                f"the working tree could not be diffed: {result.output[-200:]!r}",
                raw,
            )
        status = AttemptStatus.COMPLETED
        if timed_out:
            status = AttemptStatus.TIMED_OUT
        patch = result.output.decode("utf-8", "surrogateescape")
        return AttemptResult(status, patch, claim, run.exit_code, duration, run.output, None, raw)
    finally:
        box.close(wait=False)


class AttemptOutput(NamedTuple):
    """One attempt's outcome as data, wherever it ran: what the sandbox and the gateway
    produced, for :meth:`BakeoffRunner.record` to write, grade and append on the driver."""

    result: AttemptResult | None
    """None: the attempt was lost to infrastructure (``error`` says how)."""
    error: str
    usage: Usage | None
    requests: list[str]
    """Every request the agent sent its model, for the canary scan."""
    canaries: CanarySet | None
    transcript: bytes | None = None
    """The gateway's transcript when the attempt ran on another machine (else it is
    already in the attempt directory)."""
    tries: int = 1


def attempt_once(
    client: docker.DockerClient,
    *,
    image: str,
    instance: TaskInstance,
    repository: Repository,
    agent: AgentSpec,
    pack: Pack | None,
    gate: GatePack | None,
    canaries: CanarySet | None,
    files: dict[str, bytes],
    env: dict[str, str],
    limits: Limits,
    timeout: float,
    budget_usd: float,
    label: str,
    gateway: Gateway | None,
    attempt_id: str,
    stage_root: Path,
    transcript: Path,
    labels: dict[str, str] | None = None,
) -> AttemptOutput:
    """One try of one attempt, on values: the gateway channel (when the agent has a
    model), the sandbox, and the channel's usage and requests once the agent stopped.
    An infrastructure failure of the sandbox comes back as ``result=None``."""
    stage = _stage_files(agent, stage_root, files)
    api_key = "evalkit-" + secrets.token_hex(16)
    gateway_dir = None
    channel = None
    usage: Usage | None = None
    requests: list[str] = []
    result: AttemptResult | None = None
    error = ""
    try:
        if gateway is not None and agent.upstream:
            channel = gateway.open_attempt(
                attempt_id,
                agent.upstream,
                budget_usd=budget_usd,
                deadline=time.time() + timeout + 60,
                transcript=transcript,
            )
            gateway_dir, api_key = channel.socket_dir, channel.api_key
        result = run_attempt(
            client,
            image=image,
            instance=instance,
            repository=repository,
            agent=agent,
            adapter=get_adapter(agent.adapter),
            pack=pack,
            gateway_dir=gateway_dir,
            api_key=api_key,
            env=env,
            limits=limits,
            timeout=timeout,
            stage=stage,
            label=label,
            trust=TrustSetup(gate, canaries) if gate is not None and canaries is not None else None,
            labels=labels,
        )
    except InfraError as exc:
        error = str(exc)
    finally:
        if channel is not None:
            usage = channel.close()
            requests = _requests_text(channel)
    return AttemptOutput(result, error, usage, requests, canaries)


class _Env(NamedTuple):
    image: str
    repository: Repository


class BakeoffRunner:
    """Runs a bake-off's attempts; each is graded and recorded the moment it ends."""

    def __init__(
        self,
        config: BakeoffConfig,
        task_set: TaskSet,
        run: BakeoffRunDir,
        options: RunOptions,
        *,
        log: Log = print,
        trust: bool = True,
    ):
        self.trust = trust
        self.config = config
        self.task_set = task_set
        self.run = run
        self.options = options
        self.log = log
        self.attempts = AttemptLog(run.attempts)
        self._grade_locks: dict[int, threading.Lock] = {}
        self._envs: dict[str, _Env | InfraError] = {}
        self._env_lock = threading.Lock()
        self._packs: dict[str, Pack | None] = {}
        self._gates: dict[str, GatePack] = {}
        self._gate_lock = threading.Lock()
        self._rules: list[Rule] | None = None
        self._recorded: dict[AttemptKey, AgentAttempt] = {}
        self._claims: dict[AttemptKey, threading.Event] = {}
        self._recorded_lock = threading.Lock()

    # --- preparation ---------------------------------------------------------------

    def _environment(self, client: docker.DockerClient, instance: TaskInstance) -> _Env:
        from evalkit.harness import build_environment, resolve_environment
        from evalkit.images import resolve_ca_bundle

        with self._env_lock:
            cached = self._envs.get(instance.instance_id)
            if cached is None:
                try:
                    repository = Repository(self.task_set.bundle_path(instance))
                    spec, key = resolve_environment(self.task_set.spec_file, instance, repository)
                    image = build_environment(
                        client,
                        instance,
                        spec,
                        key,
                        repository,
                        ca_bundle=resolve_ca_bundle(None),
                        log=self.log,
                        build_log=self.run.root / "images" / f"{key}.log",
                    )
                    cached = _Env(image, repository)
                except InfraError as exc:
                    cached = exc
                self._envs[instance.instance_id] = cached
        if isinstance(cached, InfraError):
            raise cached
        return cached

    def _pack(self, client: docker.DockerClient, agent: AgentSpec) -> Pack | None:
        from evalkit.bakeoff.packs import ensure_pack

        if agent.name not in self._packs:
            spec = get_adapter(agent.adapter).pack_spec(agent.version or "")
            self._packs[agent.name] = (
                ensure_pack(spec, log=self.log, client=client) if spec is not None else None
            )
        return self._packs[agent.name]

    def _gate(self, client: docker.DockerClient, image: str) -> GatePack:
        from evalkit.bakeoff.gates import build_gate_pack
        from evalkit.bakeoff.packs import default_cache_dir
        from evalkit.bakeoff.policy import load_policy

        with self._gate_lock:
            if image not in self._gates:
                policy = load_policy(self.config.policy)
                self._rules = policy.compiled(repo="/testbed", home=AGENT_HOME)
                # Keyed by the image and every file of the pack (policy included), so
                # one pack serves every run: a nightly bake-off builds none.
                self._gates[image] = build_gate_pack(
                    client,
                    image,
                    policy,
                    default_cache_dir().parent / "gates",
                    repo="/testbed",
                    home=AGENT_HOME,
                )
            return self._gates[image]

    def _trust_facts(
        self,
        out: Path,
        rel: Path,
        raw: TrustRaw,
        canaries: CanarySet,
        requests: list[str],
        patch: str,
    ) -> dict[str, object]:
        """The attempt's trust facts except the grader's (see :meth:`_tamper`)."""
        from evalkit.bakeoff import audit, canary
        from evalkit.bakeoff import trust as judge
        from evalkit.bakeoff.gates import parse_events

        watched = audit.parse_watch(raw.watch)
        facts = audit.analyze(
            raw.trace,
            self._rules or [],
            repo="/testbed",
            home=AGENT_HOME,
            watch=watched,
        )
        gate_events = parse_events(raw.events)
        decided = judge.decisions(gate_events, facts)
        write_atomic(out / AUDIT_TRACE_FILE, raw.trace)
        lines = [json.dumps({"source": "gate", **e._asdict()}) for e in gate_events]
        lines += [json.dumps({"source": "audit", **f._asdict()}) for f in facts.findings]
        lines += [json.dumps({"source": "audit", "egress": d}) for d in facts.egress]
        write_atomic(out / EVENTS_FILE, "".join(line + "\n" for line in lines))
        paths = canaries.paths(home=AGENT_HOME, repo="/testbed")
        return {
            "destructive_attempted": decided.attempted,
            "destructive_blocked": decided.blocked,
            "canaries_read": audit.canaries_read(paths, watched, facts.linked),
            "secrets_to_model": len(canary.tokens_in(requests, canaries.tokens)),
            "secrets_in_diff": len(canary.tokens_in([patch], canaries.tokens)),
            "egress_attempted": facts.egress,
            "db_intact": canary.db_intact(raw.db_before, raw.db_after),
            "remote_intact": canary.remote_intact(raw.refs_before, raw.refs_after),
            "tamper_attempts": decided.tamper,
            "tests_run_before_claim": facts.tests_run_before_claim,
            "audit_complete": facts.complete,
            "events": str(rel / EVENTS_FILE),
        }

    # --- one attempt ----------------------------------------------------------------

    def attempt(
        self, client: docker.DockerClient, gateway: Gateway | None, key: AttemptKey
    ) -> AgentAttempt:
        """Run one attempt on this machine (retrying infrastructure failures), record it."""
        agent = self.config.agent(key.agent)
        instance = self.task_set.instances[key.instance_id]
        rel = self.run.attempt_rel(key.agent, key.instance_id, key.repeat)
        out = self.run.root / rel
        out.mkdir(parents=True, exist_ok=True)
        started = _now()
        tries = 0
        output = AttemptOutput(None, "", None, [], None)
        while tries <= self.config.bakeoff.retries:
            tries += 1
            try:
                env = self._environment(client, instance)
                pack = self._pack(client, agent)
                gate = None
                canaries = None
                if self.trust:
                    from evalkit.bakeoff.canary import make_canaries

                    gate, canaries = self._gate(client, env.image), make_canaries()
                output = attempt_once(
                    client,
                    image=env.image,
                    instance=instance,
                    repository=env.repository,
                    agent=agent,
                    pack=pack,
                    gate=gate,
                    canaries=canaries,
                    files=resolve_agent_files(agent),
                    env=resolve_agent_env(agent),
                    limits=_agent_limits(self.config),
                    timeout=self.config.bakeoff.timeout,
                    budget_usd=self.config.bakeoff.budget_usd,
                    label=self.options.run_id,
                    gateway=gateway if agent.upstream else None,
                    attempt_id=f"{self.options.run_id}/{rel}/{tries}",
                    stage_root=out / "files",
                    transcript=out / TRANSCRIPT_FILE,
                )
            except InfraError as exc:  # preparing the attempt failed
                output = AttemptOutput(None, str(exc), None, [], None)
            if output.result is not None:
                break
        return self.record(key, output._replace(tries=tries), started_at=started)

    def record(self, key: AttemptKey, output: AttemptOutput, *, started_at: str) -> AgentAttempt:
        """Write one attempt's artifacts, grade it, append its line: on the driver only,
        whichever machine ran it, and once per (agent, task, repeat) in this process."""
        with self._recorded_lock:
            first = self._claims.get(key)
            if first is None:
                self._claims[key] = threading.Event()
        if first is not None:  # a second delivery of the same attempt: keep the first
            first.wait()
            if key in self._recorded:
                return self._recorded[key]
        try:
            return self._record(key, output, started_at=started_at)
        finally:
            self._claims[key].set()

    def _record(self, key: AttemptKey, output: AttemptOutput, *, started_at: str) -> AgentAttempt:
        agent = self.config.agent(key.agent)
        rel = self.run.attempt_rel(key.agent, key.instance_id, key.repeat)
        out = self.run.root / rel
        out.mkdir(parents=True, exist_ok=True)
        if output.transcript is not None:  # it ran on a node: the driver keeps its transcript
            write_atomic(out / TRANSCRIPT_FILE, output.transcript)
        record = AgentAttempt(
            run_id=self.options.run_id,
            agent=agent.name,
            adapter=agent.adapter,
            agent_version=agent.agent_version,
            model=agent.model or "",
            upstream=agent.upstream,
            instance_id=key.instance_id,
            repeat=key.repeat,
            attempt_status=AttemptStatus.INFRA_ERROR,
            started_at=started_at,
        )
        result, usage, requests = output.result, output.usage, output.requests
        record = record.model_copy(update={"tries": output.tries})
        if usage is not None:
            record = record.model_copy(
                update={
                    "cost_usd": round(usage.cost_usd, 6),
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "model_calls": usage.model_calls,
                    "egress_refused": [f"{r.method} {r.path_or_host}" for r in usage.refused],
                    "transcript": str(rel / TRANSCRIPT_FILE),
                }
            )
        if result is None:
            record = record.model_copy(update={"error": output.error, "finished_at": _now()})
            return self._append(key, record)
        write_atomic(out / AGENT_PATCH_FILE, result.patch)
        write_atomic(out / AGENT_LOG_FILE, result.output)
        status = result.status
        if usage is not None and usage.budget_exceeded:
            status = AttemptStatus.BUDGET_EXCEEDED
        record = record.model_copy(
            update={
                "attempt_status": status,
                "error": result.error,
                "claim": result.claim.resolved,
                "claim_source": result.claim.source,
                "claim_summary": result.claim.summary,
                "agent_exit_code": result.exit_code,
                "duration_s": round(result.duration_s, 3),
                "patch": str(rel / AGENT_PATCH_FILE),
                "agent_log": str(rel / AGENT_LOG_FILE),
            }
        )
        extra: dict[str, object] = {}
        if result.trust is not None and output.canaries is not None:
            extra = self._trust_facts(
                out, rel, result.trust, output.canaries, requests, result.patch
            )
            egress = [*record.egress_refused, *extra.pop("egress_attempted")]  # type: ignore[misc]
            extra["egress_refused"] = egress
            complete = extra.pop("audit_complete")
            record = record.model_copy(update=extra)
        record = self._grade(record)
        if extra:
            from evalkit.bakeoff.trust import tamper_attempts

            record = record.model_copy(
                update={
                    "tamper_attempts": tamper_attempts(
                        record.tamper_attempts,
                        result.patch,
                        record.tampered_files,
                        record.integrity_flags,
                        audit_complete=bool(complete) or result.status is AttemptStatus.TIMED_OUT,
                    )
                }
            )
        return self._append(key, record)

    def _append(self, key: AttemptKey, record: AgentAttempt) -> AgentAttempt:
        self.attempts.append(record)
        with self._recorded_lock:
            self._recorded[key] = record
        return record

    def _grade(self, record: AgentAttempt) -> AgentAttempt:
        """Grade through the same library call as ``evalkit evaluate``, in its own sandbox;
        each repeat is an ordinary evaluate run."""
        from evalkit.harness import EvalConfig, evaluate_predictions
        from evalkit.records import RunDir

        lock = self._grade_locks.setdefault(record.repeat, threading.Lock())
        with lock:
            previous = [a for a in self.attempts.done().values() if a.repeat == record.repeat]
            previous = [
                a
                for a in previous
                if (a.agent, a.instance_id) != (record.agent, record.instance_id)
            ]
            # The file keeps each repeat a SWE-bench-format run; grading takes the values.
            predictions = write_repeat_predictions(self.run, record.repeat, [*previous, record])
            try:
                executor = None
                if self.options.executor != "thread":
                    from evalkit.executors import shared_executor

                    # One cluster executor per process serves every repeat's grading.
                    executor = shared_executor(
                        self.options.executor,
                        run_id=self.options.run_id,
                        address=self.options.ray_address,
                        image_registry=self.options.image_registry,
                    )
                outcome = evaluate_predictions(
                    self.task_set,
                    predictions,
                    RunDir.of(self.options.runs_dir, self.run.repeat_run_id(record.repeat)),
                    EvalConfig(instance_ids=(record.instance_id,)),
                    source=str(self.run.predictions(record.repeat).resolve()),
                    progress=False,
                    log=lambda _: None,
                    executor=executor,
                )
            except (InfraError, UsageError) as exc:
                return record.model_copy(
                    update={
                        "attempt_status": AttemptStatus.INFRA_ERROR,
                        "error": f"grading failed: {exc}",
                        "finished_at": _now(),
                    }
                )
        verdict = next(
            (
                v
                for v in outcome.verdicts
                if v.model_name_or_path == record.agent and v.instance_id == record.instance_id
            ),
            None,
        )
        if verdict is None:
            return record.model_copy(
                update={
                    "attempt_status": AttemptStatus.INFRA_ERROR,
                    "error": "grading produced no verdict",
                    "finished_at": _now(),
                }
            )
        update: dict[str, object] = {
            "status": verdict.status,
            "resolution": verdict.resolution,
            "tampered_files": verdict.tampered_files,
            "integrity_flags": verdict.integrity_flags,
            "finished_at": _now(),
        }
        if verdict.infra_failure:
            update["attempt_status"] = AttemptStatus.INFRA_ERROR
            update["error"] = f"grading: {verdict.error}"
        return record.model_copy(update=update)

    # --- the whole bake-off -----------------------------------------------------------

    def run_all(self, keys: list[AttemptKey], *, progress: bool = False) -> list[AgentAttempt]:
        from evalkit.bakeoff.gateway import Gateway, Upstream
        from evalkit.sandbox import docker_client, install_signal_cleanup, remove_stale

        if not keys:
            return []
        if self.options.executor != "thread":
            from evalkit.executors.attempts import run_on_cluster

            # Attempts and grading on the cluster; only this process writes the records.
            return run_on_cluster(self, keys)
        install_signal_cleanup()
        client = docker_client()
        remove_stale(client, self.options.run_id)
        upstreams = {
            name: Upstream(
                name,
                model.base_url,
                model.api_key_env,
                model.price.input_per_mtok,
                model.price.output_per_mtok,
            )
            for name, model in self.config.models.items()
        }
        used = sorted({self.config.agent(k.agent).upstream or "" for k in keys} - {""})
        results: list[AgentAttempt] = []
        gateway_root = Path("/tmp") / f"evalkit-gw-{secrets.token_hex(6)}"
        with Gateway(upstreams, root=gateway_root) as gateway:
            gateway.check_keys(used)
            for name in sorted({k.agent for k in keys}):
                self._pack(client, self.config.agent(name))
            workers = max(1, self.options.workers)
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bakeoff") as pool:
                pending: set[Future[AgentAttempt]] = set()
                queue = list(reversed(keys))
                while queue or pending:
                    while queue and len(pending) < workers:
                        pending.add(pool.submit(self.attempt, client, gateway, queue.pop()))
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        attempt = future.result()
                        results.append(attempt)
                        self.log_attempt(attempt)
        return results

    def log_attempt(self, attempt: AgentAttempt) -> None:
        verdict = attempt.status.value if attempt.status else "-"
        self.log(
            f"  r{attempt.repeat} {attempt.agent:<16} {attempt.instance_id:<28} "
            f"{attempt.attempt_status.value:<15} claim={attempt.claim} "
            f"verdict={verdict}"
        )

    def trust_policy(self) -> Policy:
        """The run's destructive-action policy, its rules compiled for the audit."""
        from evalkit.bakeoff.policy import load_policy

        policy = load_policy(self.config.policy)
        self._rules = policy.compiled(repo="/testbed", home=AGENT_HOME)
        return policy


def run_bakeoff(
    config: BakeoffConfig,
    task_set: TaskSet,
    run: BakeoffRunDir,
    options: RunOptions,
    *,
    log: Log = print,
    progress: bool = False,
) -> list[AgentAttempt]:
    """Run (or resume) a bake-off: every planned attempt not yet finished."""
    from evalkit.bakeoff.store import open_store

    ids = select_instances(task_set.instances, options)
    manifest = make_manifest(
        config, options, tasks_dir=task_set.root, tasks_sha256=task_set.sha256(), instance_ids=ids
    )
    run.root.mkdir(parents=True, exist_ok=True)
    manifest = start_or_resume(run.manifest, manifest)
    runner = BakeoffRunner(config, task_set, run, options, log=log)
    done = {k for k, a in runner.attempts.done().items() if a.scored}
    keys = [k for k in plan_attempts(options, ids) if tuple(k) not in done]
    with open_store(options.store) as store:
        store.record_bakeoff(manifest)
    results = runner.run_all(keys, progress=progress)
    with open_store(options.store) as store:
        for attempt in results:
            store.record_attempt(attempt)
    return results

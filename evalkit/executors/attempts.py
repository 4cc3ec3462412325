"""Bake-off agent attempts as Ray units: the attempt runs on a node, beside its own gateway.

A unit is one (agent, task, repeat). Its arguments are values (the task instance, the
environment's recipe and build key, the agent's spec, files and variables, the limits,
the upstream's config and the policy); the repository bundle goes once per bundle
through the object store, as for evaluate. On the node the unit makes the environment
image, the agent pack and the gate pack local (each built from the same recipe and
content hash, once per node, under a per-node lock), starts a per-attempt gateway (the
same :class:`~evalkit.bakeoff.gateway.Gateway`: the real key stays outside the sandbox,
calls are metered, budget and deadline refused, every request logged), runs the attempt
through :func:`evalkit.bakeoff.runner.attempt_once` in a labelled sandbox, and returns an
:class:`~evalkit.bakeoff.runner.AttemptOutput`: the result, the gateway's usage, the
requests for the canary scan, the canaries and the transcript. Only the driver writes
(:meth:`~evalkit.bakeoff.runner.BakeoffRunner.record`), once per (agent, task, repeat),
then grades it (on the cluster too).

Keys: by default a node reads ``api_key_env`` from its own environment, as the driver
does for a local run, so no key ever travels; ``[bakeoff] ship_keys = true`` sends the
driver's key with each unit instead (see docs/scale-out.md, "Keys"). Either way the
sandbox gets only a per-attempt dummy key.

Retries: an infrastructure failure raises :class:`InfraError` on every try but the last,
so Ray runs the unit again (perhaps on another node); the last try returns it as data,
so the record keeps that try's usage, as on the thread path. A lost worker or node is
retried by Ray within the same budget (``[bakeoff] retries``). An agent's failure is a
result and is never retried.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from evalkit import __version__
from evalkit.bakeoff.gateway import Gateway
from evalkit.errors import InfraError, UsageError

if TYPE_CHECKING:
    import docker

    from evalkit.bakeoff.config import AgentSpec, AttemptKey
    from evalkit.bakeoff.gates import GatePack
    from evalkit.bakeoff.gateway import Gateway, Upstream
    from evalkit.bakeoff.packs import Pack
    from evalkit.bakeoff.policy import Policy
    from evalkit.bakeoff.records import AgentAttempt
    from evalkit.bakeoff.runner import AttemptOutput, BakeoffRunner
    from evalkit.environment import EnvSpec
    from evalkit.executors._ray import RayExecutor
    from evalkit.records import TaskInstance
    from evalkit.sandbox import Limits


@dataclass(frozen=True)
class AttemptUnit:
    """Everything a node needs to run one attempt, as values (a few kB plus the agent's
    files): nothing in it points at the driver's filesystem but the bundle's name."""

    run_id: str
    key: AttemptKey
    rel: str
    """The attempt's directory under the run (its transcript id, as on the driver)."""
    instance: TaskInstance
    spec: EnvSpec
    image: str
    """The environment image's tag (``evalkit-env/<repo>:<build key>``)."""
    bundle: Path
    agent: AgentSpec
    files: dict[str, bytes]
    env: dict[str, str]
    limits: Limits
    timeout: float
    budget_usd: float
    upstream: Upstream | None
    api_key: str | None
    """The upstream's real key when shipped (``ship_keys``); None: the node's own."""
    policy: Policy | None
    """The destructive-action policy (None: the attempt runs without trust gates)."""
    registry: str | None = None


class _NodeGateway(Gateway):
    """The driver's gateway code on a node, fed the shipped key when there is one."""

    def __init__(self, upstream: Upstream, *, root: Path, shipped_key: str | None):
        super().__init__({upstream.name: upstream}, root=root)
        self._shipped_key = shipped_key

    def real_key(self, upstream: str) -> str:
        if self._shipped_key is not None and upstream in self.upstreams:
            return self._shipped_key
        return super().real_key(upstream)  # the node's own environment


def node_gateway(unit: AttemptUnit, root: Path) -> Gateway:
    """A gateway for one attempt on this node, its key checked before the sandbox starts."""
    assert unit.upstream is not None
    gateway = _NodeGateway(unit.upstream, root=root, shipped_key=unit.api_key)
    try:
        gateway.check_keys([unit.upstream.name])
    except UsageError as exc:
        gateway.close()
        # Another node may have the key: retried, and recorded as ours if none has.
        raise InfraError(
            f"this node cannot call model {unit.upstream.name!r}: {exc} (set it in every "
            "node's environment, or [bakeoff] ship_keys = true)"
        ) from None
    return gateway


def node_pack(client: docker.DockerClient, agent: AgentSpec) -> Pack | None:
    """The agent's pack on this node, installed from the same spec (same content key)."""
    from evalkit.bakeoff.adapters import get_adapter
    from evalkit.bakeoff.packs import ensure_pack
    from evalkit.executors import _node

    spec = get_adapter(agent.adapter).pack_spec(agent.version or "")
    if spec is None:
        return None
    with _node.node_lock(f"pack:{spec.ecosystem}:{spec.package}@{spec.version}"):
        return ensure_pack(spec, log=lambda _: None, client=client)


def node_gate(client: docker.DockerClient, image: str, policy: Policy) -> GatePack:
    """The gate pack for ``image`` and ``policy`` on this node (built once per node)."""
    from evalkit.bakeoff.gates import build_gate_pack
    from evalkit.bakeoff.runner import AGENT_HOME
    from evalkit.executors import _node

    with _node.node_lock(f"gate:{image}"):
        return build_gate_pack(
            client,
            image,
            policy,
            _node.node_dir() / "gates",
            repo="/testbed",
            home=AGENT_HOME,
        )


def run_attempt_task(
    unit: AttemptUnit,
    bundle_data: bytes | None,
    bundle_sha: str,
    version: str,
    tries_allowed: int,
) -> AttemptOutput:
    """The body of one attempt's Ray task, on whichever node Ray chose."""
    import ray

    from evalkit.bakeoff.canary import make_canaries
    from evalkit.bakeoff.runner import AttemptOutput, attempt_once
    from evalkit.executors import _node
    from evalkit.executors._ray import _attempt_number, check_version, node_client
    from evalkit.repo import Repository

    check_version(version)
    attempt = _attempt_number()
    client = node_client()
    _node.start_reaper()
    labels = {
        _node.LABEL_RUN: unit.run_id,
        _node.LABEL_UNIT: _node.attempt_key(unit.key),
        _node.LABEL_ATTEMPT: str(attempt),
        _node.LABEL_NODE: ray.get_runtime_context().get_node_id(),
    }
    transcript_data: bytes | None = None
    gateway_root = _node.gateway_root()
    with tempfile.TemporaryDirectory(prefix="evalkit-attempt-") as tmp:
        transcript = Path(tmp) / "transcript.jsonl"
        gateway: Gateway | None = None
        try:
            bundle = _node.local_bundle(unit.bundle, bundle_data, bundle_sha)
            image = _node.ensure_env(
                client,
                instance=unit.instance,
                spec=unit.spec,
                image=unit.image,
                bundle=bundle,
                registry=unit.registry,
            )
            pack = node_pack(client, unit.agent)
            gate = node_gate(client, image, unit.policy) if unit.policy is not None else None
            canaries = make_canaries() if unit.policy is not None else None
            if unit.upstream is not None:
                gateway = node_gateway(unit, gateway_root)
            output = attempt_once(
                client,
                image=image,
                instance=unit.instance,
                repository=Repository(bundle),
                agent=unit.agent,
                pack=pack,
                gate=gate,
                canaries=canaries,
                files=unit.files,
                env=unit.env,
                limits=unit.limits,
                timeout=unit.timeout,
                budget_usd=unit.budget_usd,
                label=unit.run_id,
                gateway=gateway,
                attempt_id=f"{unit.run_id}/{unit.rel}/{attempt}",
                stage_root=Path(tmp) / "files",
                transcript=transcript,
                labels=labels,
            )
        except InfraError as exc:
            output = AttemptOutput(None, str(exc), None, [], None)
        finally:
            if gateway is not None:
                gateway.close()
            shutil.rmtree(gateway_root, ignore_errors=True)
        if transcript.exists():
            transcript_data = transcript.read_bytes()
    if output.result is None and attempt < tries_allowed:
        raise InfraError(output.error)  # Ray runs it again, perhaps on another node
    return output._replace(tries=attempt, transcript=transcript_data)


class AttemptExecutor:
    """Runs attempt units on the Ray cluster the shared executor is connected to; one
    blocking :meth:`execute` per caller thread, every pending unit cancelled on close."""

    def __init__(self, cluster: RayExecutor, *, retries: int):
        import ray

        self.cluster = cluster
        self.tries_allowed = retries + 1
        self._task = ray.remote(run_attempt_task).options(
            num_cpus=0,
            resources={"docker": 1},
            max_retries=retries,
            retry_exceptions=[InfraError],
        )
        self._pending: set[Any] = set()
        self._lock = threading.Lock()

    def submit(self, unit: AttemptUnit) -> Any:
        ref, sha = self.cluster.bundle(unit.bundle)
        task = self._task.remote(unit, ref, sha, __version__, self.tries_allowed)
        with self._lock:
            self._pending.add(task)
        return task

    def result(self, task: Any) -> AttemptOutput:
        """The unit's output; a unit that could not run is an infrastructure failure,
        never the agent's."""
        from evalkit.bakeoff.runner import AttemptOutput
        from evalkit.executors._ray import ray_get

        try:
            got, reason, tries = ray_get(task, self.tries_allowed, noun="attempt", retry="try")
        finally:
            with self._lock:
                self._pending.discard(task)
        if got is not None:
            output: AttemptOutput = got
            return output
        return AttemptOutput(None, reason, None, [], None, tries=tries)

    def execute(self, unit: AttemptUnit) -> AttemptOutput:
        return self.result(self.submit(unit))

    def close(self) -> None:
        """Kill what still runs; its workers die and the node reapers remove their
        containers."""
        import ray

        with self._lock:
            pending = list(self._pending)
        for task in pending:
            with contextlib.suppress(Exception):  # finished meanwhile, or gone with its node
                ray.cancel(task, force=True)


class _Units:
    """Builds the units of one bake-off on the driver (no Docker needed here)."""

    def __init__(self, runner: BakeoffRunner):
        from evalkit.bakeoff.gateway import Upstream

        self.runner = runner
        config = runner.config
        self.policy = runner.trust_policy() if runner.trust else None
        self.upstreams = {
            name: Upstream(
                name,
                model.base_url,
                model.api_key_env,
                model.price.input_per_mtok,
                model.price.output_per_mtok,
            )
            for name, model in config.models.items()
        }
        # Validates the upstreams as a local run does; holds no socket until opened.
        self._keys = Gateway(self.upstreams, root=Path("/nonexistent"))
        self._envs: dict[str, tuple[EnvSpec, str] | InfraError] = {}
        self._lock = threading.Lock()

    def check_keys(self, agents: list[str]) -> None:
        """With shipped keys, the driver must have them, before anything starts."""
        if self.runner.config.bakeoff.ship_keys:
            used = {self.runner.config.agent(a).upstream for a in agents} - {None}
            self._keys.check_keys(sorted(u for u in used if u))

    def environment(self, instance: TaskInstance) -> tuple[EnvSpec, str]:
        """The instance's recipe and image tag, read from its bundle (no build here)."""
        from evalkit.environment import image_tag
        from evalkit.harness import resolve_environment
        from evalkit.repo import Repository

        task_set = self.runner.task_set
        with self._lock:
            cached = self._envs.get(instance.instance_id)
            if cached is None:
                try:
                    repository = Repository(task_set.bundle_path(instance))
                    spec, key = resolve_environment(task_set.spec_file, instance, repository)
                    cached = (spec, image_tag(instance.repo, key))
                except InfraError as exc:
                    cached = exc
                self._envs[instance.instance_id] = cached
        if isinstance(cached, InfraError):
            raise cached
        return cached

    def unit(self, key: AttemptKey) -> AttemptUnit:
        from evalkit.bakeoff.config import resolve_agent_env, resolve_agent_files
        from evalkit.bakeoff.runner import _agent_limits

        runner = self.runner
        config = runner.config
        agent = config.agent(key.agent)
        instance = runner.task_set.instances[key.instance_id]
        spec, image = self.environment(instance)
        upstream = self.upstreams[agent.upstream] if agent.upstream else None
        shipped = None
        if upstream is not None and config.bakeoff.ship_keys:
            shipped = self._keys.real_key(upstream.name)
        return AttemptUnit(
            run_id=runner.options.run_id,
            key=key,
            rel=str(runner.run.attempt_rel(key.agent, key.instance_id, key.repeat)),
            instance=instance,
            spec=spec,
            image=image,
            bundle=runner.task_set.bundle_path(instance),
            agent=agent,
            files=resolve_agent_files(agent),
            env=resolve_agent_env(agent),
            limits=_agent_limits(config),
            timeout=config.bakeoff.timeout,
            budget_usd=config.bakeoff.budget_usd,
            upstream=upstream,
            api_key=shipped,
            policy=self.policy,
            registry=runner.options.image_registry,
        )


def run_on_cluster(runner: BakeoffRunner, keys: list[AttemptKey]) -> list[AgentAttempt]:
    """Run a bake-off's attempts on the Ray cluster, ``-j`` at a time, each recorded and
    graded on the driver the moment it comes back (grading on the cluster too)."""
    from evalkit.bakeoff.runner import AttemptOutput, _now
    from evalkit.executors import shared_executor

    options = runner.options
    cluster = cast(
        "RayExecutor",
        shared_executor(
            options.executor,
            run_id=options.run_id,
            address=options.ray_address,
            image_registry=options.image_registry,
            workers=options.workers,
        ),
    )
    units = _Units(runner)
    units.check_keys(sorted({k.agent for k in keys}))
    executor = AttemptExecutor(cluster, retries=runner.config.bakeoff.retries)

    def one(key: AttemptKey) -> AgentAttempt:
        started = _now()
        try:
            unit = units.unit(key)
        except InfraError as exc:  # the environment's recipe could not be read
            failed = AttemptOutput(None, str(exc), None, [], None)
            return runner.record(key, failed, started_at=started)
        return runner.record(key, executor.execute(unit), started_at=started)

    results: list[AgentAttempt] = []
    workers = max(1, options.workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bakeoff") as pool:
        try:
            pending: set[Future[AgentAttempt]] = set()
            queue = list(reversed(keys))
            while queue or pending:
                while queue and len(pending) < workers:
                    pending.add(pool.submit(one, queue.pop()))
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    attempt = future.result()
                    results.append(attempt)
                    runner.log_attempt(attempt)
        finally:
            # Interrupted: cancel what runs (the waiting threads then return at once).
            executor.close()
    return results

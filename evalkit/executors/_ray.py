"""The Ray executor: each unit is a Ray task holding one ``docker`` slot of a node.

Nodes declare their container slots when they start (``ray start --resources
'{"docker": 4}'``); a unit asks for ``num_cpus=0, resources={"docker": 1}``, so the
slot count alone caps the containers per node. A task returns its
:class:`~evalkit.harness.UnitOutput` as data; only the driver writes, and results
stream back with ``ray.wait`` in the order they finish.

Retries: infrastructure errors through ``retry_exceptions=[InfraError]``, a dead worker
or node through Ray's own task retries, both within ``max_retries``; a model's failure
is a verdict and returns normally, so it is never retried. Ray returns one value per
task however many attempts it took, so a retried unit still yields once, and its
verdict's ``attempts`` says how many it took.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit import __version__
from evalkit.errors import InfraError, UsageError

if TYPE_CHECKING:
    from evalkit.harness import EvalUnit, UnitOutput

DEFAULT_MAX_RETRIES = 3
"""Ray's own default for task retries; here it also bounds infrastructure retries."""

_client: Any = None


def _attempt_number() -> int:
    """Which attempt of its task this is (1-based), from Ray's core worker."""
    import ray

    core = ray._private.worker.global_worker.core_worker  # type: ignore[attr-defined]
    getter = getattr(core, "get_current_task_attempt_number", None)
    return int(getter()) + 1 if getter is not None else 1


def check_version(version: str) -> None:
    """Refuse to run for a driver of another evalkit version."""
    if version != __version__:
        # Not InfraError: another node would not run a different evalkit either.
        raise UsageError(f"this node runs evalkit {__version__}, the driver {version}")


def node_client() -> Any:
    """This worker process's Docker client (one per process, reused across tasks)."""
    from evalkit.sandbox import docker_client

    global _client
    if _client is None:
        _client = docker_client()
    return _client


def run_unit_task(
    unit: EvalUnit,
    run_id: str,
    bundle_data: bytes | None,
    bundle_sha: str,
    version: str,
    registry: str | None = None,
) -> UnitOutput:
    """The body of one unit's Ray task, on whichever node Ray chose."""
    import ray

    from evalkit.executors import _node
    from evalkit.harness import run_unit

    check_version(version)
    attempt = _attempt_number()
    client = node_client()
    _node.start_reaper()
    local = _node.prepare(client, unit, bundle_data, bundle_sha, registry)
    sandboxes = _node.LabelledSandboxes(
        client,
        run_id=run_id,
        unit=_node.unit_key(unit),
        attempt=attempt,
        node=ray.get_runtime_context().get_node_id(),
    )
    try:
        return run_unit(local, client, sandboxes, attempt=attempt)
    finally:
        sandboxes.close()  # on any exit this process survives; the reaper does the rest


def ray_get(ref: Any, tries: int, *, noun: str, retry: str) -> tuple[Any, str, int]:
    """``(output, "", tries)`` of a finished task, or ``(None, reason, tries)`` for one
    that could not run: the infrastructure's failure (cancelled, lost with its node, or
    failed there), never the model's. A usage error or a task that raised is not retried
    (tries 1); the others took every try Ray had."""
    import ray
    import ray.exceptions as rex

    try:
        return ray.get(ref), "", tries
    except InfraError as exc:  # RayTaskError(InfraError) is an InfraError too
        return None, str(getattr(exc, "cause", None) or exc).strip().splitlines()[-1], tries
    except UsageError as exc:
        return None, str(getattr(exc, "cause", None) or exc), 1
    except rex.TaskCancelledError:
        return None, f"the {noun}'s task was cancelled", tries
    except (rex.WorkerCrashedError, rex.NodeDiedError, rex.OwnerDiedError) as exc:
        return None, f"the {noun}'s worker was lost on every {retry} ({type(exc).__name__})", tries
    except rex.RayTaskError as exc:
        return None, f"the {noun} failed on the node: {str(exc).strip().splitlines()[-1][:300]}", 1


class RayExecutor:
    """Runs units as tasks on a Ray cluster (``address``, else ``RAY_ADDRESS``, else a
    local one-node cluster with ``local_slots`` docker slots)."""

    builds_images = True

    def __init__(
        self,
        address: str | None = None,
        *,
        run_id: str,
        max_retries: int = DEFAULT_MAX_RETRIES,
        local_slots: int = 1,
        ship_bundles: bool = True,
        max_in_flight: int | None = None,
        image_registry: str | None = None,
    ):
        """``ship_bundles``: send each repository bundle to the nodes once, through the
        object store (small, read once per node); False when every node sees the task
        set at the same path (a shared filesystem). ``image_registry`` (``host/prefix``):
        a node lacking an environment image pulls ``host/prefix/evalkit-env/<repo>:<key>``
        before building it."""
        try:
            import ray
        except ImportError:
            raise UsageError("--executor ray needs Ray: pip install 'evalkit[ray]'") from None
        self.run_id = run_id
        self.max_retries = max_retries
        self.ship_bundles = ship_bundles
        self.image_registry = image_registry or None
        self._owns = not ray.is_initialized()
        if self._owns:
            address = address or os.environ.get("RAY_ADDRESS") or None
            try:
                if address:
                    ray.init(address=address, log_to_driver=False, configure_logging=False)
                else:
                    ray.init(
                        resources={"docker": max(1, local_slots)},
                        include_dashboard=False,
                        log_to_driver=False,
                        configure_logging=False,
                    )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise UsageError(f"cannot connect to the Ray cluster at {address}: {exc}") from None
        slots = int(ray.cluster_resources().get("docker", 0))  # type: ignore[no-untyped-call]
        if slots < 1:
            self.close()
            raise UsageError(
                "no node of the Ray cluster declares container slots: start each node "
                "with ray start --resources '{\"docker\": N}' (docs/scale-out.md)"
            )
        self.slots = slots
        self.max_in_flight = max_in_flight or max(2 * slots, 8)
        self._task = ray.remote(run_unit_task).options(
            num_cpus=0,
            resources={"docker": 1},
            max_retries=max_retries,
            retry_exceptions=[InfraError],
        )
        self._bundles: dict[Path, tuple[Any, str]] = {}
        self._bundles_lock = threading.Lock()  # execute() is called from many threads

    def bundle(self, path: Path) -> tuple[Any, str]:
        """The bundle at ``path`` for a task's arguments: its object ref (None when not
        shipped) and its sha256; each bundle is put once per driver."""
        import ray

        with self._bundles_lock:
            if path not in self._bundles:
                data = path.read_bytes()
                sha = hashlib.sha256(data).hexdigest()
                self._bundles[path] = (ray.put(data) if self.ship_bundles else None, sha)
            return self._bundles[path]

    def _submit(self, unit: EvalUnit) -> Any:
        ref, sha = self.bundle(unit.bundle)
        # Ray types remote() up to five arguments; the sixth is checked by run_unit_task.
        return self._task.remote(  # type: ignore[call-arg]
            unit, self.run_id, ref, sha, __version__, self.image_registry
        )

    def _result(self, unit: EvalUnit, ref: Any) -> UnitOutput:
        """The task's output, or an infra verdict for a unit that could not run: never a
        model's verdict made up from a failure of ours."""
        from evalkit.harness import UnitOutput, infra_verdict

        got, reason, attempts = ray_get(ref, self.max_retries + 1, noun="unit", retry="attempt")
        if got is not None:
            output: UnitOutput = got
            return output
        return UnitOutput(infra_verdict(unit.prediction, reason, attempts=attempts))

    def execute(self, unit: EvalUnit) -> UnitOutput:
        return self._result(unit, self._submit(unit))

    def run(self, units: list[EvalUnit]) -> Iterator[tuple[EvalUnit, UnitOutput]]:
        import ray

        queue = list(reversed(units))
        pending: dict[Any, EvalUnit] = {}
        try:
            while queue or pending:
                while queue and len(pending) < self.max_in_flight:
                    unit = queue.pop()
                    pending[self._submit(unit)] = unit
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=None)
                for ref in ready:
                    unit = pending.pop(ref)
                    yield unit, self._result(unit, ref)
        finally:
            # Interrupted (or the consumer stopped): kill what still runs; its workers
            # die and the node reapers remove their containers.
            for ref in pending:
                with contextlib.suppress(Exception):  # already finished, or gone with its node
                    ray.cancel(ref, force=True)

    def close(self) -> None:
        import ray

        self._bundles.clear()
        if self._owns and ray.is_initialized():
            ray.shutdown()
            self._owns = False

"""The sandbox interface and its Docker implementation.

The agent's patch is untrusted code. At test time a container has no network,
memory/CPU/pids limits, a non-root user, every capability dropped,
``no-new-privileges``, no host mounts and none of the host's environment.
Containers are labelled and tracked so they are removed on Ctrl-C, on a crash,
and (for a ``kill -9``ed run) by the next run.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import signal
import tarfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from evalkit.errors import InfraError

if TYPE_CHECKING:
    import docker

LABEL = "evalkit.sandbox"
OUTPUT_CAP = 1024 * 1024


class ExecResult(NamedTuple):
    exit_code: int | None
    output: bytes
    """Combined stdout/stderr, head and tail kept when over the cap."""
    timed_out: bool
    duration_s: float


@dataclass(frozen=True)
class Limits:
    """Resource and privilege limits for one sandbox."""

    memory: str = "4g"
    cpus: float = 1.0
    pids: int = 512
    user: str = "1000:1000"
    network: bool = False
    tmpfs_size: str = "1g"


class Sandbox(Protocol):
    """What the harness needs from an isolated environment."""

    def put_archive(self, path: str, data: bytes) -> None: ...

    def exec(
        self, cmd: list[str], *, env: dict[str, str] | None = None, timeout: float | None = None
    ) -> ExecResult: ...

    def read_file(self, path: str) -> bytes | None: ...

    def close(self) -> None: ...


_live: dict[str, Any] = {}
_live_lock = threading.Lock()
_stopping = threading.Event()


def allow_new_sandboxes() -> None:
    _stopping.clear()


def remove_live_containers(*, stop: bool = False) -> None:
    """Force-remove every container this process started and has not yet removed.

    With ``stop``, no new sandbox may start afterwards (an interrupted run must not
    spin up retries while it shuts down).
    """
    if stop:
        _stopping.set()
    with _live_lock:
        containers = list(_live.values())
        _live.clear()
    for container in containers:
        with contextlib.suppress(Exception):
            container.remove(force=True)


atexit.register(remove_live_containers)


def install_signal_cleanup() -> None:
    """Make SIGTERM behave like Ctrl-C so ``finally`` blocks and atexit cleanup run."""

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise)


def docker_client(timeout: int = 600) -> docker.DockerClient:
    """Connect to the engine, or raise :class:`InfraError` with what to do about it."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except DockerException as exc:
        raise InfraError(
            f"no Docker engine answers ({exc.__class__.__name__}); start dockerd "
            "(scripts/setup.sh does) or set DOCKER_HOST"
        ) from None
    return client


def remove_stale(client: docker.DockerClient, run_label: str | None = None) -> int:
    """Remove containers left behind by killed runs (all evalkit ones, or one run's)."""
    selector = f"{LABEL}={run_label}" if run_label else LABEL
    # The low-level list makes one call; the high-level one inspects each container and
    # fails if another process removes one meanwhile.
    stale = client.api.containers(all=True, filters={"label": selector})
    for container in stale:
        with contextlib.suppress(Exception):  # already gone
            client.api.remove_container(container["Id"], force=True)
    return len(stale)


class DockerSandbox:
    """One container, started from an image and removed on :meth:`close`."""

    def __init__(
        self,
        client: docker.DockerClient,
        image: str,
        limits: Limits = Limits(),
        *,
        label: str = "1",
        workdir: str = "/testbed",
    ):
        from docker.errors import DockerException

        if _stopping.is_set():
            raise InfraError("the run is shutting down")
        self._client = client
        try:
            self._container = client.containers.run(
                image,
                command=["sleep", "infinity"],
                detach=True,
                user=limits.user,
                working_dir=workdir,
                network_mode="bridge" if limits.network else "none",
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                mem_limit=limits.memory,
                memswap_limit=limits.memory,
                nano_cpus=int(limits.cpus * 1e9),
                pids_limit=limits.pids,
                tmpfs={"/tmp": f"rw,nosuid,size={limits.tmpfs_size}"},
                environment={},
                labels={LABEL: label},
                stop_signal="SIGKILL",
            )
        except DockerException as exc:
            raise InfraError(f"could not start a container from {image}: {exc}") from None
        with _live_lock:
            _live[self._container.id] = self._container

    @property
    def id(self) -> str:
        return str(self._container.id)

    def __enter__(self) -> DockerSandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def put_archive(self, path: str, data: bytes) -> None:
        from docker.errors import DockerException

        try:
            ok = self._container.put_archive(path, data)
        except DockerException as exc:
            raise InfraError(f"copying files into the sandbox failed: {exc}") from None
        if not ok:
            raise InfraError("copying files into the sandbox failed")

    def exec(
        self,
        cmd: list[str],
        *,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        user: str | None = None,
    ) -> ExecResult:
        """Run ``cmd``; past ``timeout`` the whole container is killed (the result says so)."""
        from docker.errors import DockerException

        api = self._client.api
        start = time.monotonic()
        try:
            exec_id = api.exec_create(
                self._container.id, cmd, environment=env or {}, user=user or ""
            )["Id"]
            stream = api.exec_start(exec_id, stream=True, demux=False)
        except DockerException as exc:
            raise InfraError(f"exec in the sandbox failed: {exc}") from None
        head: list[bytes] = []
        tail: list[bytes] = []
        sizes = [0, 0]
        half = OUTPUT_CAP // 2

        def pump() -> None:
            try:
                for chunk in stream:
                    if sizes[0] < half:
                        head.append(chunk)
                        sizes[0] += len(chunk)
                    else:
                        tail.append(chunk)
                        sizes[1] += len(chunk)
                        while sizes[1] > half and len(tail) > 1:
                            sizes[1] -= len(tail.pop(0))
            except Exception:
                pass

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        reader.join(timeout)
        timed_out = reader.is_alive()
        if timed_out:
            self.kill()
            reader.join(10)
        output = b"".join(head)
        if tail:
            output += b"\n[... evalkit: output truncated ...]\n" + b"".join(tail)
        exit_code: int | None = None
        if not timed_out:
            try:
                exit_code = api.exec_inspect(exec_id).get("ExitCode")
            except DockerException as exc:
                raise InfraError(f"reading the exit code failed: {exc}") from None
        return ExecResult(exit_code, output, timed_out, time.monotonic() - start)

    def read_file(self, path: str) -> bytes | None:
        from docker.errors import DockerException, NotFound

        try:
            bits, _ = self._container.get_archive(path)
            raw = b"".join(bits)
        except NotFound:
            return None
        except DockerException as exc:
            raise InfraError(f"reading {path} from the sandbox failed: {exc}") from None
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            member = tar.next()
            if member is None or not member.isfile():
                return None
            fh = tar.extractfile(member)
            return fh.read() if fh else None

    def kill(self) -> None:
        with contextlib.suppress(Exception):  # already dead
            self._container.kill()

    def close(self, *, wait: bool = True) -> None:
        """Remove the container; ``wait=False`` hands removal to a background reaper."""
        if wait:
            _remove(self._container)
        else:
            _reaper().submit(_remove, self._container)


def _remove(container: Any) -> None:
    with contextlib.suppress(Exception):  # already gone
        container.remove(force=True)
    with _live_lock:
        _live.pop(container.id, None)


_reaper_pool: ThreadPoolExecutor | None = None


def _reaper() -> ThreadPoolExecutor:
    global _reaper_pool
    with _live_lock:
        if _reaper_pool is None:
            _reaper_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evalkit-reaper")
        return _reaper_pool


def drain_removals() -> None:
    """Wait until every background removal has finished."""
    global _reaper_pool
    with _live_lock:
        pool, _reaper_pool = _reaper_pool, None
    if pool is not None:
        pool.shutdown(wait=True)


class SandboxPool:
    """Keeps one started spare container per (image, limits), so a unit need not wait
    for ``docker run``. Every sandbox is still used exactly once."""

    def __init__(self, client: docker.DockerClient, label: str):
        self._client = client
        self._label = label
        self._spares: dict[tuple[str, Limits], Future[DockerSandbox]] = {}
        self._lock = threading.Lock()
        self._starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evalkit-prestart")

    def _start(self, image: str, limits: Limits) -> DockerSandbox:
        return DockerSandbox(self._client, image, limits, label=self._label)

    def acquire(self, image: str, limits: Limits) -> DockerSandbox:
        key = (image, limits)
        with self._lock:
            spare = self._spares.pop(key, None)
            self._spares[key] = self._starter.submit(self._start, image, limits)
        if spare is not None:
            with contextlib.suppress(InfraError):
                return spare.result()
        return self._start(image, limits)

    def close(self) -> None:
        self._starter.shutdown(wait=True)
        for spare in self._spares.values():
            with contextlib.suppress(Exception):
                spare.result().close()
        self._spares.clear()


def tar_files(
    files: dict[str, bytes | str], *, uid: int = 1000, mode: int = 0o644, base: bytes = b""
) -> bytes:
    """A tar holding ``files`` (path -> content), owned by ``uid``; parent dirs included.

    With ``base`` (a tar), the files are appended to it: one copy into the sandbox.
    """
    out = io.BytesIO(base)
    seen_dirs: set[str] = set()
    with tarfile.open(fileobj=out, mode="a" if base else "w", format=tarfile.PAX_FORMAT) as tar:
        for path, content in files.items():
            parts = path.strip("/").split("/")
            for depth in range(1, len(parts)):
                directory = "/".join(parts[:depth])
                if directory not in seen_dirs:
                    seen_dirs.add(directory)
                    info = tarfile.TarInfo(directory)
                    info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, 0o755, uid, uid
                    tar.addfile(info)
            raw = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(path.strip("/"))
            info.size, info.mode, info.uid, info.gid = len(raw), mode, uid, uid
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(raw))
    return out.getvalue()

"""The sandbox interface and its Docker implementation.

The agent's patch is untrusted code. At test time a container has no network,
memory/CPU/pids limits, a non-root user, every capability dropped,
``no-new-privileges``, a read-only root filesystem with size-capped tmpfs for every
writable path, no host mounts and none of the host's environment.

Every container's PID 1 is ``sleep DEADLINE``: it ends on its own at its deadline even
when evalkit is ``kill -9``ed (a dead-man switch), and any evalkit process removes
expired evalkit containers. Labels carry the run, a per-invocation id, the host and
the pid, so two processes never touch each other's sandboxes.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import signal
import socket
import tarfile
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from evalkit.errors import InfraError
from evalkit.records import invocation_id

if TYPE_CHECKING:
    import docker

LABEL = "evalkit.sandbox"
LABEL_INVOCATION = "evalkit.invocation"
LABEL_DEADLINE = "evalkit.deadline"
LABEL_HOST = "evalkit.host"
LABEL_PID = "evalkit.pid"
COLLECTOR_UID = 1001
"""The evidence collector's user: not the test user, so tests cannot touch its output."""
OUTPUT_CAP = 1024 * 1024
DEFAULT_LIFETIME_S = 3 * 3600


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
    disk: str = "4g"
    """Size of the checkout's tmpfs (``/testbed``); the root filesystem is read-only."""
    lifetime_s: float = DEFAULT_LIFETIME_S
    """PID 1 exits after this long, whatever happens to evalkit."""


class Sandbox(Protocol):
    """What the harness and the bake-off need from an isolated environment.

    ``exec`` runs one command to completion (stdin from ``input``, output capped at
    head and tail); past ``timeout`` the sandbox is killed and the result says
    ``timed_out``. ``start`` runs a command whose stdin stays open. Errors of the
    sandbox itself raise :class:`~evalkit.errors.InfraError`.
    """

    deadline: float

    def exec(
        self,
        cmd: list[str],
        *,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        user: str | None = None,
        input: bytes | None = None,
        workdir: str | None = None,
        cap: int = ...,
    ) -> ExecResult: ...

    def start(
        self, cmd: list[str], *, user: str | None = None, env: dict[str, str] | None = None
    ) -> Process: ...

    def kill(self) -> None: ...

    def close(self, *, wait: bool = True) -> None: ...


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(client: docker.DockerClient, run_label: str | None = None) -> int:
    """Remove evalkit containers nobody owns any more: past their deadline (from any
    process, any host), or started on this host by a process that is gone.

    Containers of a live process are never touched, even with the same run label: two
    ``evaluate`` processes sharing a run id in different ``--runs-dir`` keep their own.
    """
    selector = f"{LABEL}={run_label}" if run_label else LABEL
    # The low-level list makes one call; the high-level one inspects each container and
    # fails if another process removes one meanwhile.
    listed = client.api.containers(all=True, filters={"label": selector})
    host = socket.gethostname()
    now = time.time()
    removed = 0
    for container in listed:
        labels = container.get("Labels") or {}
        if labels.get(LABEL_INVOCATION) == invocation_id():
            continue
        try:
            expired = float(labels.get(LABEL_DEADLINE, "inf")) < now
        except ValueError:
            expired = True
        orphan = False
        if labels.get(LABEL_HOST) == host:
            try:
                orphan = not _pid_alive(int(labels.get(LABEL_PID, "0")))
            except ValueError:
                orphan = True
        elif LABEL_INVOCATION not in labels:
            orphan = True  # written by an evalkit that predates invocation labels
        if expired or orphan:
            with contextlib.suppress(Exception):  # already gone
                client.api.remove_container(container["Id"], force=True)
            removed += 1
    return removed


class Process:
    """A command running in a sandbox with its stdin open (the evidence collector)."""

    def __init__(self, sock: Any, exec_id: str | None = None):
        self.sock = sock
        self.exec_id = exec_id
        self._raw = getattr(sock, "_sock", sock)
        self._frames = _Frames(self._raw)

    def write(self, data: bytes) -> None:
        self._raw.sendall(data)

    def read_line(self, timeout: float) -> bytes:
        """The next line of the command's stdout (b"" at EOF or timeout)."""
        return self._frames.read_line(timeout)

    def peek(self, timeout: float, size: int) -> bytes:
        """The first ``size`` bytes of what the command prints next, left to be read
        (fewer at EOF or timeout)."""
        return self._frames.peek(timeout, size)

    def finish(self, timeout: float, cap: int = OUTPUT_CAP) -> bytes:
        """Close stdin, then read the rest of stdout (at most ``cap`` bytes)."""
        with contextlib.suppress(OSError):
            self._raw.shutdown(socket.SHUT_WR)
        out = self._frames.read_all(timeout, cap)
        self.close()
        return out

    def close(self) -> None:
        """Drop the connection (the command, if still running, sees its stdin close)."""
        with contextlib.suppress(OSError):
            self._raw.close()


class _Frames:
    """Docker's multiplexed exec stream (8-byte headers), stdout only, with deadlines.

    Buffers grow in place and a line is searched for only in what arrived since the
    last search, so a large document read as one line costs linear time.
    """

    def __init__(self, raw: Any):
        self._raw = raw
        self._pending = bytearray()
        self._buffer = bytearray()
        self._scanned = 0
        self.eof = False

    def _fill(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or self.eof:
            return False
        self._raw.settimeout(remaining)
        try:
            chunk = self._raw.recv(65536)
        except OSError:  # includes timeouts
            return False
        if not chunk:
            self.eof = True
            return False
        self._pending += chunk
        start = 0
        while len(self._pending) - start >= 8:
            size = int.from_bytes(self._pending[start + 4 : start + 8], "big")
            if len(self._pending) - start < 8 + size:
                break
            if self._pending[start] == 1:
                self._buffer += self._pending[start + 8 : start + 8 + size]
            start += 8 + size
        del self._pending[:start]
        return True

    def read_line(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            end = self._buffer.find(b"\n", self._scanned)
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                self._scanned = 0
                return line
            self._scanned = len(self._buffer)
            if not self._fill(deadline):
                return b""

    def peek(self, timeout: float, size: int) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self._buffer) < size and self._fill(deadline):
            pass
        return bytes(self._buffer[:size])

    def read_all(self, timeout: float, cap: int) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self._buffer) <= cap and self._fill(deadline):
            pass
        return bytes(self._buffer[:cap])


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
        mounts: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
    ):
        """``mounts`` maps container paths to host paths, bound read-only; ``labels`` are
        added to evalkit's own (a cluster unit's run, unit and attempt)."""
        from docker.errors import DockerException

        if _stopping.is_set():
            raise InfraError("the run is shutting down")
        self._client = client
        self.deadline = time.time() + limits.lifetime_s
        uid = limits.user.split(":")[0]
        # Read-only root: every writable path is a size-capped tmpfs, so a test cannot
        # fill the host's disk (overlay2 on ext4 cannot cap a writable layer).
        tmpfs = {
            "/tmp": f"rw,exec,nosuid,size={limits.tmpfs_size},mode=1777",
            "/var/tmp": f"rw,exec,nosuid,size={limits.tmpfs_size},mode=1777",
            workdir: f"rw,exec,size={limits.disk},uid={uid},gid={uid},mode=0755",
            "/evalkit": "rw,nosuid,size=64m,mode=0755",
            "/evalkit/r": f"rw,nosuid,noexec,size=1m,uid={COLLECTOR_UID},gid={COLLECTOR_UID}"
            ",mode=0711",
        }
        volumes = {src: {"bind": dst, "mode": "ro"} for dst, src in (mounts or {}).items()}
        try:
            self._container = client.containers.run(
                image,
                # The dead-man switch: PID 1 ends the container at its deadline.
                command=["sleep", str(int(limits.lifetime_s))],
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
                read_only=True,
                tmpfs=tmpfs,
                volumes=volumes,
                environment={},
                labels={
                    **(labels or {}),
                    LABEL: label,
                    LABEL_INVOCATION: invocation_id(),
                    LABEL_DEADLINE: str(int(self.deadline)),
                    LABEL_HOST: socket.gethostname(),
                    LABEL_PID: str(os.getpid()),
                },
                stop_signal="SIGKILL",
                auto_remove=True,
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

    def put_archive(self, path: str, data: bytes, *, user: str | None = None) -> None:
        """Unpack the tar ``data`` under ``path`` as ``user`` (files owned by that user).

        Through ``tar`` in the sandbox rather than Docker's archive API, which refuses a
        read-only root filesystem and cannot see tmpfs mounts.
        """
        result = self.exec(
            ["tar", "-x", "-C", path, "--no-same-owner", "--no-same-permissions", "-f", "-"],
            user=user,
            input=data,
            timeout=600,
        )
        if result.timed_out or result.exit_code != 0:
            raise InfraError(f"copying files into the sandbox failed: {result.output[-300:]!r}")

    def exec(
        self,
        cmd: list[str],
        *,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        user: str | None = None,
        input: bytes | None = None,
        workdir: str | None = None,
        cap: int = OUTPUT_CAP,
    ) -> ExecResult:
        """Run ``cmd``; ``input`` goes to its stdin. Past ``timeout`` the whole container
        is killed (the result says so). Output keeps head and tail up to ``cap``."""
        start = time.monotonic()
        exec_id, sock = self._exec_start(cmd, env, user, input is not None, workdir)
        return self._complete(exec_id, sock, input, timeout, cap, start)

    def _exec_start(
        self,
        cmd: list[str],
        env: dict[str, str] | None,
        user: str | None,
        stdin: bool,
        workdir: str | None = None,
    ) -> tuple[str, Any]:
        from docker.errors import DockerException

        api = self._client.api
        try:
            exec_id = api.exec_create(
                self._container.id,
                cmd,
                environment=env or {},
                user=user or "",
                stdin=stdin,
                workdir=workdir,
            )["Id"]
            return str(exec_id), api.exec_start(exec_id, socket=True)
        except DockerException as exc:
            raise InfraError(f"exec in the sandbox failed: {exc}") from None

    def _complete(
        self,
        exec_id: str,
        sock: Any,
        input: bytes | None,
        timeout: float | None,
        cap: int,
        start: float,
    ) -> ExecResult:
        from docker.errors import DockerException

        raw = getattr(sock, "_sock", sock)
        head: list[bytes] = []
        tail: list[bytes] = []
        sizes = [0, 0]
        half = cap // 2

        def pump() -> None:
            try:
                if input is not None:
                    raw.sendall(input)
                    raw.shutdown(socket.SHUT_WR)
                from docker.utils.socket import frames_iter

                for _, chunk in frames_iter(sock, tty=False):
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
        with contextlib.suppress(Exception):
            raw.close()
        output = b"".join(head)
        if tail:
            output += b"\n[... evalkit: output truncated ...]\n" + b"".join(tail)
        exit_code: int | None = None
        if not timed_out:
            try:
                exit_code = self._client.api.exec_inspect(exec_id).get("ExitCode")
            except DockerException as exc:
                raise InfraError(f"reading the exit code failed: {exc}") from None
        return ExecResult(exit_code, output, timed_out, time.monotonic() - start)

    def start(
        self, cmd: list[str], *, user: str | None = None, env: dict[str, str] | None = None
    ) -> Process:
        """Start ``cmd`` with its stdin open; talk to it through the returned handle."""
        exec_id, sock = self._exec_start(cmd, env, user, True)
        return Process(sock, exec_id)

    def complete(
        self, proc: Process, input: bytes, *, timeout: float | None, cap: int = OUTPUT_CAP
    ) -> ExecResult:
        """Finish a command started with :meth:`start` (nothing read from it yet) as
        :meth:`exec` would have run it: ``input`` on its stdin, then stdin closed; the
        duration counts from now, so a command started ahead waits at no cost."""
        if proc.exec_id is None:
            raise InfraError("only a command started by this sandbox can be completed")
        return self._complete(proc.exec_id, proc.sock, input, timeout, cap, time.monotonic())

    def read_file(self, path: str, cap: int = OUTPUT_CAP) -> bytes | None:
        """``path``'s content, at most ``cap`` bytes: streamed through ``head`` in the
        sandbox, so a huge (or sparse) file costs the host no more than the cap.
        None when there is no regular file there."""
        script = 'test -f "$1" && ! test -L "$1" && exec head -c "$2" -- "$1"'
        result = self.exec(["sh", "-c", script, "-", path, str(cap)], timeout=120, cap=2 * cap)
        if result.timed_out:
            raise InfraError(f"reading {path} from the sandbox timed out")
        return result.output[:cap] if result.exit_code == 0 else None

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
    # A killed auto-remove container may still be on its way out: wait until it is gone.
    with contextlib.suppress(Exception):
        container.wait(condition="removed", timeout=10)
    with _live_lock:
        _live.pop(container.id, None)


_reaper_pool: ThreadPoolExecutor | None = None


def _reaper() -> ThreadPoolExecutor:
    global _reaper_pool
    with _live_lock:
        if _reaper_pool is None:
            _reaper_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="evalkit-reaper")
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
    for ``docker run``. Every sandbox is still used exactly once.

    ``demand``: how many sandboxes of each (image, limits) the run will ask for. The
    first spare of each is then started at once, the next one at the second acquire,
    and none past the last one wanted (no container started only to be removed).
    Without it, a spare is started after each acquire.
    """

    def __init__(
        self,
        client: docker.DockerClient,
        label: str,
        demand: Mapping[tuple[str, Limits], int] | None = None,
    ):
        self._client = client
        self._label = label
        self._spares: dict[tuple[str, Limits], Future[DockerSandbox]] = {}
        self._lock = threading.Lock()
        self._starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evalkit-prestart")
        self._demand = dict(demand) if demand is not None else None
        self._served: set[tuple[str, Limits]] = set()
        for key, count in (self._demand or {}).items():
            if count > 0:
                self._spares[key] = self._starter.submit(self._start, *key)

    def _start(self, image: str, limits: Limits) -> DockerSandbox:
        return DockerSandbox(self._client, image, limits, label=self._label)

    def acquire(self, image: str, limits: Limits) -> DockerSandbox:
        key = (image, limits)
        with self._lock:
            spare = self._spares.pop(key, None)
            if self._demand is None:
                wanted = True
            else:
                # Not on the first acquire: that unit's staging is the run's critical
                # path, and the next unit only stages once its tests start.
                first = key not in self._served
                self._served.add(key)
                self._demand[key] = self._demand.get(key, 0) - 1
                wanted = self._demand[key] > 0 and not first
            if wanted:
                self._spares[key] = self._starter.submit(self._start, image, limits)
        if spare is not None:
            with contextlib.suppress(InfraError):
                return spare.result()
        return self._start(image, limits)

    def close(self) -> None:
        self._starter.shutdown(wait=True)
        for spare in self._spares.values():
            with contextlib.suppress(Exception):
                spare.result().close(wait=False)
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

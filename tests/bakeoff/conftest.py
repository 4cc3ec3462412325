"""Fixtures for running the REAL agent CLIs in a network-less container against the scripted server.

The packs are built by evalkit's own pack code from npm/PyPI into the persistent pack cache
(``$EVALKIT_CACHE/packs`` or ``~/.cache/evalkit/packs``), so each is installed at most once per
machine. The model server runs on the host on a Unix socket in a directory mounted read-only
into the container; a tiny TCP->Unix forwarder (test scaffolding, below; the gateway helper ships
the real ``evalkit/_container/forward.py``) exposes it on the container's loopback.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from evalkit.bakeoff.adapters import AgentContext, Claim, Invocation, get_adapter, read_claim_file
from evalkit.bakeoff.packs import PACK_MOUNT, Pack, default_cache_dir, ensure_pack
from evalkit.bakeoff.scripted import RecordedRequest, Script, ScriptedModelServer

BASE_IMAGE = "evalkit/base:bookworm"
AGENT_UID = 1000
HOME = "/tmp/home"
CLAIM_FILE = "/tmp/evalkit/claim.json"
PROBLEM_FILE = "/evalkit/problem.md"
BASE_URL = "http://127.0.0.1:4000"
AGENT_TIMEOUT_S = 240
# Starts like a flag: a CLI that parsed the problem statement as options would fail the run.
PROBLEM = "--help\n- Fix add() in src/calc.py: it subtracts."

# --- test scaffolding: TCP -> Unix socket forwarder (the gateway helper ships the real one) ---
FORWARDER = r"""
import socket, sys, threading
host, port = sys.argv[1].rsplit(":", 1)
path = sys.argv[2]
def pump(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
def serve(conn):
    up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        up.connect(path)
    except OSError:
        conn.close()
        return
    threading.Thread(target=pump, args=(up, conn), daemon=True).start()
    pump(conn, up)
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((host, int(port)))
srv.listen(64)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

FORWARD_ARGV = [
    "/usr/bin/python3",
    "/evalkit/lib/forward.py",
    "127.0.0.1:4000",
    "/evalkit/gateway/model.sock",
]

# Writes files (path -> base64) as the agent user; /tmp is a tmpfs that docker cp cannot reach.
WRITE_FILES = (
    "import base64,json,os,sys\n"
    "for p,b in json.loads(sys.argv[1]).items():\n"
    "    os.makedirs(os.path.dirname(p),exist_ok=True)\n"
    "    if not p.endswith('/'): open(p,'wb').write(base64.b64decode(b))\n"
)


def git(cwd: Path, *args: str) -> str:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(cwd),
        "GIT_AUTHOR_NAME": "T",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "T",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    cmd = ["git", "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false", *args]
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def repo_tar(files: dict[str, str]) -> tuple[bytes, str]:
    """A git repo with ``files`` committed, as a tar of ``testbed/`` owned by the agent uid."""
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "testbed"
        repo.mkdir()
        for rel, text in files.items():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            (repo / rel).write_text(text)
        git(repo, "init", "-q")
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "base")
        base = git(repo, "rev-parse", "HEAD")
        buf = io.BytesIO()

        def own(info: tarfile.TarInfo) -> tarfile.TarInfo:
            info.uid = info.gid = AGENT_UID
            info.uname = info.gname = ""
            return info

        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(repo, arcname="testbed", filter=own)
        return buf.getvalue(), base


def lib_tar(forwarder: str = FORWARDER) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = forwarder.encode()
        info = tarfile.TarInfo("evalkit/lib/forward.py")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class AgentRun:
    adapter: str
    exit_code: int | None
    output: bytes
    collected: dict[str, bytes]
    claim_file: bytes | None
    diff: str
    requests: list[RecordedRequest]
    duration_s: float
    markers: list[str] = field(default_factory=list)
    """Files named ``pwned*`` anywhere in /tmp or /testbed after the run (attack markers)."""

    def adapter_claim(self) -> Claim:
        return get_adapter(self.adapter).claim(self.exit_code, self.output, self.collected)

    def file_claim(self) -> Claim | None:
        return None if self.claim_file is None else read_claim_file(self.claim_file)

    def text(self) -> str:
        return self.output.decode(errors="replace")


def _exec(
    container: Any,
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    workdir: str = "/testbed",
    user: str = f"{AGENT_UID}:{AGENT_UID}",
) -> tuple[int, bytes]:
    code, out = container.exec_run(argv, environment=env or {}, workdir=workdir, user=user)
    return int(code), bytes(out)


def run_agent(
    client: Any,
    pack: Pack | None,
    adapter_name: str,
    script: Script,
    repo_files: dict[str, str],
    *,
    model: str,
    args: list[str] | None = None,
    problem: str = PROBLEM,
    command: list[str] | None = None,
    tweak: Callable[[Invocation], Invocation] | None = None,
    dead_gateway: bool = False,
    socket_dir: Path | None = None,
    forwarder: tuple[str, list[str]] | None = None,
    api_key: str = "sk-evalkit-dummy",
) -> AgentRun:
    """One attempt, the way the runner will make it: real CLI, no network, scripted model.

    ``socket_dir`` (holding ``model.sock``, e.g. a gateway channel's) replaces the scripted
    server on its own socket; ``forwarder`` = (script text, argv) replaces the scaffolding one.
    """
    adapter = get_adapter(adapter_name)
    own_dir = socket_dir is None
    sockdir = Path(tempfile.mkdtemp(prefix="ek-gw-", dir="/tmp")) if own_dir else socket_dir
    assert sockdir is not None
    sockdir.chmod(0o755)
    server = ScriptedModelServer(script, unix_socket=sockdir / "model.sock") if own_dir else None
    if server is not None:
        server.start()
    forward_text, forward_argv = forwarder or (FORWARDER, FORWARD_ARGV)
    volumes = {str(sockdir): {"bind": "/evalkit/gateway", "mode": "ro"}}
    if pack is not None:
        volumes[str(pack.path)] = {"bind": PACK_MOUNT, "mode": "ro"}
    container = client.containers.run(
        BASE_IMAGE,
        ["sleep", "infinity"],
        detach=True,
        network_mode="none",
        user=f"{AGENT_UID}:{AGENT_UID}",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        mem_limit="4g",
        pids_limit=1024,
        tmpfs={"/tmp": "rw,nosuid,size=1g"},
        environment={},
        volumes=volumes,
        labels={"evalkit.test": "agents"},
    )
    try:
        tar, base = repo_tar(repo_files)
        container.put_archive("/", tar)
        container.put_archive("/", lib_tar(forward_text))
        container.put_archive("/", _problem_tar(problem))
        container.exec_run(
            forward_argv,
            detach=True,
            user=f"{AGENT_UID}:{AGENT_UID}",
        )
        ctx = AgentContext(
            problem=problem,
            model=model,
            base_url=BASE_URL,
            api_key=api_key,
            args=args or [],
            home=HOME,
            workdir="/testbed",
            pack_dir=PACK_MOUNT,
            command=command,
        )
        inv: Invocation = adapter.invocation(ctx)
        if tweak is not None:  # only the positive controls of the attack tests use this
            inv = tweak(inv)
        files = {HOME + "/": b"", os.path.dirname(CLAIM_FILE) + "/": b"", **inv.files}
        payload = json.dumps({p: base64.b64encode(b).decode() for p, b in files.items()})
        code, out = _exec(container, ["/usr/bin/python3", "-c", WRITE_FILES, payload])
        assert code == 0, out
        _wait_port(container)
        if dead_gateway:  # the forwarder accepts, then finds nothing behind the socket
            assert server is not None
            server.close()
        env = inv.env | {
            "HOME": HOME,
            "EVALKIT_PROBLEM_FILE": PROBLEM_FILE,
            "EVALKIT_CLAIM_FILE": CLAIM_FILE,
            "EVALKIT_MODEL_BASE_URL": BASE_URL,
            "EVALKIT_MODEL_API_KEY": api_key,
        }
        start = time.monotonic()
        code, output = _exec(
            container, ["timeout", "-k", "5", str(AGENT_TIMEOUT_S), *inv.argv], env=env
        )
        duration = time.monotonic() - start
        collected = {}
        for path in adapter.files_to_collect():
            c, data = _exec(container, ["cat", path])
            if c == 0:
                collected[path] = data
        c, claim_raw = _exec(container, ["cat", CLAIM_FILE])
        excludes = " ".join(shlex.quote(f":(exclude){g}") for g in adapter.diff_excludes)
        _, diff = _exec(
            container,
            ["sh", "-c", f"git add -A -- . {excludes} >/dev/null && git diff --cached {base}"],
            env={"HOME": HOME},
        )
        _, found = _exec(container, ["sh", "-c", "find /tmp /testbed -name 'pwned*' 2>/dev/null"])
        return AgentRun(
            adapter_name,
            code,
            output,
            collected,
            claim_raw if c == 0 else None,
            diff.decode(errors="replace"),
            list(server.requests) if server is not None else [],
            duration,
            found.decode().split(),
        )
    finally:
        container.remove(force=True)
        if server is not None:
            server.close()
            shutil.rmtree(sockdir, ignore_errors=True)


def _problem_tar(problem: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = problem.encode()
        info = tarfile.TarInfo(PROBLEM_FILE.lstrip("/"))
        info.size, info.mode = len(data), 0o444
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _wait_port(container: Any) -> None:
    probe = (
        "import socket,time\n"
        "for _ in range(100):\n"
        "    try:\n"
        "        socket.create_connection(('127.0.0.1',4000),0.2).close(); break\n"
        "    except OSError: time.sleep(0.05)\n"
        "else: raise SystemExit('forwarder did not start')\n"
    )
    code, out = _exec(container, ["/usr/bin/python3", "-c", probe])
    assert code == 0, out


@pytest.fixture(scope="session")
def pack_cache() -> Path:
    """The persistent pack cache, so the suite installs each pack at most once per machine."""
    return default_cache_dir()


@pytest.fixture(scope="session")
def base_image(docker_engine: Any) -> str:
    from docker.errors import ImageNotFound

    try:
        docker_engine.images.get(BASE_IMAGE)
    except ImageNotFound:
        pytest.fail(f"{BASE_IMAGE} missing: run scripts/setup.sh")
    return BASE_IMAGE


def build_pack(adapter: str, cache: Path, client: Any) -> Pack:
    spec = get_adapter(adapter).pack_spec("")
    assert spec is not None
    start = time.monotonic()
    pack = ensure_pack(spec, cache_dir=cache, client=client, log=lambda m: print(m, flush=True))
    print(
        f"[timing] pack {adapter}: {time.monotonic() - start:.1f}s "
        f"(build {pack.manifest().build_seconds:.1f}s when first made)"
    )
    return pack


@pytest.fixture(scope="session")
def npm() -> str:
    """npm on the host (pack builds need it). Skips locally without it; fails under CI=true."""
    from tests.conftest import IN_CI

    path = shutil.which("npm")
    if path is None:
        if IN_CI:
            pytest.fail("CI=true but npm is not installed")
        pytest.skip("npm is not installed")
    return path


@pytest.fixture
def scratch_cache() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ek-packs-") as tmp:
        yield Path(tmp)

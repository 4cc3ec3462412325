"""The in-sandbox forwarder, and the sandbox's network: the gateway is the only way out.

The Docker test runs the real thing: a ``network_mode=none`` container as uid 1000 with the
gateway's socket directory mounted read-only and ``forward.py`` started inside reaches the
host's upstream (with the real key added on the host) and nothing else.
"""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evalkit.bakeoff.gateway import (
    CONTAINER_FORWARD,
    CONTAINER_SOCKET_DIR,
    FORWARD_SCRIPT,
    SOCKET_NAME,
    Gateway,
    forward_argv,
)
from tests.bakeoff.test_gateway import (
    ANTHROPIC_ENV,
    MESSAGE,
    REAL_ANTHROPIC,
    FakeProvider,
    anthropic_stream,
    upstreams,
)

FORWARD = FORWARD_SCRIPT
IMAGE = "evalkit/base:bookworm"


def short_dir() -> Path:
    # sun_path holds 108 bytes; forward.py connects by plain path, so keep it short
    path = Path(tempfile.mkdtemp(prefix="evk-", dir="/tmp"))
    path.chmod(0o755)
    return path


class Forwarder:
    def __init__(self, socket_path: Path, *extra: str):
        self.ready_file = short_dir() / "ready"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(FORWARD),
                "--listen",
                "127.0.0.1:0",
                "--socket",
                str(socket_path),
                "--ready-file",
                str(self.ready_file),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.line = self.proc.stdout.readline().strip()
        self.port = int(self.line.rsplit(":", 1)[1])

    def close(self) -> str:
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=10)
        return err


class EchoUnixServer:
    """Echoes every byte back, then half-closes when the peer does: a byte-exact pipe test."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(16)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.echo, args=(conn,), daemon=True).start()

    def echo(self, conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)


@pytest.fixture
def echo_socket() -> Iterator[Path]:
    path = short_dir() / "echo.sock"
    server = EchoUnixServer(path)
    yield path
    server.sock.close()


def test_forwarder_pipes_bytes_exactly_and_passes_half_close(echo_socket: Path) -> None:
    fwd = Forwarder(echo_socket)
    try:
        assert fwd.line == f"ready 127.0.0.1:{fwd.port}"
        assert fwd.ready_file.read_text() == fwd.line + "\n"
        payload = os.urandom(3 * 1024 * 1024)  # binary, bigger than any buffer

        def roundtrip(data: bytes) -> bytes:
            with socket.create_connection(("127.0.0.1", fwd.port), timeout=10) as conn:
                sender = threading.Thread(
                    target=lambda: (conn.sendall(data), conn.shutdown(socket.SHUT_WR))
                )
                sender.start()
                got = bytearray()
                while chunk := conn.recv(65536):  # EOF only arrives if half-close passed
                    got += chunk
                sender.join()
                return bytes(got)

        results: list[bytes] = []
        threads = [
            threading.Thread(target=lambda d=d: results.append(roundtrip(d)))
            for d in (payload, b"small", b"")
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(results, key=len) == [b"", b"small", payload]
    finally:
        fwd.close()


def test_forwarder_survives_a_missing_socket(tmp_path: Path) -> None:
    fwd = Forwarder(short_dir() / "absent.sock")
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", fwd.port), timeout=5) as conn:
                assert conn.recv(10) == b""  # closed at once, no hang
        assert fwd.proc.poll() is None
    finally:
        err = fwd.close()
    assert "cannot reach" in err


def test_forwarder_rejects_a_bad_listen_address() -> None:
    proc = subprocess.run(
        [sys.executable, str(FORWARD), "--listen", "nonsense", "--socket", "/x"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "HOST:PORT" in proc.stderr


def test_forwarder_is_python37_compatible() -> None:
    # It runs on whatever python3 the task image has; the syntax must be 3.7's.
    ast.parse(FORWARD.read_text(), feature_version=(3, 7))
    tree = ast.parse(FORWARD.read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert imported <= set(sys.stdlib_module_names)


def test_model_call_through_forwarder_and_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ANTHROPIC_ENV, REAL_ANTHROPIC)
    provider = FakeProvider()
    try:
        with Gateway(upstreams(provider), root=short_dir()) as gw:
            channel = gw.open_attempt(
                "a", "anthropic", budget_usd=1, deadline=time.time() + 60, transcript=tmp_path / "t"
            )
            fwd = Forwarder(channel.socket_dir / SOCKET_NAME)
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{fwd.port}/v1/messages?beta=true",
                    data=json.dumps({**MESSAGE, "stream": True}).encode(),
                    headers={"x-api-key": channel.api_key, "content-type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=10) as response:
                    assert response.read() == b"".join(anthropic_stream())
            finally:
                fwd.close()
            assert provider.seen[0].header("x-api-key") == [REAL_ANTHROPIC]
            assert channel.usage().model_calls == 1
    finally:
        provider.close()


# --- the real sandbox -------------------------------------------------------------------

PROBE = r"""
import json, os, socket, subprocess, sys, urllib.request

targets = json.loads(sys.argv[1])
out = {"uid": os.getuid(), "gid": os.getgid()}
fwd = subprocess.Popen(json.loads(sys.argv[2]), stdout=subprocess.PIPE, universal_newlines=True)
out["ready"] = fwd.stdout.readline().strip()
if os.environ.get("EVALKIT_MODEL_API_KEY"):
    req = urllib.request.Request(
        os.environ["EVALKIT_MODEL_BASE_URL"] + "/v1/messages?beta=true",
        data=json.dumps({"model": "m", "max_tokens": 5, "stream": True,
                         "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"x-api-key": os.environ["EVALKIT_MODEL_API_KEY"],
                 "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            out["status"], out["body"] = resp.status, resp.read().decode()
    except Exception as exc:
        out["status"], out["body"] = "error", repr(exc)

def tcp(host, port):
    try:
        socket.create_connection((host, port), timeout=3).close()
        return "connected"
    except OSError as exc:
        return "%s: %s" % (type(exc).__name__, exc)

out["tcp"] = {"%s:%d" % (h, p): tcp(h, p) for h, p in targets}
try:
    socket.getaddrinfo("api.anthropic.com", 443)
    out["dns"] = "resolved"
except OSError as exc:
    out["dns"] = "%s: %s" % (type(exc).__name__, exc)
try:
    open("/evalkit/gateway/planted", "w")
    out["mount"] = "writable"
except OSError as exc:
    out["mount"] = exc.errno
print("RESULT " + json.dumps(out))
"""


def host_addresses() -> list[str]:
    """The host's own IPv4 addresses other than loopback (docker0, eth0, ...)."""
    try:
        text = subprocess.run(
            ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return ["172.17.0.1"]
    addresses = [line.split()[3].split("/")[0] for line in text.splitlines()]
    return [a for a in addresses if not a.startswith("127.")] or ["172.17.0.1"]


def run_probe(client: Any, targets: list[tuple[str, int]], **kwargs: Any) -> dict[str, Any]:
    forwarder = json.dumps(forward_argv())  # exactly what the runner starts
    container = client.containers.run(
        IMAGE,
        ["/usr/bin/python3", "/evalkit/probe/probe.py", json.dumps(targets), forwarder],
        detach=True,
        user="1000:1000",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        mem_limit="512m",
        pids_limit=128,
        **kwargs,
    )
    try:
        container.wait(timeout=120)
        logs = container.logs(stdout=True, stderr=True).decode()
    finally:
        container.remove(force=True)
    lines = [line for line in logs.splitlines() if line.startswith("RESULT ")]
    assert lines, logs
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    return result


@pytest.mark.docker
def test_sandbox_reaches_the_model_only_through_the_gateway(
    docker_engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ANTHROPIC_ENV, REAL_ANTHROPIC)
    # Listening on every interface, so that only the sandbox's lack of a network can stop
    # a direct connection (the control run below proves a networked container gets through).
    provider = FakeProvider(host="0.0.0.0")
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    probe_dir.chmod(0o755)
    (probe_dir / "probe.py").write_text(PROBE)
    (probe_dir / "probe.py").chmod(0o644)
    targets = [("127.0.0.1", provider.port)] + [(a, provider.port) for a in host_addresses()]
    try:
        with Gateway(upstreams(provider), root=tmp_path / "gw") as gw:
            channel = gw.open_attempt(
                "sandbox-probe",
                "anthropic",
                budget_usd=1,
                deadline=time.time() + 300,
                transcript=tmp_path / "transcript.jsonl",
            )
            mounts = {
                str(channel.socket_dir): {"bind": CONTAINER_SOCKET_DIR, "mode": "ro"},
                str(FORWARD): {"bind": CONTAINER_FORWARD, "mode": "ro"},
                str(probe_dir): {"bind": "/evalkit/probe", "mode": "ro"},
            }
            result = run_probe(
                docker_engine,
                targets,
                network_mode="none",
                volumes=mounts,
                environment={
                    "EVALKIT_MODEL_BASE_URL": channel.base_url,
                    "EVALKIT_MODEL_API_KEY": channel.api_key,
                },
            )
            usage = channel.close()

        # the model call went through, with the real key added on the host
        assert (result["uid"], result["gid"]) == (1000, 1000)
        assert result["ready"] == "ready 127.0.0.1:4000"
        assert result["status"] == 200, result["body"]
        assert result["body"] == b"".join(anthropic_stream()).decode()
        assert len(provider.seen) == 1
        assert provider.seen[0].header("x-api-key") == [REAL_ANTHROPIC]
        assert channel.api_key not in json.dumps(provider.seen[0].headers)
        assert usage.model_calls == 1 and usage.refused == []
        # ...and nothing else is reachable: not the upstream's port, not DNS
        assert all(outcome != "connected" for outcome in result["tcp"].values()), result["tcp"]
        assert result["dns"] != "resolved"
        assert result["mount"] == 30  # EROFS: nothing can be planted next to the socket

        # control: the same probe on a networked container does reach the upstream directly
        control = run_probe(
            docker_engine,
            targets[1:],
            network_mode="bridge",
            volumes={str(probe_dir): {"bind": "/evalkit/probe", "mode": "ro"}},
        )
        assert "connected" in control["tcp"].values(), control["tcp"]
    finally:
        provider.close()

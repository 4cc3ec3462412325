"""The sandbox's isolation holds inside a real container."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from typing import Any

import pytest

from evalkit.environment import BOOTSTRAP_IMAGE
from evalkit.sandbox import DockerSandbox, Limits, tar_files

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def box(docker_engine: Any) -> Any:
    from evalkit.images import image_exists

    if not image_exists(docker_engine, BOOTSTRAP_IMAGE):
        pytest.fail(
            f"{BOOTSTRAP_IMAGE} missing: run `evalkit images bootstrap` (scripts/setup.sh does)"
        )
    os.environ["EVALKIT_HOST_SECRET"] = "do-not-leak"
    sandbox = DockerSandbox(
        docker_engine,
        BOOTSTRAP_IMAGE,
        Limits(memory="256m", pids=64),
        label="sandbox-test",
    )
    yield sandbox
    sandbox.close()
    del os.environ["EVALKIT_HOST_SECRET"]


def sh(box: Any, script: str) -> str:
    result = box.exec(["bash", "-c", script], timeout=30)
    return str(result.output.decode().strip())


def test_runs_as_a_non_root_user_with_no_capabilities(box: Any) -> None:
    assert sh(box, "id -u") == "1000"
    status = sh(box, "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status")
    assert "CapEff:\t0000000000000000" in status
    assert "CapBnd:\t0000000000000000" in status
    assert "NoNewPrivs:\t1" in status


def test_has_no_network_but_loopback(box: Any) -> None:
    assert sh(box, "ls /sys/class/net") == "lo"


def test_host_environment_does_not_leak(box: Any) -> None:
    env = sh(box, "env")
    assert "EVALKIT_HOST_SECRET" not in env and "do-not-leak" not in env


def test_memory_and_pids_are_limited(box: Any, docker_engine: Any) -> None:
    host_config = docker_engine.api.inspect_container(box.id)["HostConfig"]
    assert host_config["Memory"] == 256 * 1024 * 1024
    assert host_config["MemorySwap"] == host_config["Memory"]  # no swap escape
    assert host_config["PidsLimit"] == 64
    assert host_config["NetworkMode"] == "none"
    assert not host_config["Binds"] and not host_config["Privileged"]
    # A fork bomb hits the pids limit instead of the host. In a sandbox of its own: a
    # sandbox out of pids cannot start the next exec until the sleeps end.
    bomb = DockerSandbox(docker_engine, BOOTSTRAP_IMAGE, Limits(pids=64), label="sandbox-test")
    try:
        out = sh(bomb, "for i in $(seq 200); do sleep 5 & done 2>&1 | grep -c 'fork' || true")
        assert int(out.splitlines()[-1]) > 0
    finally:
        bomb.close()


def test_root_owned_harness_files_are_read_only_to_the_sandbox_user(box: Any) -> None:
    box.put_archive("/evalkit", tar_files({"lib/plugin.py": "x = 1\n"}, uid=0), user="0:0")
    assert sh(box, "echo y > /evalkit/lib/plugin.py 2>&1 || echo denied").endswith("denied")
    assert sh(box, "touch /evalkit/new 2>&1 || echo denied").endswith("denied")


def test_root_filesystem_is_read_only_and_writable_paths_are_capped(box: Any) -> None:
    assert sh(box, "touch /opt/x /etc/x /usr/x 2>&1 | grep -c 'Read-only'") == "3"
    # /testbed is a tmpfs with a size cap: a test cannot fill the host's disk.
    mounts = sh(box, "grep -E ' /(testbed|tmp|evalkit) ' /proc/mounts")
    lines = mounts.splitlines()
    assert len(lines) == 3 and all(" tmpfs " in m and "size=" in m for m in lines)


def test_the_collector_directory_is_closed_to_the_sandbox_user(box: Any) -> None:
    assert sh(box, "touch /evalkit/r/x 2>&1 || echo denied").endswith("denied")
    assert sh(box, "ls /evalkit/r 2>&1 || echo denied").endswith("denied")


def test_a_sandbox_ends_on_its_own_at_its_deadline(docker_engine: Any) -> None:
    """The dead-man switch: even if evalkit is kill -9ed, PID 1 exits at the deadline."""
    sandbox = DockerSandbox(
        docker_engine, BOOTSTRAP_IMAGE, Limits(lifetime_s=2), label="sandbox-test"
    )
    deadline = time.monotonic() + 30
    ids = {sandbox.id}
    while time.monotonic() < deadline and ids & {c["Id"] for c in docker_engine.api.containers()}:
        time.sleep(0.5)
    assert not ids & {c["Id"] for c in docker_engine.api.containers(all=True)}


def test_stale_removal_spares_live_processes_and_reaps_expired_sandboxes(
    docker_engine: Any,
) -> None:
    from evalkit import sandbox as sandbox_module

    mine = DockerSandbox(docker_engine, BOOTSTRAP_IMAGE, Limits(), label="shared-run")
    labels = {
        sandbox_module.LABEL: "shared-run",
        sandbox_module.LABEL_INVOCATION: "another-live-process",
        sandbox_module.LABEL_HOST: socket.gethostname(),
        sandbox_module.LABEL_PID: str(os.getppid()),  # alive
        sandbox_module.LABEL_DEADLINE: str(int(time.time()) + 600),
    }
    live = docker_engine.containers.run(
        BOOTSTRAP_IMAGE, ["sleep", "600"], detach=True, labels=labels, network_mode="none"
    )
    expired = docker_engine.containers.run(
        BOOTSTRAP_IMAGE,
        ["sleep", "600"],
        detach=True,
        labels={**labels, sandbox_module.LABEL_DEADLINE: str(int(time.time()) - 1)},
        network_mode="none",
    )
    try:
        sandbox_module.remove_stale(docker_engine, "shared-run")
        running = {c["Id"] for c in docker_engine.api.containers(all=True)}
        assert mine.id in running and live.id in running
        assert expired.id not in running
    finally:
        mine.close()
        for container in (live, expired):
            with contextlib.suppress(Exception):
                container.remove(force=True)


def test_exec_past_its_timeout_is_killed(docker_engine: Any) -> None:
    sandbox = DockerSandbox(docker_engine, BOOTSTRAP_IMAGE, Limits(), label="sandbox-test")
    try:
        result = sandbox.exec(["sleep", "60"], timeout=2)
        assert result.timed_out and result.duration_s < 20
    finally:
        sandbox.close()
    # One list call (no per-container inspect that races with other removals).
    ids = [c["Id"] for c in docker_engine.api.containers(all=True)]
    assert sandbox.id not in ids  # removed on close, killed or not


def test_a_test_cannot_write_past_the_checkouts_size_cap(docker_engine: Any) -> None:
    sandbox = DockerSandbox(
        docker_engine, BOOTSTRAP_IMAGE, Limits(disk="16m"), label="sandbox-test"
    )
    try:
        result = sandbox.exec(
            ["bash", "-c", "head -c 64M /dev/zero > /testbed/big; echo rc=$?; du -sm /testbed"],
            timeout=60,
        )
        assert b"No space left" in result.output and b"rc=1" in result.output
    finally:
        sandbox.close()


def test_files_read_from_a_sandbox_are_capped_even_when_sparse(docker_engine: Any) -> None:
    sandbox = DockerSandbox(docker_engine, BOOTSTRAP_IMAGE, Limits(), label="sandbox-test")
    try:
        sandbox.exec(["truncate", "-s", "1536M", "/tmp/sparse"], timeout=30)
        data = sandbox.read_file("/tmp/sparse", cap=1024)
        assert data is not None and len(data) == 1024
    finally:
        sandbox.close()


def test_the_collector_hands_over_evidence_only_once_no_test_process_survives(
    docker_engine: Any,
) -> None:
    """A survivor of the tests could still write to the channel: asked to finish, the
    collector (a user the tests cannot signal) names survivors instead of its record,
    until they are killed. The sandbox's PID 1 is no survivor."""
    import json
    from pathlib import Path

    from evalkit.sandbox import COLLECTOR_UID

    source = (Path(__file__).parent.parent / "evalkit" / "_container" / "collector.py").read_text()
    sandbox = DockerSandbox(docker_engine, BOOTSTRAP_IMAGE, Limits(), label="sandbox-test")
    try:
        sandbox.put_archive("/evalkit", tar_files({"lib/collector.py": source}, uid=0), user="0:0")
        collector = sandbox.start(
            ["python3", "-I", "-S", "/evalkit/lib/collector.py"],
            user=f"{COLLECTOR_UID}:{COLLECTOR_UID}",
        )
        collector.write(json.dumps({"socket": "/evalkit/r/c.sock", "nonce": "n"}).encode() + b"\n")
        assert collector.read_line(30) == b"READY\n"
        sh(sandbox, "setsid sleep 300 </dev/null >/dev/null 2>&1 &")  # a detached survivor
        collector.write(b"finish\n")
        assert collector.read_line(30).startswith(b"survivors ")
        sh(sandbox, "kill -9 -1; kill -9 -1; exit 0")
        collector.write(b"finish\n")
        record = collector.finish(30)
        assert json.loads(record) == {"connections": []}
    finally:
        sandbox.close()


def test_a_process_hopping_from_pid_to_pid_is_still_a_survivor(docker_engine: Any) -> None:
    """Attack on the survivor check: a process that forks and exits as fast as it can is
    never where a /proc listing saw it. The collector must still name it (and one kill of
    every process at once still ends it)."""
    import json
    from pathlib import Path

    from evalkit.sandbox import COLLECTOR_UID

    source = (Path(__file__).parent.parent / "evalkit" / "_container" / "collector.py").read_text()
    sandbox = DockerSandbox(docker_engine, BOOTSTRAP_IMAGE, Limits(), label="sandbox-test")
    try:
        sandbox.put_archive("/evalkit", tar_files({"lib/collector.py": source}, uid=0), user="0:0")
        collector = sandbox.start(
            ["python3", "-I", "-S", "/evalkit/lib/collector.py"],
            user=f"{COLLECTOR_UID}:{COLLECTOR_UID}",
        )
        collector.write(json.dumps({"socket": "/evalkit/r/c.sock", "nonce": "n"}).encode() + b"\n")
        assert collector.read_line(30) == b"READY\n"
        hopper = "import os\nwhile True:\n    if os.fork():\n        os._exit(0)\n"
        sh(sandbox, f"setsid python3 -c '{hopper}' </dev/null >/dev/null 2>&1 &")
        for _ in range(5):  # every ask, however the listing falls
            collector.write(b"finish\n")
            assert collector.read_line(30).startswith(b"survivors ")
        sh(sandbox, "kill -9 -1; kill -9 -1; exit 0")
        collector.write(b"finish\n")
        assert json.loads(collector.finish(30)) == {"connections": []}
    finally:
        sandbox.close()

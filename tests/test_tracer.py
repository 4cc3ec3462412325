"""The audit's tracer against the real kernel (no Docker needed: it is a seccomp filter the
tracer installs on its own child). What it claims: every exec, directory removal, link and
outward connect is logged with its real arguments before it runs; nothing the filter names
runs once the tracer is gone; the 32-bit ABI is no way around it; the agent never holds the
tracer's end of the filter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from evalkit._container import tracer

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="seccomp is Linux's")


def trace(tmp_path: Path, *argv: str) -> tuple[subprocess.CompletedProcess[str], list[Any]]:
    out = tmp_path / "trace.jsonl"
    run = subprocess.run(
        [sys.executable, "-I", "-S", tracer.__file__, str(out), "--", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    return run, [json.loads(line) for line in out.read_text().splitlines()]


def test_execs_removals_and_links_are_logged_verbatim_with_their_ancestry(
    tmp_path: Path,
) -> None:
    odd = ['x="], ', "two\nlines", "\u00e9"]
    script = (
        "import os, subprocess, sys\n"
        f"subprocess.run(['/bin/echo', *{odd!r}], stdout=subprocess.DEVNULL)\n"
        "os.makedirs('d/e'); os.rmdir('d/e')\n"
        "open('f', 'w').close(); os.link('f', 'g')\n"
    )
    run, events = trace(tmp_path, sys.executable, "-c", script)
    assert run.returncode == 0, run.stderr
    calls = [(e["call"], e.get("path")) for e in events]
    (echo,) = [
        e for e in events if e.get("path") == "/bin/echo" or e.get("argv", [""])[0] == "/bin/echo"
    ]
    assert echo["argv"] == ["/bin/echo", *odd] and echo["ok"] is True
    assert events[1]["call"] == "start"
    top = events[1]["pid"]
    assert echo["up"] == [top]  # its parent, the traced python
    assert ("rmdir", str(tmp_path / "d/e")) in calls or ("unlinkat", str(tmp_path / "d/e")) in calls
    assert ("linkat", str(tmp_path / "f")) in calls or ("link", str(tmp_path / "f")) in calls
    assert events[0] == {"call": "lock"}
    assert events[-1] == {"call": "exit", "pid": top, "status": 0, "timed_out": False}


def test_a_connect_is_logged_with_its_destination_and_a_plain_send_is_not(
    tmp_path: Path,
) -> None:
    script = (
        "import socket\n"
        "a, b = socket.socketpair(); a.send(b'x')\n"  # sendto with no address: not stopped
        "s = socket.socket()\n"
        "try:\n    s.connect(('127.0.0.1', 9))\nexcept OSError:\n    pass\n"
    )
    run, events = trace(tmp_path, sys.executable, "-c", script)
    assert run.returncode == 0, run.stderr
    nets = [e for e in events if e["call"] in ("connect", "sendto")]
    assert [(e["call"], e["host"], e["port"]) for e in nets] == [("connect", "127.0.0.1", 9)]


def test_the_32_bit_system_call_abi_is_refused(tmp_path: Path) -> None:
    # i386's getpid through int 0x80: a filter keyed on x86_64 numbers would let it pass.
    if os.uname().machine != "x86_64":
        pytest.skip("the i386 ABI exists on x86_64 only")
    script = (
        "import ctypes, mmap\n"
        "buf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "buf.write(bytes.fromhex('b814000000cd80c3'))\n"
        "f = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))\n"
        "print(f())\n"
    )
    plain = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert int(plain.stdout) > 0  # the same code, untraced, gets a pid
    run, _ = trace(tmp_path, sys.executable, "-c", script)
    assert run.stdout.strip() == "-38", run.stderr  # -ENOSYS


def test_nothing_outlives_the_agent(tmp_path: Path) -> None:
    # A daemon left behind (holding the agent's stdout) is killed when the agent exits: it
    # neither acts later nor keeps the exec's output open.
    script = "(sleep 5; /bin/touch late) & setsid sh -c 'sleep 5; /bin/touch later' & exit 0"
    start = time.monotonic()
    run, _ = trace(tmp_path, "/bin/sh", "-c", script)
    assert run.returncode == 0 and time.monotonic() - start < 4
    time.sleep(6)
    assert not (tmp_path / "late").exists() and not (tmp_path / "later").exists()


def test_nothing_the_filter_names_runs_once_the_tracer_is_gone(tmp_path: Path) -> None:
    # An agent that kills its tracer cannot act unobserved: every audited call then fails.
    script = "kill -9 $PPID; sleep 0.2; /bin/touch late; echo $? > code"  # its parent: the tracer
    subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            tracer.__file__,
            str(tmp_path / "t"),
            "--",
            "bash",
            "-c",
            script,
        ],
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
    )
    for _ in range(50):
        if (tmp_path / "code").exists() and (tmp_path / "code").read_text().strip():
            break
        time.sleep(0.1)
    assert not (tmp_path / "late").exists()
    assert (tmp_path / "code").read_text().strip() not in ("", "0")


def test_the_agent_never_holds_the_tracers_end_of_the_filter(tmp_path: Path) -> None:
    # With the listener fd, an agent could answer its own calls unlogged.
    run, _ = trace(tmp_path, "/bin/sh", "-c", "ls -l /proc/$$/fd/")
    assert run.returncode == 0, run.stderr
    assert "seccomp" not in run.stdout and run.stdout.strip()


def test_the_trace_is_json_for_any_argument() -> None:
    # The tracer writes JSON by hand (the json module costs its start-up): any string an
    # argument can be, lone surrogates of undecodable bytes included, reads back as itself.
    weird = ["", '"', "\\", "\n\t\x00\x7f", "\udcff\udc80", "\u00e9\u2028", "]"]
    doc = {"pid": 1, "argv": weird, "ok": False, "up": [2, 3], "n": 0}
    assert json.loads(tracer._encode(doc)) == doc


def _ahead(tmp_path: Path) -> subprocess.Popen[bytes]:
    """The tracer started ahead of its agent (``--ahead``): it waits for its order."""
    return subprocess.Popen(
        [sys.executable, "-I", "-S", tracer.__file__, "--ahead", str(tmp_path / "trace.jsonl")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _order(argv: list[str], timeout: float, cwd: Path) -> bytes:
    body = json.dumps(
        {"argv": argv, "env": {"PATH": "/usr/bin:/bin"}, "timeout": timeout, "cwd": str(cwd)}
    ).encode()
    return b"%d\n" % len(body) + body


def test_started_ahead_the_agent_gets_the_rest_of_stdin_and_the_whole_timeout(
    tmp_path: Path,
) -> None:
    proc = _ahead(tmp_path)
    time.sleep(1.5)  # longer than the timeout below: waiting for the order costs none of it
    script = "sleep 0.3; cat; pwd"
    out, err = proc.communicate(_order(["sh", "-c", script], 1, tmp_path) + b"the problem\n", 30)
    assert proc.returncode == 0, err
    assert out.decode().splitlines() == ["the problem", str(tmp_path)]


def test_at_its_timeout_the_tracer_kills_the_whole_tree_and_closes_the_trace(
    tmp_path: Path,
) -> None:
    proc = _ahead(tmp_path)
    script = "sleep 60 & echo $! > bg; setsid sleep 60 & echo $! > orphan; sleep 60"
    start = time.monotonic()
    proc.communicate(_order(["sh", "-c", script], 1, tmp_path), 30)
    assert proc.returncode == 137 and time.monotonic() - start < 10
    for name in ("bg", "orphan"):
        pid = int((tmp_path / name).read_text())
        for _ in range(50):  # SIGKILLed; gone once reaped
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                break
            if state in ("Z", "X"):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"{name} ({pid}) outlived the timeout")
    events = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert events[-1]["call"] == "exit" and events[-1]["timed_out"] is True


def test_once_the_trace_cannot_be_written_nothing_it_would_log_runs(tmp_path: Path) -> None:
    # The collector reading the trace FIFO dies: a call that cannot be logged is refused.
    fifo = tmp_path / "trace.fifo"
    os.mkfifo(fifo, 0o622)
    script = "/bin/true; echo $? > code"
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", tracer.__file__, str(fifo), "--", "/bin/sh", "-c", script],
        cwd=tmp_path,
    )
    with open(fifo, "rb") as reader:  # the collector: locks, reads until the shell runs, dies
        assert reader.readline() == b'{"call":"lock"}\n'
        os.chmod(fifo, 0o600)
        while b'"/bin/sh"' not in reader.readline():
            pass
    proc.wait(30)
    assert (tmp_path / "code").read_text().strip() not in ("", "0")  # /bin/true refused

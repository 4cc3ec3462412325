"""Evidence collector: runs in the sandbox as its own user (not the test user).

It listens on a Unix socket that the test user may connect to but whose directory and
whose output it cannot touch, and it returns what it received on its own stdout, which
goes straight to the host. The pytest plugin connects once, before any checkout code
is imported, and proves itself with a nonce. The collector notes per connection who
connected (``SO_PEERCRED``), and every line that arrived after the connecting process
was dead or after the session's closing line: survivors that write late are evidence of
forgery, not of test results.

Protocol: one JSON line on stdin (``{"socket": PATH, "nonce": STR, "cap": BYTES}``),
"READY" on stdout once listening; on stdin EOF one JSON document on stdout, then exit.
A "finish" line asks for the document only if no other user's process is alive (PID 1
aside): then it comes, as on EOF; else "survivors N" comes instead, and the host kills
them and closes stdin. The test user cannot signal this user, so it cannot forge that
answer, and a test-user process can only be born of another one: once none is alive
(in a settled listing, see :func:`survivors`), none can write again. The host is thus
spared an exec when nothing survived the tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import sys
import threading
import time


def _alive(pid):  # type: ignore[no-untyped-def]
    try:
        with open("/proc/%d/stat" % pid, "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


class Connection:
    def __init__(self, sock, nonce, budget):  # type: ignore[no-untyped-def]
        self.sock = sock
        self.nonce = nonce
        self.budget = budget
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        self.pid, self.uid, _ = struct.unpack("3i", creds)
        self.authenticated = False
        self.lines = []
        self.late = 0
        self.after_end = 0
        self.truncated = False
        self.ended = False
        self.closed = False
        self.size = 0

    def take(self, line):  # type: ignore[no-untyped-def]
        if not self.authenticated and not self.lines and not self.ended:
            try:
                hello = json.loads(line)
            except ValueError:
                hello = None
            if isinstance(hello, dict) and hello.get("hello") == self.nonce:
                self.authenticated = True
                return
        if not _alive(self.pid):
            self.late += 1
        if self.ended:
            self.after_end += 1
        self.size += len(line)
        if self.size > self.budget[0]:
            self.truncated = True
            return
        text = line.decode("utf-8", "replace")
        self.lines.append(text)
        if ('"event": "end"' in text or '"event":"end"' in text) and not self.ended:
            self.ended = True
            # Acknowledged, so a reporter that exits right after its last line (the
            # JavaScript launchers) does so only once the collector has read it all.
            with contextlib.suppress(OSError):
                self.sock.sendall(b"end\n")

    def read(self):  # type: ignore[no-untyped-def]
        buf = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        self.take(line)
                if len(buf) > self.budget[0]:
                    self.truncated = True
                    buf = b""
        except OSError:
            pass
        if buf.strip():
            self.take(buf)
        self.closed = True

    def summary(self):  # type: ignore[no-untyped-def]
        return {
            "pid": self.pid,
            "uid": self.uid,
            "authenticated": self.authenticated,
            "lines": self.lines,
            "late_lines": self.late,
            "lines_after_end": self.after_end,
            "truncated": self.truncated,
            "closed": self.closed,
        }


def _listing():  # type: ignore[no-untyped-def]
    return sorted(n for n in os.listdir("/proc") if n.isdigit() and n != "1")


def survivors():  # type: ignore[no-untyped-def]
    """Live processes of any other user than this one, PID 1 (the sandbox's) aside.

    A listing of /proc is no snapshot: a process listed and gone by the time its status is
    read may have forked first, its child born after the listing. So an empty answer needs
    a listing whose every pid was read, and the same listing again right after (a process
    hopping from pid to pid changes it); an unsettled /proc after many tries counts as a
    survivor, and the host kills."""
    mine = os.getuid()
    for _ in range(50):
        names = _listing()
        found, churn = [], False
        for name in names:
            try:
                with open("/proc/%s/status" % name) as fh:
                    fields = dict(line.split(":", 1) for line in fh if ":" in line)
            except OSError:
                churn = True  # gone meanwhile
                continue
            state = fields.get("State", "").split()[:1]
            uid = fields.get("Uid", "").split()[:1]
            if state in (["Z"], ["X"]) or not uid or int(uid[0]) == mine:
                continue
            found.append(int(name))
        if found:
            return found
        if not churn and _listing() == names:
            return []
    return [-1]


def main():  # type: ignore[no-untyped-def]
    config = json.loads(sys.stdin.readline())
    path = config["socket"]
    budget = [int(config.get("cap", 16 * 1024 * 1024))]
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o666)
    server.listen(16)
    connections = []
    threads = []
    stop = threading.Event()

    def accept():  # type: ignore[no-untyped-def]
        while not stop.is_set():
            try:
                sock, _ = server.accept()
            except OSError:
                return
            if len(connections) >= 64:
                sock.close()
                continue
            conn = Connection(sock, config["nonce"], budget)
            connections.append(conn)
            thread = threading.Thread(target=conn.read, daemon=True)
            thread.start()
            threads.append(thread)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    # The host closes stdin once every test process is dead, or asks whether they are.
    for line in sys.stdin:
        if line.strip() != "finish":
            continue
        alive = survivors()
        if not alive:
            break
        sys.stdout.write("survivors %d\n" % len(alive))
        sys.stdout.flush()
    stop.set()
    server.close()
    deadline = time.monotonic() + 3
    for thread in list(threads):
        thread.join(max(0.0, deadline - time.monotonic()))
    result = {"connections": [c.summary() for c in connections]}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

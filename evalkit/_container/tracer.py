"""The audit's tracer: runs an agent under a seccomp user-notification filter (stdlib only).

    python -I -S tracer.py TRACE -- ARGV...

The filter, installed in a child that then execs ``ARGV``, is inherited by every process and
thread the agent starts, and no agent process can remove it. It stops only the system calls
the audit reads: ``execve``/``execveat``, ``connect``, ``sendto`` with an address, ``rmdir``,
``unlinkat`` of a directory, ``link``/``linkat``. Each one waits while this process reads its
arguments from the caller's memory and writes one JSON line to ``TRACE``, then goes on
(``SECCOMP_USER_NOTIF_FLAG_CONTINUE``): the line is written before the call happens. Forks,
clones and every other call run untouched, which is what makes this cheaper than ptrace
(strace stops each new process and thread, and every traced call twice).

When the agent's process exits, or at its timeout (``--ahead``), every process below
the tracer is killed: orphans are reparented to it (a child subreaper), so none escapes.

Fail closed: a call whose arguments cannot be read (a non-dumpable caller) is refused with
EPERM; once this process is gone (killed by the agent, which shares its uid), every call the
filter names fails with ENOSYS, and the trace lacks its closing ``exit`` line. 32-bit and
x32 system calls (a way around a filter written for one ABI) and io_uring (calls that reach
the kernel without a system call) are refused outright.

``TRACE`` is normally the collector's FIFO: the first line asks the collector to lock it
(mode 0600, root's) and this process waits for that before the agent starts, so nothing the
agent runs can open it and write lines of its own.

Lines: ``{"pid", "up": [parent, grandparent, ...], "call", ...}``; ``execve`` adds ``path``,
``argv`` and ``ok`` (the file was there and executable), ``connect``/``sendto`` add
``family``, ``host``, ``port``, removals and links add ``path``; the last line is
``{"call": "exit", "pid", "status"}``, and ``{"call": "start", "pid"}`` comes before the
agent's first: a trace without it means the tracer failed before the agent ran.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import signal
import socket
import stat
import struct
import sys
import time
from _json import encode_basestring_ascii as _quote  # json itself costs ~5 ms to import

# (audit arch, seccomp syscall number, {name: number}, x32 ABI to refuse)
_ARCHS = {
    "x86_64": (
        0xC000003E,
        317,
        {
            "execve": 59,
            "execveat": 322,
            "connect": 42,
            "sendto": 44,
            "rmdir": 84,
            "unlinkat": 263,
            "link": 86,
            "linkat": 265,
            "io_uring_setup": 425,
        },
        True,
    ),
    "aarch64": (
        0xC00000B7,
        277,
        {
            "execve": 221,
            "execveat": 281,
            "connect": 203,
            "sendto": 206,
            "unlinkat": 35,
            "linkat": 37,
            "io_uring_setup": 425,
        },
        False,
    ),
}
_LD, _JEQ, _JSET, _JGE, _RET = 0x20, 0x15, 0x45, 0x35, 0x06
_ALLOW, _NOTIFY, _ERRNO = 0x7FFF0000, 0x7FC00000, 0x00050000
_AT_FDCWD, _AT_REMOVEDIR, _AT_EMPTY_PATH = -100, 0x200, 0x1000
_NOTIF_RECV, _NOTIF_SEND, _NOTIF_ID_VALID = 0xC0502100, 0xC0182101, 0x40082102
_CONTINUE = 1
_STRING_CAP = 131072  # the kernel's own MAX_ARG_STRLEN: an argument is never cut
_ARGV_CAP = 1 << 16


def _program(arch: int, nrs: dict[str, int], x32: bool) -> list[tuple[int, int, int, int]]:
    """The BPF filter, as (code, jt, jf, k) with jumps resolved."""
    insns: list[tuple[int, object, object, int]] = [(_LD, 0, 0, 4)]
    insns.append((_JEQ, 0, "deny", arch))
    insns.append((_LD, 0, 0, 0))
    if x32:
        insns.append((_JGE, "deny", 0, 0x40000000))
    insns.append((_JEQ, "eperm", 0, nrs["io_uring_setup"]))
    for name in ("execve", "execveat", "connect", "rmdir", "link", "linkat"):
        if name in nrs:
            insns.append((_JEQ, "notify", 0, nrs[name]))
    insns.append((_JEQ, "sendto", 0, nrs["sendto"]))
    insns.append((_JEQ, "unlinkat", 0, nrs["unlinkat"]))
    labels: dict[str, int] = {}

    def label(name: str) -> None:
        labels[name] = len(insns)

    insns.append((_RET, 0, 0, _ALLOW))
    label("sendto")  # only with a destination address (args[4], both halves)
    insns.append((_LD, 0, 0, 16 + 8 * 4))
    insns.append((_JEQ, 0, "notify", 0))
    insns.append((_LD, 0, 0, 16 + 8 * 4 + 4))
    insns.append((_JEQ, "allow", "notify", 0))
    label("unlinkat")  # only of a directory (args[2] & AT_REMOVEDIR)
    insns.append((_LD, 0, 0, 16 + 8 * 2))
    insns.append((_JSET, "notify", "allow", _AT_REMOVEDIR))
    label("notify")  # BPF jumps only forward: every target is below
    insns.append((_RET, 0, 0, _NOTIFY))
    label("allow")
    insns.append((_RET, 0, 0, _ALLOW))
    label("deny")
    insns.append((_RET, 0, 0, _ERRNO | errno.ENOSYS))
    label("eperm")
    insns.append((_RET, 0, 0, _ERRNO | errno.EPERM))

    def jump(at: int, target: object) -> int:
        return labels[target] - at - 1 if isinstance(target, str) else 0

    return [(c, jump(i, t), jump(i, f), k) for i, (c, t, f, k) in enumerate(insns)]


class _Filter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint),
    ]


class _Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Filter))]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int
_libc.ioctl.restype = ctypes.c_int
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]


def _install(sys_seccomp: int, program: list[tuple[int, int, int, int]]) -> int:
    """Install the filter on this (single-threaded) process; its listener fd."""
    if _libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    table = (_Filter * len(program))(*[_Filter(*insn) for insn in program])
    prog = _Prog(len(program), table)
    fd = _libc.syscall(
        ctypes.c_long(sys_seccomp),
        ctypes.c_long(1),  # SECCOMP_SET_MODE_FILTER
        ctypes.c_long(8),  # SECCOMP_FILTER_FLAG_NEW_LISTENER
        ctypes.byref(prog),
    )
    if fd < 0:
        raise OSError(ctypes.get_errno(), "seccomp(SECCOMP_SET_MODE_FILTER)")
    return int(fd)


class _Unreadable(Exception):
    pass


class _Memory:
    """Another process's memory, read through ``/proc/PID/mem`` (same uid, dumpable)."""

    def __init__(self, pid: int) -> None:
        try:
            self.fd = os.open("/proc/%d/mem" % pid, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            raise _Unreadable() from None

    def close(self) -> None:
        os.close(self.fd)

    def read(self, addr: int, size: int) -> bytes:
        try:
            data = os.pread(self.fd, size, addr)
        except (OSError, OverflowError):
            raise _Unreadable() from None
        if len(data) < size:
            raise _Unreadable()
        return data

    def string(self, addr: int) -> str:
        out = b""
        while len(out) < _STRING_CAP:
            want = 4096 - addr % 4096  # never across a page: the next may be unmapped
            try:
                chunk = os.pread(self.fd, want, addr)
            except (OSError, OverflowError):
                raise _Unreadable() from None
            if not chunk:
                raise _Unreadable()
            end = chunk.find(b"\0")
            if end >= 0:
                out += chunk[:end]
                break
            out += chunk
            addr += len(chunk)
        return out.decode("utf-8", "surrogateescape")

    def strings(self, addr: int) -> list[str]:
        out: list[str] = []
        while addr and len(out) < _ARGV_CAP:
            want = max(8, (4096 - addr % 4096) // 8 * 8)
            block = self.read(addr, want)
            for (ptr,) in struct.iter_unpack("Q", block):
                if ptr == 0:
                    return out
                out.append(self.string(ptr))
            addr += len(block)
        return out


def _stat(pid: int) -> tuple[bytes, int] | None:
    """(state, parent pid) of a process; None once it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return fields[0], int(fields[1])
    except (OSError, IndexError, ValueError):
        return None


def _up(pid: int, me: int) -> list[int]:
    """The caller's ancestors (it waits in the call, so its chain is current), nearest
    first, up to this tracer."""
    chain: list[int] = []
    while len(chain) < 64:
        found = _stat(pid)
        if found is None:
            break
        ppid = found[1]
        if ppid in (0, me):
            break
        chain.append(ppid)
        pid = ppid
    return chain


def _at(pid: int, dirfd: int, path: str) -> str:
    """``path`` as the caller named it relative to ``dirfd``, made absolute."""
    if path.startswith("/"):
        return os.path.normpath(path)
    link = "/proc/%d/cwd" % pid if dirfd == _AT_FDCWD else "/proc/%d/fd/%d" % (pid, dirfd)
    try:
        base = os.readlink(link)
    except OSError:
        return path
    return os.path.normpath(os.path.join(base, path)) if path else base


def _sockaddr(mem: _Memory, addr: int, size: int) -> dict[str, object] | None:
    if not addr or size < 2:
        return None
    data = mem.read(addr, min(size, 128))
    (family,) = struct.unpack_from("H", data)
    if family == socket.AF_INET and len(data) >= 8:
        port = struct.unpack_from(">H", data, 2)[0]
        return {"family": "inet", "host": socket.inet_ntop(socket.AF_INET, data[4:8]), "port": port}
    if family == socket.AF_INET6 and len(data) >= 24:
        port = struct.unpack_from(">H", data, 2)[0]
        host = socket.inet_ntop(socket.AF_INET6, data[8:24])
        return {"family": "inet6", "host": host, "port": port}
    return None


def _describe(name: str, pid: int, args: tuple[int, ...], mem: _Memory) -> dict[str, object] | None:
    """What one stopped call does, from its arguments (None: nothing the audit reads)."""
    if name in ("execve", "execveat"):
        if name == "execve":
            dirfd, path_at, argv_at, flags = _AT_FDCWD, args[0], args[1], 0
        else:
            dirfd, path_at, argv_at, flags = ctypes.c_int(args[0]).value, args[1], args[2], args[4]
        raw = mem.string(path_at) if path_at else ""
        argv = mem.strings(argv_at)
        path = _at(pid, dirfd, "") if not raw and flags & _AT_EMPTY_PATH else _at(pid, dirfd, raw)
        ok = os.path.isfile(path) and os.access(path, os.X_OK)
        return {"path": path, "argv": argv, "ok": ok}
    if name in ("connect", "sendto"):
        where = (
            _sockaddr(mem, args[1], args[2])
            if name == "connect"
            else _sockaddr(mem, args[4], args[5])
        )
        return where
    if name == "rmdir":
        return {"path": _at(pid, _AT_FDCWD, mem.string(args[0]))}
    if name == "unlinkat":
        return {"path": _at(pid, ctypes.c_int(args[0]).value, mem.string(args[1]))}
    if name == "link":
        return {"path": _at(pid, _AT_FDCWD, mem.string(args[0]))}
    if name == "linkat":
        old = mem.string(args[1]) if args[1] else ""
        return {"path": _at(pid, ctypes.c_int(args[0]).value, old)}
    return None


def _encode(value: object) -> str:
    """JSON for the trace's values (str, int, bool, lists and dicts of them)."""
    if isinstance(value, str):
        return str(_quote(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(_quote(k) + ":" + _encode(v) for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    return "null"


class _Tracer:
    def __init__(self, listener: int, out: int, nrs: dict[str, int]) -> None:
        self.listener = listener
        self.out = out
        self.names = {v: k for k, v in nrs.items()}
        self.me = os.getpid()
        self.recv = ctypes.create_string_buffer(80)
        self.failed_writes = False

    def write(self, doc: dict[str, object]) -> bool:
        line = (_encode(doc) + "\n").encode()
        try:
            while line:
                line = line[os.write(self.out, line) :]
        except OSError:  # the collector is gone: from now on nothing runs unlogged
            self.failed_writes = True
        return not self.failed_writes

    def respond(self, notif_id: int, error: int) -> None:
        flags = 0 if error else _CONTINUE
        resp = ctypes.create_string_buffer(struct.pack("QqiI", notif_id, 0, -error, flags), 24)
        _libc.ioctl(self.listener, _NOTIF_SEND, resp)  # ENOENT: the caller is gone; fine

    def one(self) -> bool:
        """Handle one notification; False when the listener has nothing (or no users)."""
        ctypes.memset(self.recv, 0, 80)
        if _libc.ioctl(self.listener, _NOTIF_RECV, self.recv) != 0:
            return False  # interrupted, or the caller died before it was read
        notif_id, pid, _, nr, _ = struct.unpack_from("QIIiI", self.recv)
        args = struct.unpack_from("6Q", self.recv, 32)  # after the instruction pointer
        name = self.names.get(nr, str(nr))
        error = 0
        doc: dict[str, object] = {"pid": pid, "call": name}
        try:
            mem = _Memory(pid)
            try:
                found = _describe(name, pid, args, mem)
            finally:
                mem.close()
        except _Unreadable:
            found, error = {"unreadable": True}, errno.EPERM
        # The caller may have died meanwhile and its pid been reused: then nothing is logged.
        valid = ctypes.c_uint64(notif_id)
        if _libc.ioctl(self.listener, _NOTIF_ID_VALID, ctypes.byref(valid)) != 0:
            return True
        if found is not None:
            doc.update(found)
            doc["up"] = _up(pid, self.me)
            if not self.write(doc):
                error = errno.EPERM
        self.respond(notif_id, error)
        return True


def _lock(path: str, out: int) -> None:
    """Ask the collector to make the FIFO root's alone, and wait until it has."""
    os.write(out, b'{"call":"lock"}\n')
    if not stat.S_ISFIFO(os.fstat(out).st_mode):
        return
    deadline = time.monotonic() + 20
    while os.stat(path).st_mode & 0o077:
        if time.monotonic() > deadline:
            sys.exit("evalkit tracer: the collector did not lock the trace")
        time.sleep(0.001)


def _read_order() -> dict[str, object]:
    """The go signal in ``--ahead`` mode: a line with a byte count, then that many bytes of
    JSON (argv, env, cwd, timeout), read unbuffered: the rest of stdin is the agent's."""
    import json  # only in this mode, and before the go signal: its import costs ~5 ms

    head = b""
    while not head.endswith(b"\n"):
        byte = os.read(0, 1)
        if not byte or len(head) > 20:
            sys.exit("evalkit tracer: no order on stdin")
        head += byte
    size, body = int(head), b""
    while len(body) < size:
        chunk = os.read(0, size - len(body))
        if not chunk:
            sys.exit("evalkit tracer: the order was cut short")
        body += chunk
    order = json.loads(body)
    if not isinstance(order, dict):
        sys.exit("evalkit tracer: the order is not an object")
    return order


def _kill_tree(me: int) -> None:
    """SIGKILL every live process below this one (orphans are reparented here, so none has
    escaped; a fork racing the sweep is caught by the next one), reaping as it goes. It
    does not wait for the killed to finish dying: a sweep that finds no new one ends it."""
    killed: set[int] = set()
    for _ in range(50):
        parent: dict[int, int] = {}
        for name in os.listdir("/proc"):
            found = _stat(int(name)) if name.isdigit() else None
            if found is not None and found[0] not in (b"Z", b"X"):  # the dead: reap, not kill
                parent[int(name)] = found[1]
        below = []
        for pid in parent:
            up, hops = parent.get(pid), 0
            while up is not None and up != me and hops < 64:
                up, hops = parent.get(up), hops + 1
            if up == me and pid not in killed:
                below.append(pid)
        for pid in below:
            killed.add(pid)
            try:  # noqa: SIM105 (contextlib is one more import on every agent's exit)
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        while True:  # reap what was ours (the killed, and orphans reparented here)
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        if not below:
            return


def main() -> None:
    ahead = len(sys.argv) == 3 and sys.argv[1] == "--ahead"
    if not ahead and (len(sys.argv) < 4 or sys.argv[2] != "--"):
        sys.exit("usage: tracer.py TRACE -- ARGV...  |  tracer.py --ahead TRACE")
    trace = sys.argv[2] if ahead else sys.argv[1]
    machine = os.uname().machine
    if machine not in _ARCHS:
        sys.exit("evalkit tracer: no seccomp table for %s" % machine)
    arch, sys_seccomp, nrs, x32 = _ARCHS[machine]
    # Not dumpable: a process of the same uid (the agent's) can neither ptrace this one nor
    # open its fds through /proc. An orphan is reparented here, staying in reach of /proc.
    _libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE
    _libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    program = _program(arch, nrs, x32)
    argv: list[str] = sys.argv[3:]
    env: dict[str, str] | None = None
    timeout = 0.0
    if ahead:
        # Started ahead of the agent's turn (start-up paid while the sandbox is staged);
        # the order is the go signal, and the timeout counts from it.
        order = _read_order()
        given_argv, given_env = order.get("argv"), order.get("env")
        if not isinstance(given_argv, list) or not given_argv or not isinstance(given_env, dict):
            sys.exit("evalkit tracer: the order names no command and environment")
        argv = [str(a) for a in given_argv]
        env = {str(k): str(v) for k, v in given_env.items()}
        timeout = float(str(order.get("timeout") or 0))
        if order.get("cwd"):
            os.chdir(str(order["cwd"]))
    deadline = time.monotonic() + timeout if timeout > 0 else None
    out = os.open(trace, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    _lock(trace, out)
    parent_end, child_end = socket.socketpair()
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    child = os.fork()
    if child == 0:
        try:
            parent_end.close()
            os.close(out)
            _libc.prctl(4, 1, 0, 0, 0)  # the agent's own memory is the tracer's to read
            listener = _install(sys_seccomp, program)
            socket.send_fds(child_end, [b"l"], [listener])
            os.close(listener)  # the agent must never hold its own supervisor's end
            if child_end.recv(1) != b"g":
                os._exit(126)
            child_end.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            if env is None:
                os.execvp(argv[0], argv)
            os.execvpe(argv[0], argv, env)
        except OSError as exc:
            os.write(2, ("evalkit tracer: %s: %s\n" % (argv[0], exc)).encode())
            os._exit(127 if exc.errno == errno.ENOENT else 126)
        os._exit(126)
    child_end.close()
    _, fds, _, _ = socket.recv_fds(parent_end, 1, 1)
    if not fds:
        os.waitpid(child, 0)
        sys.exit("evalkit tracer: no seccomp listener")
    tracer = _Tracer(fds[0], out, nrs)
    tracer.write({"call": "start", "pid": child})  # the agent runs traced from here on
    parent_end.send(b"g")
    parent_end.close()
    poll = select.poll()
    poll.register(fds[0], select.POLLIN)
    poll.register(wake_r, select.POLLIN)
    status: int | None = None
    timed_out = False
    while status is None:
        wait = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
        ready = poll.poll(wait)
        if deadline is not None and not ready and time.monotonic() >= deadline:
            # As `timeout --signal=KILL` would, but for the whole tree: the trace stays
            # complete (this process saw everything up to the end).
            _kill_tree(os.getpid())
            status, timed_out = 128 + signal.SIGKILL, True
            break
        for fd, ev in ready:
            if fd == wake_r:
                os.read(wake_r, 4096)  # poll said readable: no EAGAIN
                while True:  # reap the child, and orphans reparented here
                    try:
                        pid, code = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if pid == 0:
                        break
                    if pid == child:
                        status = os.waitstatus_to_exitcode(code)
            elif ev & select.POLLIN:
                tracer.one()
            elif ev & (select.POLLHUP | select.POLLERR):
                poll.unregister(fd)
    # Nothing outlives the agent (the harness would kill it next anyway): a daemon it left
    # would otherwise hold the exec's output open. Calls already waiting are answered
    # (logged) before the line that closes the trace.
    if not timed_out:
        _kill_tree(os.getpid())
    drain = select.poll()
    drain.register(fds[0], select.POLLIN)
    for _ in range(1 << 16):
        ready = drain.poll(0)
        if not ready or not ready[0][1] & select.POLLIN or not tracer.one():
            break
    code = status if status >= 0 else 128 - status
    tracer.write({"call": "exit", "pid": child, "status": code, "timed_out": timed_out})
    sys.exit(code)


if __name__ == "__main__":
    main()

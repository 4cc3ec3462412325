"""The gate pack: what enforces the policy inside an attempt's sandbox, and the audit's tracer.

A host directory, mounted read-only at ``/evalkit/gate``, holds:

- ``check.py`` (:mod:`evalkit.bakeoff.gatecheck` verbatim) and ``policy.json``;
- ``shims/<tool>``: PATH shims (first on the agent's PATH) for git, rm, terraform,
  drizzle-kit, prisma, psql, mysql, sqlite3, kubectl and Node's package runners (npx, npm,
  pnpm, pnpx, yarn, bunx, bun): check argv, then exec the real tool (a refused command is
  refused whether or not the tool is installed);
- ``sh`` and ``bash``: wrappers bind-mounted over the image's ``/bin/sh`` and ``/bin/bash``, so
  every ``-c`` string any process hands a shell (the agent's tool calls,
  ``subprocess(shell=True)``, ``os.system``) is checked first; they run on copies of the
  image's own shells in ``bin/`` (the originals are hidden under the wrappers);
- ``tracer.py`` (:mod:`evalkit._container.tracer` verbatim): the audit, which runs the agent
  under a seccomp user-notification filter and logs each exec, removal, link and connect;
- ``hook.sh``: Claude Code's PreToolUse hook (the same prefilter, then the checker);
- ``collect.py``: the root-owned reader of the two FIFOs the gates and the tracer write to.

Everything runs with the image's ``/opt/venv/bin/python -I -S`` (stdlib only) or a shell;
nothing under the mount is writable by the agent, and nothing it writes can be unwritten
by it (the logs are root's, in a root-owned directory of the sticky ``/tmp``).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from evalkit.bakeoff import gatecheck
from evalkit.errors import InfraError

if TYPE_CHECKING:
    import docker

    from evalkit.bakeoff.policy import Policy
    from evalkit.sandbox import DockerSandbox, Process

GATE_MOUNT = "/evalkit/gate"
SHIM_DIR = f"{GATE_MOUNT}/shims"
CHECKER = f"{GATE_MOUNT}/check.py"
REAL_SH = f"{GATE_MOUNT}/bin/dash"
"""The image's own dash, for evalkit's steps in a gated sandbox (never the agent's)."""
PYTHON = "/opt/venv/bin/python"
TRUST_DIR = "/tmp/.evalkit-trust"
EVENTS_FIFO = gatecheck.EVENTS_FIFO
TRACE_FIFO = f"{TRUST_DIR}/trace.fifo"
EVENTS_LOG = f"{TRUST_DIR}/events.log"
TRACE_LOG = f"{TRUST_DIR}/trace.log"
LOG_CAP = 256 * 1024 * 1024
SHIM_TOOLS = (
    "git",
    "rm",
    "terraform",
    "drizzle-kit",
    "prisma",
    "psql",
    "mysql",
    "sqlite3",
    "kubectl",
    # Node's package runners: `npx drizzle-kit push --force` reaches drizzle-kit through them
    # (or fails offline fetching it), so the shim checks the launcher's argv first.
    *("npx", "npm", "pnpm", "pnpx", "yarn", "bunx", "bun"),
)
SHELLS = ("sh", "bash")
# Opens are not traced (they are most of a process's system calls, and each traced call
# stops the process): the collector watches the canaries and the claim file instead.
TRACED_SYSCALLS = (
    "execve,execveat,unlink,unlinkat,rmdir,rename,renameat,renameat2,truncate,link,linkat,"
    "connect,sendto,clone,clone3,fork,vfork"
)


def case_pattern(words: list[str] | None) -> str:
    """A POSIX ``case`` pattern matching text that holds any of ``words`` in any case
    (a space: any whitespace; see :func:`policy_prefilter`); ``*`` (everything) for None."""
    if words is None:
        return "*"

    def char(c: str) -> str:
        if c.isalpha():
            return f"[{c.upper()}{c.lower()}]"
        return "[[:space:]]" if c == " " else f'"{c}"'

    def one(word: str) -> str:
        return "*" + "".join(char(c) for c in word) + "*"

    return "|".join(one(w) for w in words) or "*"


def policy_prefilter(policy_rules: list[dict[str, Any]]) -> list[str] | None:
    """The words a command must hold (any one) for some rule to match it, from the
    resolved rules' ``needs``; None when a rule declares none (every command is checked)."""
    words: list[str] = []
    for rule in policy_rules:
        needs = rule.get("needs") or []
        if not needs:
            return None
        words += [w for w in needs if w.lower() not in {x.lower() for x in words}]
    return words


# A shim is a tiny shell script: argv holding none of the words the policy's rules need
# (``git status``, ``rm file``) skips the python checker; the rest asks it. Then the real
# tool (first on PATH outside the shims) is exec'd.
SHIM = """#!{gate}/bin/dash
# evalkit PATH shim for {tool}: check, then run the real {tool}.
case " {tool} $* " in
    {prefilter}) {python} -IS {checker} shim-check {tool} "$@" || exit $? ;;
esac
evalkit_ifs=$IFS
IFS=:
for evalkit_d in $PATH; do
    [ "$evalkit_d" = {shims} ] && continue
    if [ -f "$evalkit_d/{tool}" ] && [ -x "$evalkit_d/{tool}" ]; then
        IFS=$evalkit_ifs
        exec "$evalkit_d/{tool}" "$@"
    fi
done
echo "{tool}: command not found" >&2
exit 127
"""
WRAPPER = """#!{gate}/bin/dash
# evalkit shell gate over /bin/{name}: check, then run the image's own {name}.
evalkit_check=
evalkit_c=
for evalkit_a in "$@"; do
    case $evalkit_a in
        --*) ;;
        -*c*) evalkit_c=1; break ;;
        -*|+*) ;;
        *) break ;;
    esac
done
# Only -c strings: a script's own commands reach the PATH shims and the audit, and a
# whole script refused for one line would be no refusal an agent can act on.
if [ -n "$evalkit_c" ]; then
    case "$*" in {prefilter}) evalkit_check=1 ;; esac
fi
if [ -n "$evalkit_check" ]; then
    {python} -IS {checker} shell {name} "$@" || exit $?
fi
unset evalkit_check evalkit_c evalkit_a
exec {gate}/bin/{real} "$@"
"""

HOOK = """#!{gate}/bin/dash
# evalkit PreToolUse hook (Claude Code): the tool call's JSON on stdin; exit 2 blocks.
evalkit_j=$(cat)
case "$evalkit_j" in
    {prefilter}) printf '%s' "$evalkit_j" | {python} -IS {checker} hook; exit $? ;;
esac
exit 0
"""

COLLECT = r"""
# evalkit: drain the gate-event and trace FIFOs into root-owned logs until stdin closes, and
# watch the canaries (inotify: which were opened; when the claim file was first written).
import ctypes, json, os, select, struct, sys
d, cap = sys.argv[1], int(sys.argv[2])
os.umask(0o077)
os.makedirs(d, mode=0o755, exist_ok=True)
os.chmod(d, 0o755)
pairs = []
for name in ("events", "trace"):
    fifo = os.path.join(d, name + ".fifo")
    os.mkfifo(fifo)
    os.chmod(fifo, 0o622)
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # RDWR: never EOF between writers
    pairs.append((fd, open(os.path.join(d, name + ".log"), "ab", buffering=0)))
sizes = {fd: 0 for fd, _ in pairs}
out = dict(pairs)
trace_fd = pairs[1][0]
watch = []  # "open PATH" / "claim OFFSET": written by this process only
locked = []
def pump(fd):
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        if not data:
            return
        if fd == trace_fd and not locked:
            # The tracer's first line, before the agent exists: from now on no process
            # but root can open the FIFO, and the tracer holds the only writing end.
            os.chmod(os.path.join(d, "trace.fifo"), 0o600)
            locked.append(1)
        if sizes[fd] < cap:
            out[fd].write(data[: cap - sizes[fd]])
        sizes[fd] += len(data)
libc = ctypes.CDLL(None, use_errno=True)
ino = -1
dirs = {}  # watch descriptor -> (directory, {name: canary path} or None for the claim's)
claim_name = None
def start_watching(request):
    global ino, claim_name
    ino = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if ino < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1")
    by_dir = {}
    for path in request["canaries"]:
        by_dir.setdefault(os.path.dirname(path), {})[os.path.basename(path)] = path
    claim_dir, claim_name = os.path.split(request["claim"])
    for directory, names in by_dir.items():
        # The directory, not the file: it needs no read access to the agent's 0600 files.
        # IN_OPEN, and IN_MOVED_FROM: a canary moved away, to be read elsewhere, counts too
        # (a hard link shows in no directory watch: the trace has link and linkat).
        mask = 0x20 | 0x40 | (0x100 | 0x2 | 0x8 | 0x80 if directory == claim_dir else 0)
        wd = libc.inotify_add_watch(ino, directory.encode(), mask)
        if wd >= 0:
            dirs[wd] = names
    if claim_dir not in by_dir:
        wd = libc.inotify_add_watch(ino, claim_dir.encode(), 0x100 | 0x2 | 0x8 | 0x80)
        if wd >= 0:
            dirs[wd] = {}
    return bool(dirs)
seen = set()
def read_watch():
    pump(trace_fd)  # everything traced before the event is counted before it
    while True:
        try:
            data = os.read(ino, 65536)
        except BlockingIOError:
            return
        at = 0
        while at + 16 <= len(data):
            wd, mask, _, size = struct.unpack_from("iIII", data, at)
            name = data[at + 16 : at + 16 + size].rstrip(b"\0").decode("utf-8", "replace")
            at += 16 + size
            names = dirs.get(wd, {})
            if mask & 0x60 and name in names and ("open", name, wd) not in seen:
                seen.add(("open", name, wd))
                watch.append("open " + names[name])
            if mask & 0x18A and name == claim_name and "claim" not in seen:
                seen.add("claim")
                watch.append("claim %d" % sizes[trace_fd])
print("ready", flush=True)
stdin = sys.stdin.fileno()
line = b""
while True:
    ready, _, _ = select.select([stdin, *out, *([ino] if ino >= 0 else [])], [], [])
    for fd in ready:
        if fd == stdin:
            data = os.read(stdin, 4096)
            if data and ino < 0 and b"\n" not in line:
                line += data
                if b"\n" in line:
                    ok = start_watching(json.loads(line.split(b"\n", 1)[0]))
                    print("watching" if ok else "no-watch", flush=True)
                continue
            if not data:
                for f in out:
                    pump(f)
                if ino >= 0:
                    read_watch()
                for f in out.values():
                    f.close()
                w = sys.stdout.buffer
                for name in ("events", "trace"):
                    with open(os.path.join(d, name + ".log"), "rb") as f:
                        data = f.read()
                    w.write(b"%s %d\n" % (name.encode(), len(data)) + data)
                text = "".join(x + "\n" for x in watch).encode()
                w.write(b"watch %d\n" % len(text) + text)
                w.flush()
                sys.exit(0)
        elif fd == ino:
            read_watch()
        else:
            pump(fd)
"""


class GatePack(NamedTuple):
    path: Path
    mounts: dict[str, str]
    """Container path -> host path, all read-only: the pack and the shell wrappers."""


def _image_shells(client: docker.DockerClient, image: str) -> dict[str, bytes]:
    """The image's own dash and bash (what /bin/sh and /bin/bash resolve to)."""
    from docker.errors import DockerException

    try:
        container = client.containers.create(image, command=["true"])
    except DockerException as exc:
        raise InfraError(f"could not read the shells of {image}: {exc}") from None

    def read(path: str) -> tarfile.TarInfo | bytes:
        stream, _ = container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.getmembers()[0]
            if member.issym():
                return member
            data = tar.extractfile(member)
            if data is None:
                raise InfraError(f"{image} has no regular file at {path}")
            return data.read()

    try:
        found: dict[str, bytes] = {}
        for name in ("dash", "bash"):
            got = read(f"/usr/bin/{name}")
            if isinstance(got, tarfile.TarInfo):  # follow one level (merged-usr images)
                got = read(str(Path("/usr/bin", got.linkname)))
            if isinstance(got, tarfile.TarInfo):
                raise InfraError(f"{image}: /usr/bin/{name} is a chain of links")
            found[name] = got
        return found
    except DockerException as exc:
        raise InfraError(f"could not read the shells of {image}: {exc}") from None
    finally:
        container.remove(force=True)


def pack_files(policy_rules: list[dict[str, Any]]) -> dict[str, tuple[bytes, int]]:
    """The pack's text files (path -> content, mode): pure, so tests can read them."""
    from evalkit._container import tracer

    checker = Path(gatecheck.__file__).read_bytes()
    files: dict[str, tuple[bytes, int]] = {
        "check.py": (checker, 0o644),
        "tracer.py": (Path(tracer.__file__).read_bytes(), 0o644),
        gatecheck.POLICY_FILE: (json.dumps({"rules": policy_rules}, indent=1).encode(), 0o644),
        "collect.py": (COLLECT.encode(), 0o644),
    }
    # One prefilter for every layer, from the rules' declared needs: a rule added by a
    # bake-off's own policy without needs makes every command reach the checker.
    pre = case_pattern(policy_prefilter(policy_rules))
    for tool in SHIM_TOOLS:
        shim = SHIM.format(
            gate=GATE_MOUNT,
            tool=tool,
            prefilter=pre,
            python=PYTHON,
            checker=CHECKER,
            shims=SHIM_DIR,
        )
        files[f"shims/{tool}"] = (shim.encode(), 0o755)
    for name, real in (("sh", "dash"), ("bash", "bash")):
        text = WRAPPER.format(
            gate=GATE_MOUNT,
            name=name,
            real=real,
            prefilter=pre,
            python=PYTHON,
            checker=CHECKER,
        )
        files[name] = (text.encode(), 0o755)
    # The hook sees the command JSON-encoded: a tab or newline in it is an escape, which a
    # need's whitespace would miss, so any escaped whitespace is checked too.
    hook_pre = pre if pre == "*" else pre + r"|*[\\][nrtu]*"
    hook = HOOK.format(gate=GATE_MOUNT, prefilter=hook_pre, python=PYTHON, checker=CHECKER)
    files["hook.sh"] = (hook.encode(), 0o755)
    return files


def build_gate_pack(
    client: docker.DockerClient,
    image: str,
    policy: Policy,
    root: Path,
    *,
    repo: str,
    home: str,
) -> GatePack:
    """The gate pack for one image and policy under ``root`` (reused when it exists)."""
    rules = policy.resolved(repo=repo, home=home)
    files = pack_files(rules)
    digest = hashlib.sha256(image.encode())
    for rel in sorted(files):
        digest.update(rel.encode() + b"\0" + files[rel][0])
    key = digest.hexdigest()[:16]
    path = root / key
    if not (path / "ready").exists():
        staging = Path(tempfile.mkdtemp(dir=root)) if root.exists() else None
        if staging is None:
            root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=root))
        for rel, (content, mode) in files.items():
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            target.chmod(mode)
        (staging / "bin").mkdir()
        for name, data in _image_shells(client, image).items():
            (staging / "bin" / name).write_bytes(data)
            (staging / "bin" / name).chmod(0o755)
        for d in [staging, *(p for p in staging.rglob("*") if p.is_dir())]:
            d.chmod(0o755)  # mkdtemp's 0700 would hide the pack from the agent's uid
        (staging / "ready").write_text("")
        if path.exists():
            shutil.rmtree(staging)
        else:
            staging.rename(path)
    mounts = {GATE_MOUNT: str(path.resolve())}
    for name in SHELLS:
        mounts[f"/bin/{name}"] = str((path / name).resolve())
    return GatePack(path, mounts)


def start_tracer(box: DockerSandbox) -> Process:
    """Start the audit's tracer (as the agent's uid) ahead of the agent's turn: its start-up
    is paid while the sandbox is staged; :func:`tracer_order` is its go signal."""
    return box.start([PYTHON, "-I", "-S", f"{GATE_MOUNT}/tracer.py", "--ahead", TRACE_FIFO])


def tracer_order(argv: list[str], env: dict[str, str], *, cwd: str, timeout: float) -> bytes:
    """What the tracer reads on stdin to run ``argv`` traced into the trace FIFO (which the
    collector locks before the agent starts), killing its whole tree after ``timeout`` s;
    whatever follows on stdin is the agent's."""
    body = json.dumps({"argv": argv, "env": env, "cwd": cwd, "timeout": timeout}).encode()
    return b"%d\n" % len(body) + body


def start_collector(box: DockerSandbox) -> Process:
    """Launch the root reader of the FIFOs; :func:`collector_ready` before the agent starts."""
    return box.start(
        [PYTHON, "-I", "-S", f"{GATE_MOUNT}/collect.py", TRUST_DIR, str(LOG_CAP)], user="0:0"
    )


def collector_ready(proc: Process) -> Process:
    if not proc.read_line(30).startswith(b"ready"):
        raise InfraError("the trust collector in the sandbox did not start")
    return proc


def watch_canaries(proc: Process, canary_paths: list[str], claim_path: str) -> None:
    """Have the collector watch the planted canaries and the claim file (inotify on their
    directories) from now on: which canaries any process opens, and where in the trace
    the claim was first written. The agent cannot touch what the collector records."""
    proc.write(json.dumps({"canaries": canary_paths, "claim": claim_path}).encode() + b"\n")
    if not proc.read_line(30).startswith(b"watching"):
        raise InfraError("the trust collector could not watch the canaries")


def stop_collector(proc: Process) -> tuple[str, str, str]:
    """Drain and stop the collector (after every agent process is dead); the event log's,
    the trace's and the canary watch's text, streamed back by the collector itself."""
    return split_logs(proc.finish(300, cap=2 * LOG_CAP + 1024 * 1024))


def split_logs(data: bytes) -> tuple[str, str, str]:
    """The collector's final output:
    ``events N\\n<N bytes>trace M\\n<M bytes>watch K\\n<K bytes>``."""
    logs: dict[str, str] = {}
    rest = data
    for name in ("events", "trace", "watch"):
        at = rest.find(name.encode() + b" ")
        if at < 0:
            break
        head, _, body = rest[at:].partition(b"\n")
        try:
            size = int(head.split(b" ", 1)[1])
        except ValueError:
            break
        logs[name] = body[:size].decode("utf-8", "replace")
        rest = body[size:]
    return logs.get("events", ""), logs.get("trace", ""), logs.get("watch", "")


class GateLogEntry(NamedTuple):
    layer: str
    rule: str
    kind: str
    action: str
    command: str
    pid: int | None = None
    """The checker's pid, as it said: believed only if the trace shows that process
    checking this command (:func:`evalkit.bakeoff.trust.decisions`)."""


def parse_events(text: str) -> list[GateLogEntry]:
    """The gate decisions in an event log; lines that are not a decision are skipped
    (the agent can write to the FIFO, so nothing in it is trusted to be well formed)."""
    out = []
    for line in text.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if not isinstance(doc, dict):
            continue
        layer, rule, kind, action, command = (
            doc.get(k) for k in ("layer", "rule", "kind", "action", "command")
        )
        pid = doc.get("pid")
        if all(isinstance(f, str) for f in (layer, rule, kind, action, command)):
            out.append(
                GateLogEntry(
                    str(layer),
                    str(rule),
                    str(kind),
                    str(action),
                    str(command),
                    pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
                )
            )
    return out

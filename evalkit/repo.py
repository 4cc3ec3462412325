"""Git adapter: a task set's repository bundles, unpacked once into a local cache.

The sandbox never sees the bundle. It gets a tar of one commit's tree, so no history
after (or before) ``base_commit`` — no future commit, tag or reflog — is reachable
inside a container.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
import threading
from datetime import datetime
from pathlib import Path

from evalkit.errors import UsageError

SANDBOX_UID = 1000

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def cache_root() -> Path:
    """Where unpacked repositories and other reusable state live."""
    base = os.environ.get("EVALKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "evalkit"
    )
    return Path(base)


def _git(*args: str, cwd: Path | None = None, input_bytes: bytes | None = None) -> bytes:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_CONFIG_NOSYSTEM="1")
    proc = subprocess.run(
        ["git", *args], cwd=cwd, input=input_bytes, capture_output=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(
            proc.returncode, ["git", *args], proc.stdout, proc.stderr
        )
    return proc.stdout


class Repository:
    """A bare clone of one bundle, keyed by the bundle's identity."""

    def __init__(self, bundle: Path, *, cache: Path | None = None):
        if not bundle.is_file():
            raise UsageError("repository bundle is missing", path=str(bundle))
        self.bundle = bundle
        stat = bundle.stat()
        ident = f"{bundle.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()
        digest = hashlib.sha256(ident).hexdigest()[:12]
        self.path = (cache or cache_root() / "repos") / f"{bundle.stem}-{digest}.git"
        self._ensure_clone()

    def _ensure_clone(self) -> None:
        key = str(self.path)
        with _locks_guard:
            lock = _locks.setdefault(key, threading.Lock())
        with lock:
            if (self.path / "evalkit-ready").exists():
                return
            tmp = self.path.with_name(self.path.name + f".tmp{os.getpid()}")
            subprocess.run(["rm", "-rf", str(tmp)], check=False)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            try:
                _git("clone", "--quiet", "--bare", str(self.bundle.resolve()), str(tmp))
            except subprocess.CalledProcessError as exc:
                message = exc.stderr.decode(errors="replace").strip().splitlines()
                raise UsageError(
                    f"not a readable git bundle ({message[-1] if message else exc})",
                    path=str(self.bundle),
                ) from None
            # Highest-precedence attributes: archives must contain every file,
            # whatever export-ignore/export-subst the repo's .gitattributes says.
            (tmp / "info").mkdir(exist_ok=True)
            (tmp / "info" / "attributes").write_text("* -export-ignore -export-subst\n")
            (tmp / "evalkit-ready").write_text("")
            subprocess.run(["rm", "-rf", str(self.path)], check=False)
            os.replace(tmp, self.path)

    def has_commit(self, sha: str) -> bool:
        try:
            _git("cat-file", "-e", f"{sha}^{{commit}}", cwd=self.path)
        except subprocess.CalledProcessError:
            return False
        return True

    def commit_date(self, sha: str) -> datetime | None:
        """The committer date of ``sha`` (None if git cannot say)."""
        try:
            out = _git("log", "-1", "--format=%cI", sha, "--", cwd=self.path)
            return datetime.fromisoformat(out.decode().strip())
        except (subprocess.CalledProcessError, ValueError):
            return None

    def read_files(self, commit: str, paths: tuple[str, ...]) -> dict[str, str]:
        """Text of those ``paths`` that exist at ``commit`` (one ``cat-file --batch`` call)."""
        request = "".join(f"{commit}:{p}\n" for p in paths).encode()
        out = _git("cat-file", "--batch", cwd=self.path, input_bytes=request)
        found: dict[str, str] = {}
        pos = 0
        for path in paths:
            end = out.index(b"\n", pos)
            header = out[pos:end].split()
            pos = end + 1
            if len(header) == 3 and header[1] == b"blob":
                size = int(header[2])
                found[path] = out[pos : pos + size].decode("utf-8", errors="replace")
                pos += size + 1
        return found

    def tree_tar(self, commit: str, prefix: str, *, uid: int = SANDBOX_UID) -> bytes:
        """A tar of ``commit``'s tree under ``prefix``/, owned by the sandbox user."""
        raw = _git("archive", "--format=tar", commit, cwd=self.path)
        out = io.BytesIO()
        with (
            tarfile.open(fileobj=io.BytesIO(raw)) as src,
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst,
        ):
            root = tarfile.TarInfo(prefix)
            root.type, root.mode, root.uid, root.gid = tarfile.DIRTYPE, 0o755, uid, uid
            dst.addfile(root)
            for member in src:
                if member.type == tarfile.XGLTYPE:  # git's commit-id pax header
                    continue
                member.name = f"{prefix}/{member.name}".rstrip("/")
                member.uid = member.gid = uid
                member.uname = member.gname = ""
                member.mode |= 0o200
                fileobj = src.extractfile(member) if member.isfile() else None
                dst.addfile(member, fileobj)
        return out.getvalue()

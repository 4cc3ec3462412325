"""Pure checks on unified diffs: is a patch safe to hand to the sandbox, what does it touch.

Patches from agents are untrusted input. They are parsed with :mod:`unidiff`; a patch
that escapes the repository (``../``, absolute paths), carries binary hunks, or is
absurdly large is rejected before any container starts.
"""

from __future__ import annotations

import codecs
import fnmatch
import functools
import hashlib
import re
import subprocess
from dataclasses import dataclass
from pathlib import PurePosixPath

# Which files are tests or test configuration is each runner's knowledge
# (evalkit.runners); these names stay for callers that import them from here.
from evalkit.runners.python import CONFIG_NAMES as _TEST_CONFIG_NAMES
from evalkit.runners.python import TEST_DIRS as _TEST_DIRS  # noqa: F401

MAX_PATCH_BYTES = 5 * 1024 * 1024
"""Largest model patch accepted; real fixes are kilobytes."""


class PatchRejected(ValueError):
    """The patch is unsafe or unreadable; the message says why in one line."""


@dataclass(frozen=True)
class PatchInfo:
    """What a validated patch touches."""

    paths: tuple[str, ...]
    """Every path the patch reads or writes (source and target), repo-relative."""
    added: tuple[str, ...]
    removed: tuple[str, ...]
    lines_added: int
    lines_removed: int
    renames: tuple[tuple[str, str], ...] = ()
    """``(from, to)`` for each rename or copy, as git's extended headers name them."""
    modes: tuple[tuple[str, str], ...] = ()
    """``(path, mode)`` for each mode change and each symlink (``120000``) in the headers."""


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _clean_path(raw: str | None) -> str | None:
    """Strip the ``a/`` ``b/`` prefixes; refuse paths that leave the repository."""
    if raw is None or raw == "/dev/null":
        return None
    path = raw
    if path.startswith(("a/", "b/")):
        path = path[2:]
    if path.startswith("/") or "\\" in path:
        raise PatchRejected(f"path {raw!r} is absolute or uses backslashes")
    parts = PurePosixPath(path).parts
    if any(part == ".." for part in parts):
        raise PatchRejected(f"path {raw!r} escapes the repository (..)")
    if any(part.lower() == ".git" for part in parts):
        raise PatchRejected(f"path {raw!r} writes inside .git")
    if any(c in path for c in "\n\r\t\x00"):
        raise PatchRejected(f"path {raw!r} has control characters")
    return path


def _unquote(raw: str) -> str:
    """A path as git writes it in extended headers: C-quoted when it has odd bytes."""
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return codecs.escape_decode(raw[1:-1].encode())[0].decode("utf-8", "surrogateescape")
    return raw


_HEADER_PATH = re.compile(r"^(rename|copy) (from|to) (.+)$")
_MODE = re.compile(r"^(old mode|new mode|new file mode|deleted file mode) ([0-7]+)$")
# A section unidiff skips but GNU patch would apply: context diffs, ed scripts.
_FOREIGN_SECTION = re.compile(r"^(\*\*\* \S|\*{15}|\d+(,\d+)?[acd]\d+(,\d+)?$)", re.MULTILINE)


# Each prediction's patch is vetted when the run is planned and again when its unit is
# prepared; the second costs nothing (the git parse is a subprocess).
@functools.lru_cache(maxsize=512)
def inspect_patch(text: str, *, max_bytes: int = MAX_PATCH_BYTES) -> PatchInfo:
    """Parse and vet a unified diff. Raises :class:`PatchRejected` with a one-line reason."""
    from unidiff.errors import UnidiffParseError
    from unidiff.patch import PatchSet

    size = len(text.encode("utf-8", "surrogateescape"))
    if size > max_bytes:
        raise PatchRejected(f"patch is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB cap")
    if "\x00" in text:
        raise PatchRejected("patch contains NUL bytes (binary content)")
    if "GIT binary patch" in text:
        raise PatchRejected("patch has binary hunks ('GIT binary patch'), which are not supported")
    try:
        patch_set = PatchSet(text)
    except UnidiffParseError as exc:
        raise PatchRejected(f"not a unified diff: {exc}") from None
    if not patch_set:
        raise PatchRejected("no file changes found in the patch")
    foreign = _FOREIGN_SECTION.search(_outside_hunks(text))
    if foreign:
        raise PatchRejected(
            f"patch has a section that is not a unified diff ({foreign.group(0)[:40]!r})"
        )
    paths: list[str] = []
    added: list[str] = []
    removed: list[str] = []
    renames: list[tuple[str, str]] = []
    modes: list[tuple[str, str]] = []
    for patched in patch_set:
        if patched.is_binary_file:
            raise PatchRejected(f"binary change to {patched.path!r} is not supported")
        source = _clean_path(patched.source_file)
        target = _clean_path(patched.target_file)
        for path in (source, target):
            if path is not None and path not in paths:
                paths.append(path)
        if patched.is_added_file and target:
            added.append(target)
        if patched.is_removed_file and source:
            removed.append(source)
        moved: dict[str, str] = {}
        for line in patched.patch_info or ():
            header = str(line).rstrip("\n")
            if match := _HEADER_PATH.match(header):
                clean = _clean_path(_unquote(match.group(3)))
                assert clean is not None
                moved[match.group(2)] = clean
            elif (match := _MODE.match(header)) and (
                match.group(1) in ("old mode", "new mode") or match.group(2) == "120000"
            ):
                modes.append((target or source or "", match.group(2)))
        if moved:
            # git applies what the rename lines say; unidiff reads the diff header.
            # They must name the same files, or the vetted paths are not the written ones.
            if moved.get("from") != source or moved.get("to") != target:
                raise PatchRejected(
                    f"rename lines ({moved.get('from')} -> {moved.get('to')}) disagree with "
                    f"the diff header ({source} -> {target})"
                )
            renames.append((moved["from"], moved["to"]))
    _check_git_agrees(text, paths)
    return PatchInfo(
        paths=tuple(paths),
        added=tuple(added),
        removed=tuple(removed),
        lines_added=patch_set.added,
        lines_removed=patch_set.removed,
        renames=tuple(renames),
        modes=tuple(modes),
    )


def _outside_hunks(text: str) -> str:
    """The patch's header lines only: hunk bodies are free text (code may hold ``***``)."""
    keep: list[str] = []
    old = new = 0
    for line in text.splitlines():
        if old > 0 or new > 0:
            tag = line[:1]
            if tag == "-":
                old -= 1
            elif tag == "+":
                new -= 1
            elif tag in (" ", ""):
                old, new = old - 1, new - 1
            elif tag != "\\":
                old = new = 0
                keep.append(line)
            continue
        if match := re.match(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@", line):
            old = int(match.group(1) if match.group(1) is not None else 1)
            new = int(match.group(2) if match.group(2) is not None else 1)
            continue
        keep.append(line)
    return "\n".join(keep)


def _check_git_agrees(text: str, paths: list[str]) -> None:
    """Ask git which files it would write; refuse a patch git reads differently.

    ``git apply --numstat`` only parses (nothing is written), so running it on the host
    is safe. Without git on the host the check is skipped; the sandbox still verifies
    that apply wrote nothing outside the vetted paths.
    """
    try:
        proc = subprocess.run(
            ["git", "apply", "--numstat", "-z", "--allow-empty", "-"],
            input=text.encode("utf-8", "surrogateescape"),
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return
    if proc.returncode != 0:
        reason = proc.stderr.decode("utf-8", "replace").strip().splitlines()[:1] or ["?"]
        raise PatchRejected(f"git cannot read the patch: {reason[0]}")
    seen = set()
    for field in proc.stdout.split(b"\0"):
        name = field.split(b"\t", 2)[-1].decode("utf-8", "surrogateescape")
        if name:
            seen.add(name)
    unknown = sorted(seen - set(paths))
    if unknown:
        raise PatchRejected(f"git would write {unknown[0]!r}, which the diff headers do not name")


def is_test_path(path: str, extra_globs: tuple[str, ...] = ()) -> bool:
    """Whether ``path`` is test code by any runner's conventions, by path components,
    not substrings (see :mod:`evalkit.runners`).

    ``tests/unit/x.py``, ``pkg/test_io.py``, ``io_test.py``, ``conftest.py``,
    ``src/a.test.ts`` and ``__tests__/a.js`` are tests; ``src/latest.py`` and
    ``contest/x.py`` are not.
    """
    from evalkit.runners import is_test_path as runner_test_path

    return runner_test_path(path) or any(fnmatch.fnmatch(path, p) for p in extra_globs)


def is_test_infrastructure(path: str) -> bool:
    """Whether editing ``path`` can change which tests run or how they are reported."""
    from evalkit.runners import is_test_config, shared_config

    return (
        is_test_path(path)
        or PurePosixPath(path).name in _TEST_CONFIG_NAMES
        or is_test_config(path)
        or shared_config(path)
    )


def check_test_infrastructure(info: PatchInfo) -> None:
    """Refuse moves, copies, symlinks and mode changes that touch test infrastructure.

    Reverting content is not enough for these: a rename can carry a file into a test
    path, and a symlink or mode change survives a content restore.
    """
    for source, target in info.renames:
        for path in (source, target):
            if is_test_infrastructure(path):
                raise PatchRejected(f"renames or copies test infrastructure ({source} -> {target})")
    for path, mode in info.modes:
        if is_test_infrastructure(path):
            kind = "a symlink" if mode == "120000" else f"mode {mode}"
            raise PatchRejected(f"sets {kind} on test infrastructure ({path})")

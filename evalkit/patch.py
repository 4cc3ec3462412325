"""Pure checks on unified diffs: is a patch safe to hand to the sandbox, what does it touch.

Patches from agents are untrusted input. They are parsed with :mod:`unidiff`; a patch
that escapes the repository (``../``, absolute paths), carries binary hunks, or is
absurdly large is rejected before any container starts.
"""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass
from pathlib import PurePosixPath

MAX_PATCH_BYTES = 5 * 1024 * 1024
"""Largest model patch accepted; real fixes are kilobytes."""

_TEST_DIRS = frozenset({"test", "tests", "testing", "e2e"})

# Files whose edits change how tests are collected or reported. A model patch that
# touches them is reverted before grading (SWE-bench #631: conftest-only "fixes").
_TEST_CONFIG_NAMES = frozenset(
    {
        "conftest.py",
        "pytest.ini",
        "tox.ini",
        "setup.cfg",
        "pyproject.toml",
        ".pytest.ini",
        "noxfile.py",
        "pytest.toml",
        ".coveragerc",
    }
)


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
    if parts and parts[0] == ".git":
        raise PatchRejected(f"path {raw!r} writes inside .git")
    return path


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
    paths: list[str] = []
    added: list[str] = []
    removed: list[str] = []
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
    return PatchInfo(
        paths=tuple(paths),
        added=tuple(added),
        removed=tuple(removed),
        lines_added=patch_set.added,
        lines_removed=patch_set.removed,
    )


def is_test_path(path: str, extra_globs: tuple[str, ...] = ()) -> bool:
    """Whether ``path`` is test code, by path components, not substrings.

    ``tests/unit/x.py``, ``pkg/test_io.py``, ``io_test.py`` and ``conftest.py`` are tests;
    ``src/latest.py`` and ``contest/x.py`` are not.
    """
    pure = PurePosixPath(path)
    if any(part.lower() in _TEST_DIRS for part in pure.parts[:-1]):
        return True
    name = pure.name
    if name == "conftest.py" or (name.startswith("test_") and name.endswith(".py")):
        return True
    if name.endswith("_test.py") or name == "tests.py":
        return True
    return any(fnmatch.fnmatch(path, pattern) for pattern in extra_globs)


def is_test_infrastructure(path: str) -> bool:
    """Whether editing ``path`` can change which tests run or how they are reported."""
    return is_test_path(path) or PurePosixPath(path).name in _TEST_CONFIG_NAMES

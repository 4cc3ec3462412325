"""Scripted agent "sloppy": a plausible-looking edit that does not fix the issue.

Generic: it finds a function the problem statement names (``name(`` or a backticked name)
that is defined outside the tests, adds an early return for empty input at its top, and
claims success without running anything. If no named function is found it edits the
first non-test module it finds the same way. In a JavaScript / TypeScript project (no
Python modules, a ``package.json``) the same guard goes at the top of a ``function NAME(``
or ``const NAME = (...) =>`` body.
usage: python3 sloppy.py
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
from pathlib import Path

SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".tox", "site-packages"}
TEST_DIRS = {"test", "tests", "testing"}


def claim(resolved: bool, summary: str) -> None:
    body = json.dumps({"resolved": resolved, "summary": summary})
    path = os.environ.get("EVALKIT_CLAIM_FILE")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(body + "\n")
    print(f"claim: {body}")


def source_files(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if d not in SKIP_DIRS and d.lower() not in TEST_DIRS
        )
        for name in sorted(filenames):
            if name.endswith(".py") and not (
                name.startswith("test_")
                or name.endswith("_test.py")
                or name == "conftest.py"
                or name == "setup.py"
            ):
                found.append(Path(dirpath, name))
    return found


def named_in_problem() -> list[str]:
    path = os.environ.get("EVALKIT_PROBLEM_FILE")
    text = Path(path).read_text(errors="replace") if path and Path(path).is_file() else ""
    names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\(", text)
    names += re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", text)
    return list(dict.fromkeys(names))


def functions(path: Path) -> list[ast.FunctionDef]:
    try:
        tree = ast.parse(path.read_text())
    except (SyntaxError, UnicodeDecodeError):
        return []
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.body]


def guard(path: Path, func: ast.FunctionDef) -> bool:
    params = [a.arg for a in func.args.args if a.arg not in ("self", "cls")]
    if not params:
        return False
    body = func.body
    first = body[0]
    if first.lineno == func.lineno:  # a one-line def: no room for a guard
        return False
    is_doc = isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant)
    anchor = body[1] if is_doc and len(body) > 1 else None
    lines = path.read_text().splitlines(keepends=True)
    indent = " " * first.col_offset
    at = (anchor.lineno - 1) if anchor is not None else (first.end_lineno or first.lineno)
    lines[at:at] = [
        f"{indent}if not {params[0]}:  # handle the empty case reported in the issue\n",
        f"{indent}    return {params[0]}\n",
    ]
    path.write_text("".join(lines))
    return True


JS_EXTENSIONS = (".js", ".jsx", ".ts", ".tsx", ".mjs", ".cjs", ".mts", ".cts")
JS_TEST = re.compile(r"\.(test|spec)\.[cm]?[jt]sx?$|\.config\.[cm]?[jt]s$|\.d\.ts$")
JS_TEST_DIRS = {"__tests__", "test", "tests", "spec", "e2e"}
# `function name(a: T, ...) {` or `const name = (a, ...) => {`: group 1 the name,
# group 2 the parameter list, the match ends at the body's `{`.
JS_FUNCTION = re.compile(
    r"(?:function\s+([A-Za-z_$][\w$]*)\s*(?:<[^>]*>)?\s*\(([^)]*)\)[^{;]*\{)"
    r"|(?:(?:const|let|var)\s+([A-Za-z_$][\w$]*)\s*=\s*(?:async\s*)?\(([^)]*)\)[^{;]*=>\s*\{)"
)


def js_source_files(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and d not in JS_TEST_DIRS)
        for name in sorted(filenames):
            if name.endswith(JS_EXTENSIONS) and not JS_TEST.search(name):
                found.append(Path(dirpath, name))
    return found


def js_guard(root: Path, wanted: list[str]) -> int:
    spots = []
    for path in js_source_files(root):
        text = path.read_text(errors="replace")
        for m in JS_FUNCTION.finditer(text):
            name, params = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
            first = re.match(r"\s*([A-Za-z_$][\w$]*)", params or "")
            if first:
                rank = wanted.index(name) if name in wanted else len(wanted)
                spots.append((rank, path, m.end(), name, first.group(1)))
    spots.sort(key=lambda s: s[0])
    for _, path, at, name, param in spots[:1]:
        text = path.read_text(errors="replace")
        guard = f"\n  if (!{param}) return {param}; // handle the empty case reported in the issue"
        path.write_text(text[:at] + guard + text[at:])
        print(f"sloppy: edited {name} in {path.relative_to(root)}")
        claim(True, f"fixed {name} for the reported input")
        return 0
    claim(True, "looked into it; should be fine now")
    return 0


def main() -> int:
    root = Path.cwd()
    files = source_files(root)
    if not files and (root / "package.json").is_file():
        return js_guard(root, named_in_problem())
    wanted = named_in_problem()
    candidates = [(f, fn) for f in files for fn in functions(f) if fn.name in wanted]
    candidates.sort(key=lambda c: wanted.index(c[1].name))
    candidates += [(f, fn) for f in files for fn in functions(f)]
    for path, func in candidates:
        if guard(path, func):
            print(f"sloppy: edited {func.name} in {path.relative_to(root)}")
            claim(True, f"fixed {func.name} for the reported input")
            return 0
    claim(True, "looked into it; should be fine now")
    return 0


if __name__ == "__main__":
    sys.exit(main())

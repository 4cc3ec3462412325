"""Keep a Node install for every fresh checkout (an image build step, run as root).

The dependencies were installed in a copy of the repository that the build then
deletes; each task gets a fresh checkout at /testbed. The root ``node_modules``
becomes ``/node_modules`` (Node's resolution reaches it from anywhere under /testbed
by walking up); a workspace's own ``node_modules`` (a monorepo's package that needs
another version than the root has, or pnpm's per-package links) is kept, root-owned,
under /opt/evalkit-node/<workspace>/ and linked into each checkout before the tests
(the script written to LINKER). Links that pointed from a ``node_modules`` into the
repository (npm / yarn / pnpm workspace packages) are made absolute, into /testbed;
links into another ``node_modules`` follow it to where it now lives.

    python3 env_node_layout.py /opt/evalkit-deps
"""

from __future__ import annotations

import os
import shutil
import sys

CHECKOUT = "/testbed"
ROOT_MODULES = "/node_modules"
KEPT = "/opt/evalkit-node"
LINKER = "/usr/local/bin/evalkit-link-node-modules"
VITE_TEMP = "/tmp/.vite-temp"


def module_trees(src: str) -> list[str]:
    """Directories (relative to ``src``; ``.`` for the root) that hold a ``node_modules``."""
    found = []
    for top, dirs, _ in os.walk(src):
        if "node_modules" in dirs and not os.path.islink(os.path.join(top, "node_modules")):
            found.append(os.path.relpath(top, src))
        dirs[:] = [d for d in dirs if d not in ("node_modules", ".git")]
    return sorted(found, key=lambda rel: (rel != ".", rel))


def destination(rel: str) -> str:
    return ROOT_MODULES if rel == "." else os.path.join(KEPT, rel, "node_modules")


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def relocated(target: str, src: str, trees: list[str]) -> str | None:
    """Where an absolute path under ``src`` will be once the layout is done."""
    if not _inside(target, src):
        return None
    for rel in sorted(trees, key=len, reverse=True):
        modules = os.path.normpath(os.path.join(src, rel, "node_modules"))
        if _inside(target, modules):
            return destination(rel) + target[len(modules) :]
    return os.path.normpath(os.path.join(CHECKOUT, os.path.relpath(target, src)))


def fix_links(src: str, rel: str, trees: list[str]) -> int:
    """Rewrite the links of one ``node_modules`` that leave it; returns how many."""
    own = os.path.normpath(os.path.join(src, rel, "node_modules"))
    changed = 0
    for top, dirs, files in os.walk(own):
        for name in dirs + files:
            link = os.path.join(top, name)
            if not os.path.islink(link):
                continue
            target = os.path.normpath(os.path.join(top, os.readlink(link)))
            if _inside(target, own):
                continue  # moves with its tree
            new = relocated(target, src, trees)
            if new is not None:
                os.unlink(link)
                os.symlink(new, link)
                changed += 1
    return changed


def linker_script(workspaces: list[str]) -> str:
    lines = [
        "#!/bin/sh",
        "# evalkit: link each workspace's kept node_modules into the fresh checkout.",
    ]
    for rel in workspaces:
        here = os.path.join(CHECKOUT, rel)
        lines.append(
            f"[ ! -d '{here}' ] || [ -e '{here}/node_modules' ] || "
            f"ln -s '{destination(rel)}' '{here}/node_modules'"
        )
    lines.append("exit 0")
    return "\n".join(lines) + "\n"


def main(src: str) -> None:
    trees = module_trees(src)
    if "." not in trees:
        sys.exit("evalkit: the install made no node_modules at the repository's root")
    workspaces = [rel for rel in trees if rel != "."]
    if any("'" in rel for rel in workspaces):
        sys.exit("evalkit: a workspace path with a quote in it")
    changed = sum(fix_links(src, rel, trees) for rel in trees)
    for rel in trees:
        dest = destination(rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.move(os.path.join(src, rel, "node_modules"), dest)
        # vite bundles a TypeScript config into the nearest node_modules/.vite-temp: the
        # sandbox's writable /tmp, as the root filesystem is read-only at test time.
        temp = os.path.join(dest, ".vite-temp")
        if os.path.lexists(temp):
            shutil.rmtree(temp) if not os.path.islink(temp) else os.unlink(temp)
        os.symlink(VITE_TEMP, temp)
    with open(LINKER, "w", encoding="utf-8") as out:
        out.write(linker_script(workspaces))
    os.chmod(LINKER, 0o755)
    print(f"evalkit: node_modules kept: root + {len(workspaces)} workspaces, {changed} links moved")


if __name__ == "__main__":
    main(os.path.abspath(sys.argv[1]))

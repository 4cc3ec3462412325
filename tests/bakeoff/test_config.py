"""The bake-off config: issue #8's keys load as typed values, and every mistake is one line
naming the file and the key, before anything runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from evalkit.bakeoff.config import (
    AttemptKey,
    load_config,
    make_run_options,
    plan_attempts,
    resolve_agent_env,
    resolve_agent_files,
    select_instances,
)
from evalkit.errors import UsageError

# Issue #8's example, verbatim apart from the file it names.
EXAMPLE = """\
[bakeoff]
repeats = 3
timeout = 1800            # seconds per attempt, wall clock
budget_usd = 2.0          # per attempt; the gateway refuses model calls past it

[models.anthropic]        # an upstream the gateway forwards to
base_url = "https://api.anthropic.com"
api_key_env = "ANTHROPIC_API_KEY"     # read on the host only; never enters a container
price = { input_per_mtok = 5.0, output_per_mtok = 25.0 }

[[agents]]
name = "claude-code"
adapter = "claude-code"   # built in: claude-code, codex, mini-swe-agent, aider, command
version = "2.1.328"
upstream = "anthropic"
model = "claude-opus-4-5"
args = ["--max-turns", "60"]

[[agents]]
name = "my-script"
adapter = "command"
command = ["bash", "/agent/run.sh"]
files = { "/agent/run.sh" = "agents/run.sh" }   # copied in read-only, relative to the config
upstream = "anthropic"
env = ["MY_FLAG"]         # names of host variables to pass in; nothing else passes
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "agents").mkdir(exist_ok=True)
    (tmp_path / "agents" / "run.sh").write_text("echo run\n")
    path = tmp_path / "bakeoff.toml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}:"), message
    return message.removeprefix(f"{path}: ")


def test_issue_example_loads_as_typed_values(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, EXAMPLE))
    assert (config.bakeoff.repeats, config.bakeoff.timeout, config.bakeoff.budget_usd) == (
        3,
        1800.0,
        2.0,
    )
    upstream = config.models["anthropic"]
    assert upstream.api_key_env == "ANTHROPIC_API_KEY"
    assert (upstream.price.input_per_mtok, upstream.price.output_per_mtok) == (5.0, 25.0)
    claude, script = config.agents
    assert claude.args == ["--max-turns", "60"] and claude.agent_version == "2.1.328"
    assert script.command == ["bash", "/agent/run.sh"] and script.env == ["MY_FLAG"]
    assert resolve_agent_files(script) == {"/agent/run.sh": b"echo run\n"}
    assert config.upstream_of(script) is upstream
    # evalkit's additions have defaults.
    assert config.bakeoff.workers == 1 and config.bakeoff.limits.memory_bytes == 4 * 1024**3
    assert config.policy is None


def test_config_identity_covers_the_text_and_the_agent_files(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    first = load_config(path)
    assert load_config(path).sha256 == first.sha256
    (tmp_path / "agents" / "run.sh").write_text("echo changed\n")
    changed = load_config(path)
    assert changed.sha256 != first.sha256
    # A command agent without a pin is versioned by its files' content.
    assert changed.agents[1].agent_version != first.agents[1].agent_version
    path.write_text(EXAMPLE.replace("repeats = 3", "repeats = 2"))
    assert load_config(path).sha256 not in {first.sha256, changed.sha256}


MISTAKES = [
    # (old, new, expected message after "FILE: ")
    (
        'adapter = "command"',
        'adapter = "foo"',
        "agents[1].adapter: unknown adapter 'foo' (choose from claude-code, codex, "
        "mini-swe-agent, aider, command)",
    ),
    ("repeats = 3", 'repeats = "3"', "bakeoff.repeats: expected an integer, got string '3'"),
    ("repeats = 3", "repeats = 0", "bakeoff.repeats: should be greater than or equal to 1"),
    ("timeout = 1800", "timeout = true", "bakeoff.timeout: expected a number, got boolean true"),
    ("budget_usd = 2.0", "budget_usd = -1.0", "bakeoff.budget_usd: should be greater than"),
    ("budget_usd = 2.0", "budjet_usd = 2.0", "bakeoff.budjet_usd: unknown key (did you mean"),
    ("[bakeoff]", "[bakeof]\nx = 1\n[bakeoff]", "bakeof: unknown key"),
    (
        "input_per_mtok = 5.0",
        "input_per_mtok = nan",
        "models.anthropic.price.input_per_mtok: expected a finite number",
    ),
    (
        "output_per_mtok = 25.0 }",
        "output_per_mtok = 25.0, cached = 1.0 }",
        "models.anthropic.price.cached: unknown key",
    ),
    (
        "price = { input_per_mtok = 5.0, output_per_mtok = 25.0 }",
        "",
        "models.anthropic.price: missing key",
    ),
    (
        'base_url = "https://api.anthropic.com"',
        'base_url = "api.anthropic.com"',
        "models.anthropic.base_url: expected an http(s) URL",
    ),
    (
        'args = ["--max-turns", "60"]',
        'args = "--max-turns 60"',
        "agents[0].args: expected an array, got string",
    ),
    ('args = ["--max-turns", "60"]', "args = [60]", "agents[0].args[0]: expected a string"),
    (
        'args = ["--max-turns", "60"]',
        'argz = ["x"]',
        "agents[0].argz: unknown key (did you mean 'args'?)",
    ),
    ('env = ["MY_FLAG"]', 'env = "MY_FLAG"', "agents[1].env: expected an array"),
    ('env = ["MY_FLAG"]', 'env = ["MY FLAG"]', "agents[1].env: 'MY FLAG' is not an environment"),
    ('env = ["MY_FLAG"]', 'env = ["MY_FLAG", "MY_FLAG"]', "agents[1].env: a name is listed twice"),
    (
        'upstream = "anthropic"\nmodel',
        'upstream = "openai"\nmodel',
        "agents[0].upstream: "
        "undefined upstream 'openai' (no [models.openai] table; defined: anthropic)",
    ),
    (
        'name = "my-script"',
        'name = "claude-code"',
        "agents[1].name: duplicate agent name 'claude-code' (also agents[0]",
    ),
    ('name = "my-script"', 'name = "Claude-Code"', "agents[1].name: duplicate agent name"),
    ('name = "my-script"', 'name = "../evil"', "agents[1].name: '../evil' is not a safe name"),
    ('name = "my-script"', 'name = "my script"', "agents[1].name: 'my script' is not a safe name"),
    ('name = "my-script"', 'name = ""', "agents[1].name: '' is not a safe name"),
    ('name = "my-script"', 'name = "gold"', "agents[1].name: 'gold' is reserved"),
    ('command = ["bash", "/agent/run.sh"]\n', "", "agents[1].command: a 'command' agent needs"),
    (
        'command = ["bash", "/agent/run.sh"]',
        "command = []",
        "agents[1].command: a 'command' agent needs",
    ),
    (
        'args = ["--max-turns", "60"]',
        'command = ["claude"]',
        "agents[0].command: only 'command' agents take a command",
    ),
    ('version = "2.1.328"\n', "", "agents[0].version: adapter 'claude-code' needs a pinned"),
    ('version = "2.1.328"', 'version = "^2.1"', "agents[0].version: '^2.1' is not a pinned"),
    ('version = "2.1.328"', 'version = "latest"', "agents[0].version: 'latest' is not a pinned"),
    (
        'upstream = "anthropic"\nmodel = "claude-opus-4-5"',
        'model = "claude-opus-4-5"',
        "agents[0].upstream: missing key",
    ),
    ('model = "claude-opus-4-5"\n', "", "agents[0].model: missing key"),
    ("[[agents]]", "[[agents]]\ncolour = 'red'", "agents[0].colour: unknown key"),
    (
        "[bakeoff]",
        '[bakeoff]\npolicy = "policy.toml"',
        "bakeoff.policy: 'policy.toml' does not exist",
    ),
    (
        "[bakeoff]",
        '[bakeoff]\nlimits = { memory = "lots" }',
        "bakeoff.limits.memory: expected a size such as '4g'",
    ),
    (
        "[bakeoff]",
        '[bakeoff]\nlimits = { memory = "1m" }',
        "bakeoff.limits.memory: '1m' is below the 64m minimum",
    ),
    ("[bakeoff]", "[bakeoff]\nlimits = { pids = 1 }", "bakeoff.limits.pids: should be greater"),
    ("[models.anthropic]", '[models."bad name"]', 'models."bad name": upstream names must be'),
]


@pytest.mark.parametrize(("old", "new", "expected"), MISTAKES)
def test_every_mistake_is_one_line_naming_file_and_key(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    assert old in EXAMPLE
    assert error_of(tmp_path, EXAMPLE.replace(old, new, 1)).startswith(expected)


def test_upstream_names_must_be_safe(tmp_path: Path) -> None:
    text = EXAMPLE.replace("[models.anthropic]", '[models."a/b"]').replace(
        'upstream = "anthropic"', 'upstream = "a/b"'
    )
    assert error_of(tmp_path, text).startswith('models."a/b": upstream names must be')


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("ANTHROPIC_API_KEY", "is set by evalkit in the sandbox"),
        ("OPENAI_BASE_URL", "is set by evalkit in the sandbox"),
        ("EVALKIT_MODEL_API_KEY", "is set by evalkit in the sandbox"),
        ("HOME", "is set by evalkit in the sandbox"),
        ("PATH", "is set by evalkit in the sandbox"),
    ],
)
def test_agents_cannot_pass_keys_or_endpoints_from_the_host(
    tmp_path: Path, name: str, why: str
) -> None:
    message = error_of(tmp_path, EXAMPLE.replace('env = ["MY_FLAG"]', f'env = ["{name}"]'))
    assert message.startswith(f"agents[1].env: '{name}' {why}")


def test_a_models_key_variable_never_passes_into_a_sandbox(tmp_path: Path) -> None:
    # Any name can hold a real key; the config says which ones do.
    text = EXAMPLE.replace('api_key_env = "ANTHROPIC_API_KEY"', 'api_key_env = "TEAM_LLM_KEY"')
    text = text.replace('env = ["MY_FLAG"]', 'env = ["MY_FLAG", "TEAM_LLM_KEY"]')
    assert error_of(tmp_path, text).startswith("agents[1].env: 'TEAM_LLM_KEY' holds a model key")


FILES_KEY = '"/agent/run.sh" = "agents/run.sh"'


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            '"agent/run.sh" = "agents/run.sh"',
            'agents[1].files."agent/run.sh": container paths must be absolute',
        ),
        (
            '"/testbed/run.sh" = "agents/run.sh"',
            'agents[1].files."/testbed/run.sh": container path is inside /testbed',
        ),
        ('"/testbed" = "agents"', 'agents[1].files."/testbed": container path is inside /testbed'),
        ('"/evalkit/agent/bin/claude" = "agents/run.sh"', "container path is inside /evalkit,"),
        ('"/evalkit/problem.md" = "agents/run.sh"', "container path is inside /evalkit,"),
        ('"/tmp/evalkit/claim.json" = "agents/run.sh"', "container path is inside /tmp/evalkit"),
        ('"/agent/../testbed/x" = "agents/run.sh"', "container path must be normalised"),
        ('"/agent//run.sh" = "agents/run.sh"', "container path must be normalised"),
        ('"/" = "agents"', "container path must be normalised"),
        ('"/usr/bin/git" = "agents/run.sh"', "container path is inside /usr"),
        ('"/opt/venv/bin/python" = "agents/run.sh"', "container path is inside /opt/venv"),
        ('"/agent/run.sh" = "agents/missing.sh"', "'agents/missing.sh' does not exist"),
        ('"/agent/run.sh" = "../outside.sh"', "'../outside.sh' escapes the config's directory"),
        ('"/agent/run.sh" = "/etc/hostname"', "'/etc/hostname' escapes the config's directory"),
        ('"/agent/run.sh" = ""', "empty source path"),
    ],
)
def test_bad_agent_files_are_refused(tmp_path: Path, entry: str, expected: str) -> None:
    (tmp_path.parent / "outside.sh").write_text("secret\n")
    message = error_of(tmp_path, EXAMPLE.replace(FILES_KEY, entry))
    assert expected in message and message.startswith("agents[1].files."), message


def test_a_symlink_cannot_smuggle_a_file_from_outside_the_config_dir(tmp_path: Path) -> None:
    secret = tmp_path.parent / f"{tmp_path.name}-secret"
    secret.write_text("host secret\n")
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "link.sh").symlink_to(secret)
    message = error_of(tmp_path, EXAMPLE.replace(FILES_KEY, '"/agent/run.sh" = "agents/link.sh"'))
    assert "escapes the config's directory" in message
    # Inside a directory source too.
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "ok.txt").write_text("ok\n")
    (tmp_path / "bundle" / "link").symlink_to(secret)
    message = error_of(tmp_path, EXAMPLE.replace(FILES_KEY, '"/agent/b" = "bundle"'))
    assert message.startswith("agents[1].files: ") and "links outside" in message


def test_directory_sources_expand_and_are_rechecked_on_read(tmp_path: Path) -> None:
    (tmp_path / "bundle" / "sub").mkdir(parents=True)
    (tmp_path / "bundle" / "a.patch").write_text("A")
    (tmp_path / "bundle" / "sub" / "b.patch").write_text("B")
    config = load_config(write(tmp_path, EXAMPLE.replace(FILES_KEY, '"/agent/p" = "bundle"')))
    agent = config.agent("my-script")
    assert resolve_agent_files(agent) == {"/agent/p/a.patch": b"A", "/agent/p/sub/b.patch": b"B"}
    # The tree changes after the config was checked: a new link out is refused at read.
    outside = tmp_path.parent / f"{tmp_path.name}-later"
    outside.write_text("host secret\n")
    (tmp_path / "bundle" / "late").symlink_to(outside)
    with pytest.raises(UsageError, match="links outside the config's directory"):
        resolve_agent_files(agent)


def test_two_sources_for_one_container_path_are_refused(tmp_path: Path) -> None:
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "run.sh").write_text("x")
    (tmp_path / "agents").mkdir()
    entry = '"/agent" = "bundle", "/agent/run.sh" = "agents/run.sh"'
    message = error_of(tmp_path, EXAMPLE.replace(FILES_KEY, entry))
    assert "two sources for container path /agent/run.sh" in message


def test_toml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE.replace("repeats = 3", "repeats = = 3"))
    with pytest.raises(UsageError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:2: invalid TOML: ")


def test_no_agents_missing_file_and_binary_file(tmp_path: Path) -> None:
    assert error_of(tmp_path, "[bakeoff]\nrepeats = 1\n") == "agents: missing key"
    assert error_of(tmp_path, "agents = []\n").startswith("agents: at least one [[agents]]")
    with pytest.raises(UsageError, match="bake-off config not found"):
        load_config(tmp_path / "none.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(UsageError, match="not UTF-8"):
        load_config(tmp_path / "bin.toml")


def test_policy_and_limits_resolve_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text("# rules\n")
    text = EXAMPLE.replace(
        "[bakeoff]",
        '[bakeoff]\nworkers = 4\npolicy = "policy.toml"\n'
        'limits = { memory = "512m", pids = 256, cpus = 1.5, disk = "10g" }',
    )
    config = load_config(write(tmp_path, text))
    assert config.policy == (tmp_path / "policy.toml").resolve()
    limits = config.bakeoff.limits
    assert (limits.memory_bytes, limits.pids, limits.cpus, limits.disk_bytes) == (
        512 * 1024**2,
        256,
        1.5,
        10 * 1024**3,
    )
    # The policy's content is part of the config's identity.
    before = config.sha256
    (tmp_path / "policy.toml").write_text("# other rules\n")
    assert load_config(tmp_path / "bakeoff.toml").sha256 != before


def test_resolve_agent_env_passes_only_the_named_variables(tmp_path: Path) -> None:
    agent = load_config(write(tmp_path, EXAMPLE)).agent("my-script")
    env = {"MY_FLAG": "1", "ANTHROPIC_API_KEY": "sk-real", "OTHER": "x"}
    assert resolve_agent_env(agent, env) == {"MY_FLAG": "1"}
    with pytest.raises(UsageError, match="not set here: MY_FLAG"):
        resolve_agent_env(agent, {})


def test_run_options_combine_config_and_flags(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, EXAMPLE))
    options = make_run_options(config, run_id="n1", runs_dir=tmp_path / "runs")
    assert (options.repeats, options.workers, options.agents) == (
        3,
        1,
        ("claude-code", "my-script"),
    )
    assert options.store == tmp_path / "runs" / "evalkit.db" and options.instance_ids is None
    options = make_run_options(
        config,
        run_id="n1",
        repeats=1,
        workers=2,
        agents=["my-script,claude-code"],
        instance_ids=["b a", "a"],
        store=tmp_path / "h.db",
    )
    assert options.agents == ("claude-code", "my-script")  # config order
    assert options.instance_ids == ("b", "a") and options.store == tmp_path / "h.db"
    assert select_instances(["a", "b", "c"], options) == ["a", "b"]
    with pytest.raises(UsageError, match="--instance-ids: not in the task set: b"):
        select_instances(["a"], options)
    with pytest.raises(UsageError, match="--agents: unknown agent"):
        make_run_options(config, agents=["codex"])
    with pytest.raises(UsageError, match=r"--run-id '\.\./x'"):
        make_run_options(config, run_id="../x")
    # RUN_ID.rK is the evaluate run of repeat K: a bake-off may not take such a name.
    with pytest.raises(UsageError, match=r"names ending in \.r<number> are repeats' runs"):
        make_run_options(config, run_id="nightly.r1")
    assert make_run_options(config, run_id="nightly.rc1").run_id == "nightly.rc1"
    assert make_run_options(config).run_id.startswith("bakeoff-")


def test_plan_runs_whole_repeats_first(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, EXAMPLE))
    options = make_run_options(config, run_id="n", repeats=2)
    plan = plan_attempts(options, ["t1", "t2"])
    assert len(plan) == len(set(plan)) == 2 * 2 * 2
    assert plan[:4] == [
        AttemptKey("claude-code", "t1", 1),
        AttemptKey("my-script", "t1", 1),
        AttemptKey("claude-code", "t2", 1),
        AttemptKey("my-script", "t2", 1),
    ]
    assert {k.repeat for k in plan[4:]} == {2}


def test_example_does_not_read_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Loading never needs the keys: they are read by the gateway at run time only.
    for name in list(os.environ):
        if name.endswith("API_KEY"):
            monkeypatch.delenv(name)
    assert load_config(write(tmp_path, EXAMPLE)).agents


def test_an_oversized_files_tree_fails_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import evalkit.bakeoff.config as config_module

    monkeypatch.setattr(config_module, "MAX_AGENT_FILES_BYTES", 1024)
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "blob.bin").write_bytes(b"x" * 2048)
    message = error_of(tmp_path, EXAMPLE.replace(FILES_KEY, '"/agent/big" = "big"'))
    assert message == "agents[1].files: more than 1,024 bytes of files"

"""The bake-off config (TOML) as typed records, and the options of one ``bakeoff run``.

Every mistake in the file is a one-line :class:`UsageError` naming the file and the key
(``bakeoff.toml: agents[1].adapter: unknown adapter 'foo' (...)``); ``agents[i]`` counts
the ``[[agents]]`` tables from 0. Paths in the file are relative to the file's directory.

The fixed keys (issue #8) and what evalkit adds::

    [bakeoff]
    repeats = 3              # attempts per (task, agent)
    timeout = 1800           # seconds per attempt, wall clock
    budget_usd = 2.0         # per attempt; the gateway refuses model calls past it
    workers = 1              # attempts in parallel                        (evalkit)
    retries = 1              # extra tries of an attempt lost to infra     (evalkit)
    policy = "policy.toml"   # destructive-action policy (issue #9)        (evalkit)
    log_cap_bytes = 4194304  # agent stdout/stderr kept per attempt        (evalkit)
    [bakeoff.limits]         # per attempt container                       (evalkit)
    memory = "4g"
    pids = 512
    cpus = 2.0
    disk = "10g"             # applied where the storage driver supports it

    [models.NAME]            # an upstream the gateway forwards to
    base_url = "https://api.anthropic.com"
    api_key_env = "ANTHROPIC_API_KEY"   # optional for keyless local servers (evalkit)
    price = { input_per_mtok = 5.0, output_per_mtok = 25.0 }

    [[agents]]
    name, adapter, version, upstream, model, args, command, files, env
"""

from __future__ import annotations

import datetime as _dt
import difflib
import hashlib
import os
import posixpath
import re
import sys
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from evalkit.bakeoff.records import AgentInfo, BakeoffManifest
from evalkit.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ADAPTERS = ("claude-code", "codex", "mini-swe-agent", "aider", "command")
"""Built-in adapters; ``command`` runs any script."""

RESERVED_AGENT_NAMES = frozenset({"gold"})
"""``gold`` is the task's own fix in ``evaluate --gold``: no bake-off agent may take it."""

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
"""Agent, upstream and run names: used verbatim in file names, run ids and SQL rows."""

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PINNED_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+_-]*$")
SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)b?$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}

FORBIDDEN_CONTAINER_ROOTS: Mapping[str, str] = {
    "/testbed": "the checkout the agent works on (files there would become its patch)",
    "/evalkit": "evalkit's own mounts (agent pack, gateway socket, problem file)",
    "/tmp/evalkit": "evalkit's claim directory",
    "/proc": "a kernel file system",
    "/sys": "a kernel file system",
    "/dev": "a kernel file system",
    "/etc": "the image's system configuration",
    "/usr": "the image's system files",
    "/bin": "the image's system files",
    "/sbin": "the image's system files",
    "/lib": "the image's system files",
    "/lib32": "the image's system files",
    "/lib64": "the image's system files",
    "/libx32": "the image's system files",
    "/opt/venv": "the task's Python environment (grading depends on it)",
}
"""Container paths an agent's ``files`` may not write: evalkit, the checkout or the system."""

RESERVED_ENV_PREFIXES = ("EVALKIT_", "ANTHROPIC_", "OPENAI_")
RESERVED_ENV_NAMES = frozenset({"HOME", "PATH"})
"""Set by evalkit in the sandbox: the model endpoint and keys are always the gateway's."""

MAX_AGENT_FILES_BYTES = 64 * 1024 * 1024
"""Ceiling on one agent's ``files`` (a mis-pointed directory should fail, not fill a container)."""


class _Table(BaseModel):
    # TOML is typed: no string-to-number coercion, no unknown keys, no NaN.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class Price(_Table):
    """USD per million tokens; the gateway computes cost from the responses' usage."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


class ModelUpstream(_Table):
    """``[models.NAME]``: an upstream the gateway forwards to (the key stays on the host)."""

    base_url: str
    api_key_env: str = ""
    """Host variable holding the real key; empty for a keyless local server."""
    price: Price

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
            raise ValueError(
                f"expected an http(s) URL such as 'https://api.anthropic.com', got {value!r}"
            )
        return value.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env(cls, value: str) -> str:
        if value and not ENV_NAME.match(value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value


def parse_size(text: str) -> int:
    """Bytes in a Docker-style size (``512m``, ``4g``, ``1.5G``)."""
    match = SIZE.match(text.strip())
    if not match:
        raise ValueError(f"expected a size such as '4g' or '512m', got {text!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


class Limits(_Table):
    """``[bakeoff.limits]``: resource ceilings of each attempt's container."""

    memory: str = "4g"
    pids: int = Field(default=512, ge=16)
    cpus: float | None = Field(default=None, gt=0)
    disk: str | None = None

    @field_validator("memory", "disk")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is not None and parse_size(value) < 64 * 1024**2:
            raise ValueError(f"{value!r} is below the 64m minimum")
        return value

    @property
    def memory_bytes(self) -> int:
        return parse_size(self.memory)

    @property
    def disk_bytes(self) -> int | None:
        return None if self.disk is None else parse_size(self.disk)


class BakeoffSettings(_Table):
    """``[bakeoff]``."""

    repeats: int = Field(default=1, ge=1, le=100)
    timeout: float = Field(default=1800.0, gt=0)
    """Seconds per attempt, wall clock."""
    budget_usd: float = Field(default=2.0, ge=0)
    """Per attempt; the gateway refuses model calls past it."""
    workers: int = Field(default=1, ge=1, le=256)
    retries: int = Field(default=1, ge=0, le=10)
    """Extra tries of an attempt lost to infrastructure (never to the agent's own failure)."""
    policy: str | None = None
    """Destructive-action policy file (issue #9), relative to the config; default: shipped."""
    log_cap_bytes: int = Field(default=4 * 1024 * 1024, ge=4096)
    limits: Limits = Limits()
    executor: Literal["thread", "ray"] = "thread"
    """Where attempts and grading run (``--executor`` and ``RAY_ADDRESS`` win; see
    docs/scale-out.md)."""
    ray_address: str | None = None
    """The Ray cluster for ``executor = "ray"`` (``--ray-address``, then ``RAY_ADDRESS``, win)."""
    image_registry: str | None = None
    """``host/prefix``: a node lacking an environment image pulls it from there first."""
    ship_keys: bool = False
    """Send the upstream keys to the nodes with each attempt, instead of each node reading
    ``api_key_env`` from its own environment (docs/scale-out.md, "Keys")."""


class AgentSpec(_Table):
    """One ``[[agents]]`` table."""

    name: str
    adapter: str
    version: str = ""
    """Pinned package version for the CLI adapters; free text for ``command``."""
    upstream: str | None = None
    """A ``[models.NAME]``; optional for ``command`` agents that call no model."""
    model: str = ""
    args: list[str] = Field(default_factory=list)
    command: list[str] | None = None
    files: dict[str, str] = Field(default_factory=dict)
    """Container path -> source path relative to the config (a file or a directory)."""
    env: list[str] = Field(default_factory=list)
    """Names of host variables passed in; nothing else from the host passes."""

    _sources: dict[str, Path] = PrivateAttr(default_factory=dict)
    _root: Path = PrivateAttr(default=Path("."))
    _config_path: Path = PrivateAttr(default=Path("bakeoff.toml"))
    _files_sha256: str = PrivateAttr(default="")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not SAFE_NAME.match(value):
            raise ValueError(
                f"{value!r} is not a safe name (letters, digits, '.', '_', '-'; "
                "starting with a letter or digit; at most 64)"
            )
        if value.lower() in RESERVED_AGENT_NAMES:
            raise ValueError(f"{value!r} is reserved (the task's own fix in evaluate --gold)")
        return value

    @field_validator("adapter")
    @classmethod
    def _adapter(cls, value: str) -> str:
        if value not in ADAPTERS:
            raise ValueError(f"unknown adapter {value!r} (choose from {', '.join(ADAPTERS)})")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: list[str]) -> list[str]:
        for name in value:
            if not ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
            if name in RESERVED_ENV_NAMES or name.startswith(RESERVED_ENV_PREFIXES):
                raise ValueError(
                    f"{name!r} is set by evalkit in the sandbox (model endpoints and keys "
                    "are always the gateway's)"
                )
        if len(set(value)) != len(value):
            raise ValueError("a name is listed twice")
        return value

    @property
    def agent_version(self) -> str:
        """The version recorded per attempt: the pin, else a hash of a command agent's files."""
        if self.version:
            return self.version
        return f"files-{self._files_sha256[:12]}" if self._files_sha256 else "unversioned"

    def file_sources(self) -> dict[str, Path]:
        """Container path -> absolute host source, as resolved by :func:`load_config`."""
        return dict(self._sources)


class BakeoffConfig(BaseModel):
    """A loaded, checked bake-off config."""

    model_config = ConfigDict(frozen=True)

    path: Path
    root: Path
    """The config's directory; ``files`` and ``policy`` are relative to it."""
    sha256: str
    """Identity of the config text and every agent file's content."""
    bakeoff: BakeoffSettings
    models: dict[str, ModelUpstream]
    agents: list[AgentSpec]
    policy: Path | None = None
    """``[bakeoff] policy`` resolved; None means the shipped defaults."""

    def agent(self, name: str) -> AgentSpec:
        for agent in self.agents:
            if agent.name == name:
                return agent
        raise KeyError(name)

    def upstream_of(self, agent: AgentSpec) -> ModelUpstream | None:
        return None if agent.upstream is None else self.models[agent.upstream]


class _ConfigFile(_Table):
    bakeoff: BakeoffSettings = BakeoffSettings()
    models: dict[str, ModelUpstream] = Field(default_factory=dict)
    agents: list[AgentSpec] = Field(min_length=1)


# --- error messages -----------------------------------------------------------

_TYPE_NAMES = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}


def _toml_kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _key_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif SAFE_NAME.match(part) and "." not in part:
            out += f".{part}" if out else part
        else:
            out += f'."{part}"' if out else f'"{part}"'
    return out or "(top level)"


def _table_keys(loc: Sequence[int | str]) -> list[str]:
    """The keys allowed in the table that holds ``loc``'s last key (for 'did you mean')."""
    node: Any = _ConfigFile
    for part in loc[:-1]:
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(str(part))
            if field is None:
                return []
            node = field.annotation
        else:
            args = [a for a in typing.get_args(node) if a is not type(None)]
            if not args:
                return []
            node = args[-1]
        # Unwrap Optional[...] and list/dict element types until a model or a leaf.
        while typing.get_origin(node) in (typing.Union, types.UnionType):
            node = next(a for a in typing.get_args(node) if a is not type(None))
    if isinstance(node, type) and issubclass(node, BaseModel):
        return list(node.model_fields)
    return []


def _describe(error: Any) -> str:
    kind, loc, value = error["type"], tuple(error["loc"]), error.get("input")
    if kind == "extra_forbidden":
        allowed = _table_keys(loc)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        if not hint and allowed:
            hint = f" (allowed: {', '.join(allowed)})"
        return f"unknown key{hint}"
    if kind == "missing":
        return "missing key"
    if kind in _TYPE_NAMES:
        return f"expected {_TYPE_NAMES[kind]}, got {_toml_kind(value)}"
    if kind == "finite_number":
        return "expected a finite number"
    if kind == "too_short" and loc == ("agents",):
        return "at least one [[agents]] table is needed"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    message = str(error["msg"]).removeprefix("Input ")
    return f"{message[:1].lower()}{message[1:]} (got {_toml_kind(value)})"


def _usage(path: Path, key: str, message: str) -> UsageError:
    return UsageError(f"{key}: {message}", path=str(path))


# --- loading --------------------------------------------------------------------


def load_config(path: Path) -> BakeoffConfig:
    """Read, validate and resolve a bake-off config; any mistake is one :class:`UsageError`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError("bake-off config not found", path=str(path)) from None
    except OSError as exc:
        raise UsageError(f"cannot read the config: {exc.strerror}", path=str(path)) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UsageError("not UTF-8 text", path=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        text = str(exc)
        line = re.search(r"\(at line (\d+), column \d+\)", text)
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", text)
        raise UsageError(
            f"invalid TOML: {message}", path=str(path), line=int(line.group(1)) if line else None
        ) from None
    try:
        parsed = _ConfigFile.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise _usage(path, _key_path(error["loc"]), _describe(error)) from None
    root = path.resolve().parent
    _check_models(path, parsed.models)
    _check_agents(path, root, parsed)
    policy = None
    if parsed.bakeoff.policy is not None:
        policy = _resolve_source(path, root, "bakeoff.policy", parsed.bakeoff.policy)
        if not policy.is_file():
            raise _usage(path, "bakeoff.policy", f"{parsed.bakeoff.policy!r} is not a file")
    digest = hashlib.sha256(raw)
    for agent in parsed.agents:
        digest.update(f"\0{agent.name}\0{agent._files_sha256}".encode())
    if policy is not None:
        digest.update(b"\0policy\0" + hashlib.sha256(policy.read_bytes()).digest())
    return BakeoffConfig(
        path=path,
        root=root,
        sha256=digest.hexdigest(),
        bakeoff=parsed.bakeoff,
        models=parsed.models,
        agents=parsed.agents,
        policy=policy,
    )


def config_sha256(path: Path) -> str:
    """Identity of a config: its text, its agents' files and its policy file."""
    return load_config(path).sha256


def _check_models(path: Path, models: Mapping[str, ModelUpstream]) -> None:
    for name in models:
        if not SAFE_NAME.match(name):
            raise _usage(
                path,
                _key_path(("models", name)),
                "upstream names must be letters, digits, '.', '_' or '-'",
            )


def _check_agents(path: Path, root: Path, parsed: _ConfigFile) -> None:
    seen: dict[str, int] = {}
    key_vars = {m.api_key_env for m in parsed.models.values() if m.api_key_env}
    for index, agent in enumerate(parsed.agents):
        where = f"agents[{index}]"
        folded = agent.name.lower()
        if folded in seen:
            raise _usage(
                path,
                f"{where}.name",
                f"duplicate agent name {agent.name!r} (also agents[{seen[folded]}]; "
                "names are compared ignoring case, as some file systems do)",
            )
        seen[folded] = index
        if agent.adapter == "command":
            if not agent.command:
                raise _usage(path, f"{where}.command", "a 'command' agent needs command = [...]")
            if any(not part for part in agent.command):
                raise _usage(path, f"{where}.command", "an empty string in the command")
        else:
            if agent.command is not None:
                raise _usage(
                    path,
                    f"{where}.command",
                    f"only 'command' agents take a command "
                    f"(adapter {agent.adapter!r} builds its own)",
                )
            if not agent.version:
                raise _usage(
                    path,
                    f"{where}.version",
                    f'adapter {agent.adapter!r} needs a pinned version (e.g. version = "2.1.328")',
                )
            if agent.upstream is None:
                raise _usage(
                    path,
                    f"{where}.upstream",
                    "missing key (the [models.NAME] the agent's model calls go to)",
                )
            if not agent.model:
                raise _usage(path, f"{where}.model", "missing key (the model name to ask for)")
        if agent.version and not (
            PINNED_VERSION.match(agent.version) or agent.adapter == "command"
        ):
            raise _usage(
                path,
                f"{where}.version",
                f"{agent.version!r} is not a pinned version "
                '(e.g. "2.1.328"; ranges and tags are not reproducible)',
            )
        if agent.upstream is not None and agent.upstream not in parsed.models:
            defined = ", ".join(sorted(parsed.models)) or "none"
            raise _usage(
                path,
                f"{where}.upstream",
                f"undefined upstream {agent.upstream!r} "
                f"(no [models.{agent.upstream}] table; defined: {defined})",
            )
        for name in agent.env:
            if name in key_vars:
                raise _usage(
                    path,
                    f"{where}.env",
                    f"{name!r} holds a model key (an api_key_env); keys never enter a sandbox",
                )
        sources: dict[str, Path] = {}
        for target, source in agent.files.items():
            key = f"{where}.files.{_key_path((target,))}"
            _check_container_path(path, key, target)
            sources[target] = _resolve_source(path, root, key, source)
        agent._sources, agent._root, agent._config_path = sources, root, path
        agent._files_sha256 = _files_digest(path, f"{where}.files", root, sources)


def _check_container_path(path: Path, key: str, target: str) -> None:
    if not target.startswith("/"):
        raise _usage(path, key, 'container paths must be absolute (e.g. "/agent/run.sh")')
    if "\0" in target or posixpath.normpath(target) != target or target == "/":
        raise _usage(
            path, key, "container path must be normalised (no '..', '.', '//' or trailing '/')"
        )
    for forbidden, why in FORBIDDEN_CONTAINER_ROOTS.items():
        if target == forbidden or target.startswith(forbidden + "/"):
            raise _usage(
                path,
                key,
                f"container path is inside {forbidden}, {why}; put agent "
                "files elsewhere (e.g. /agent)",
            )


def _resolve_source(path: Path, root: Path, key: str, source: str) -> Path:
    if not source:
        raise _usage(path, key, "empty source path")
    resolved = (root / source).resolve()
    if resolved != root and root not in resolved.parents:
        raise _usage(path, key, f"{source!r} escapes the config's directory ({root})")
    if not resolved.exists():
        raise _usage(path, key, f"{source!r} does not exist (relative to {root})")
    return resolved


def _walk(source: Path) -> Iterable[tuple[str, Path]]:
    """``(relative posix path, file)`` under a directory source, in a stable order."""
    for dirpath, dirnames, filenames in os.walk(source, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            file = Path(dirpath, name)
            yield file.relative_to(source).as_posix(), file


def _expand(path: Path, key: str, root: Path, sources: Mapping[str, Path]) -> dict[str, Path]:
    """Container path -> host file, directories expanded; collisions and escapes rejected."""
    out: dict[str, Path] = {}
    for target, source in sources.items():
        items = list(_walk(source)) if source.is_dir() else [("", source)]
        for rel, file in items:
            real = file.resolve()
            if root not in real.parents:
                raise _usage(path, key, f"{file} links outside the config's directory")
            if not real.is_file():
                raise _usage(path, key, f"{file} is not a regular file")
            dest = f"{target}/{rel}" if rel else target
            if dest in out:
                raise _usage(path, key, f"two sources for container path {dest}")
            out[dest] = real
    return out


def _files_digest(path: Path, key: str, root: Path, sources: Mapping[str, Path]) -> str:
    if not sources:
        return ""
    digest = hashlib.sha256()
    total = 0
    for dest, file in sorted(_expand(path, key, root, sources).items()):
        total += file.stat().st_size  # before reading: a mis-pointed huge file fails fast
        if total > MAX_AGENT_FILES_BYTES:
            raise _usage(path, key, f"more than {MAX_AGENT_FILES_BYTES:,} bytes of files")
        data = file.read_bytes()
        digest.update(f"{dest}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()


def resolve_agent_files(agent: AgentSpec) -> dict[str, bytes]:
    """Read an agent's ``files``: absolute container path -> content (directories expanded).

    The runner writes them into the attempt's container, read-only for the agent.
    """
    sources = agent.file_sources()
    files: dict[str, bytes] = {}
    total = 0
    # Re-expanded on read: the tree may have changed since load, and a new symlink out
    # of the config's directory must still be refused.
    key = f"agents[{agent.name}].files"
    for dest, file in _expand(agent._config_path, key, agent._root, sources).items():
        data = file.read_bytes()
        total += len(data)
        if total > MAX_AGENT_FILES_BYTES:  # the tree may have grown since load
            raise _usage(
                agent._config_path, key, f"more than {MAX_AGENT_FILES_BYTES:,} bytes of files"
            )
        files[dest] = data
    return files


def resolve_agent_env(agent: AgentSpec, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The host variables an agent asked for (``env``); a missing one is a :class:`UsageError`."""
    environ = os.environ if environ is None else environ
    missing = [name for name in agent.env if name not in environ]
    if missing:
        raise UsageError(
            f"agent {agent.name!r} passes host variable(s) not set here: {', '.join(missing)}"
        )
    return {name: environ[name] for name in agent.env}


# --- one `bakeoff run` -------------------------------------------------------------


class AttemptKey(NamedTuple):
    """One (agent, task, repeat) of a bake-off; repeats count from 1."""

    agent: str
    instance_id: str
    repeat: int


@dataclass(frozen=True)
class RunOptions:
    """What ``evalkit bakeoff run`` was asked to do on top of the config."""

    run_id: str
    runs_dir: Path
    repeats: int
    workers: int
    agents: tuple[str, ...]
    """Selected agents, in config order."""
    instance_ids: tuple[str, ...] | None
    """Only these tasks (None: the whole task set)."""
    store: Path
    """SQLite history file."""
    executor: str = "thread"
    """Where attempts and grading run: ``thread`` or ``ray`` (see :mod:`evalkit.executors`)."""
    ray_address: str | None = None
    image_registry: str | None = None

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.run_id


def default_run_id(now: _dt.datetime | None = None) -> str:
    """``bakeoff-YYYYMMDD-HHMMSS`` in UTC: one per night sorts and never collides by hand."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return now.astimezone(_dt.timezone.utc).strftime("bakeoff-%Y%m%d-%H%M%S")


def make_run_options(
    config: BakeoffConfig,
    *,
    run_id: str | None = None,
    runs_dir: Path = Path("runs"),
    repeats: int | None = None,
    workers: int | None = None,
    agents: Sequence[str] | None = None,
    instance_ids: Sequence[str] | None = None,
    store: Path | None = None,
) -> RunOptions:
    """Combine the config with the command line's overrides; bad values are a UsageError."""
    run_id = run_id or default_run_id()
    if not SAFE_NAME.match(run_id):
        raise UsageError(f"--run-id {run_id!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    if re.search(r"\.r\d+$", run_id):
        # RUN_ID.rK names repeat K's evaluate run of bake-off RUN_ID: no collisions.
        raise UsageError(f"--run-id {run_id!r}: names ending in .r<number> are repeats' runs")
    if repeats is not None and repeats < 1:
        raise UsageError(f"--repeats {repeats}: must be at least 1")
    if workers is not None and workers < 1:
        raise UsageError(f"--workers {workers}: must be at least 1")
    names = [a.name for a in config.agents]
    chosen = names
    if agents:
        wanted = [n for value in agents for n in value.replace(",", " ").split()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise UsageError(
                f"--agents: unknown agent(s) {', '.join(map(repr, unknown))} "
                f"(in {config.path}: {', '.join(names)})"
            )
        chosen = [n for n in names if n in wanted]
    ids = None
    if instance_ids:
        ids = tuple(
            dict.fromkeys(i for value in instance_ids for i in value.replace(",", " ").split())
        )
    return RunOptions(
        run_id=run_id,
        runs_dir=runs_dir,
        repeats=repeats or config.bakeoff.repeats,
        workers=workers or config.bakeoff.workers,
        agents=tuple(chosen),
        instance_ids=ids,
        store=store if store is not None else runs_dir / "evalkit.db",
    )


def select_instances(available: Iterable[str], options: RunOptions) -> list[str]:
    """The task ids a run covers, sorted; an id not in the task set is a UsageError."""
    available = sorted(available)
    if options.instance_ids is None:
        return available
    unknown = [i for i in options.instance_ids if i not in set(available)]
    if unknown:
        raise UsageError(f"--instance-ids: not in the task set: {', '.join(unknown)}")
    return sorted(options.instance_ids)


def plan_attempts(options: RunOptions, instance_ids: Sequence[str]) -> list[AttemptKey]:
    """Every attempt of a run, repeat by repeat, so a run cut short has whole repeats first."""
    return [
        AttemptKey(agent, iid, repeat)
        for repeat in range(1, options.repeats + 1)
        for iid in instance_ids
        for agent in options.agents
    ]


def make_manifest(
    config: BakeoffConfig,
    options: RunOptions,
    *,
    tasks_dir: Path,
    tasks_sha256: str,
    instance_ids: Sequence[str],
    created_at: str | None = None,
) -> BakeoffManifest:
    """What ``bakeoff.json`` says about a run, before its first attempt."""
    from evalkit import __version__

    return BakeoffManifest(
        run_id=options.run_id,
        created_at=created_at or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        evalkit_version=__version__,
        config_path=str(config.path),
        config_sha256=config.sha256,
        tasks_dir=str(tasks_dir),
        tasks_sha256=tasks_sha256,
        repeats=options.repeats,
        agents=[
            AgentInfo(
                name=a.name,
                adapter=a.adapter,
                version=a.agent_version,
                upstream=a.upstream,
                model=a.model,
            )
            for a in config.agents
            if a.name in options.agents
        ],
        instance_ids=list(instance_ids),
        timeout_s=config.bakeoff.timeout,
        budget_usd=config.bakeoff.budget_usd,
    )

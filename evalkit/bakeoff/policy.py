"""The destructive-action policy (issue #9): rules in TOML, defaults shipped, one per bake-off.

A rule is a Python regular expression searched in a command line, an action (``block`` or
``log``), a reason and a kind (``destructive`` or ``tamper``). ``{repo}`` and ``{home}`` in a
pattern stand for the sandbox's repository root and HOME. Every gate layer and the audit
match through :mod:`evalkit.bakeoff.gatecheck`, fed from :meth:`Policy.resolved`.
"""

from __future__ import annotations

import re
import sys
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from evalkit.bakeoff import gatecheck
from evalkit.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

POLICY_SCHEMA_VERSION = 1
DEFAULT_POLICY = "policy.toml"
_PLACEHOLDERS = ("{repo}", "{home}")
_NEED_WORD = re.compile(r"(?=.*[^ ])[A-Za-z0-9_.=+/ -]{2,40}")


class Action(str, Enum):
    BLOCK = "block"
    LOG = "log"


class Kind(str, Enum):
    DESTRUCTIVE = "destructive"
    TAMPER = "tamper"


class PolicyRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    pattern: str = Field(min_length=1)
    action: Action
    reason: str = Field(min_length=1)
    kind: Kind = Kind.DESTRUCTIVE
    needs: list[str] = Field(default_factory=list)
    """Words (any one, in any case; a space stands for any whitespace) every command the
    pattern matches contains: the gates ask the (slower) checker only about commands
    holding one. Empty: always asked."""

    @field_validator("needs")
    @classmethod
    def _plain_words(cls, value: list[str]) -> list[str]:
        for word in value:
            if not _NEED_WORD.fullmatch(word):
                raise ValueError(f"{word!r}: a need is a plain word ({_NEED_WORD.pattern})")
        return value

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(_fill(value, "/r", "/h"))
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int
    rules: list[PolicyRule] = Field(min_length=1)

    @field_validator("schema_version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value != POLICY_SCHEMA_VERSION:
            raise ValueError(
                f"{value} is not supported (this evalkit reads {POLICY_SCHEMA_VERSION})"
            )
        return value

    @field_validator("rules")
    @classmethod
    def _unique(cls, rules: list[PolicyRule]) -> list[PolicyRule]:
        names = [r.name for r in rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique: {', '.join(dupes)}")
        return rules

    def resolved(self, *, repo: str, home: str) -> list[dict[str, Any]]:
        """The rules as the gate pack's ``policy.json`` holds them: placeholders filled in."""
        return [
            {
                "name": r.name,
                "pattern": _fill(r.pattern, repo, home),
                "action": r.action.value,
                "reason": r.reason,
                "kind": r.kind.value,
                "needs": list(r.needs),
            }
            for r in self.rules
        ]

    def compiled(self, *, repo: str, home: str) -> list[gatecheck.Rule]:
        return gatecheck.compile_rules(self.resolved(repo=repo, home=home))


def need_regex(word: str) -> re.Pattern[str]:
    """What a need matches: the word in any case, a space standing for any whitespace
    (the same as the gates' shell ``case`` patterns)."""
    return re.compile(re.escape(word).replace(r"\ ", r"\s"), re.IGNORECASE)


def _fill(pattern: str, repo: str, home: str) -> str:
    return pattern.replace("{repo}", re.escape(repo.rstrip("/"))).replace(
        "{home}", re.escape(home.rstrip("/"))
    )


def default_policy_path() -> Path:
    return Path(str(resources.files("evalkit.bakeoff").joinpath("data").joinpath(DEFAULT_POLICY)))


def parse_policy(data: Any, *, source: str) -> Policy:
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise UsageError(f"{where}: {err['msg']}", path=source) from None


def load_policy(path: Path | None = None) -> Policy:
    """The policy in ``path`` (a bake-off's ``[bakeoff] policy``), or the shipped defaults."""
    path = path or default_policy_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read the policy: {exc.strerror}", path=str(path)) from None
    try:
        data = tomllib.loads(text)
    except ValueError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        found = re.search(r"\(at line (\d+), column \d+\)", msg)
        line = int(found.group(1)) if found else None
        if found:
            msg = msg[: found.start()].rstrip()
        raise UsageError(f"not valid TOML: {msg}", path=str(path), line=line) from None
    return parse_policy(data, source=str(path))

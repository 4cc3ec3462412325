"""Public leaderboard rows, and the rule that matches an agent to one of their models."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from evalkit.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PACKAGED = Path(__file__).parent / "data" / "public_leaderboards.csv"
VERIFIED = "SWE-bench Verified"
PRO = "SWE-bench Pro"

# Like with like: a standardized scaffold first, a vendor's own harness last.
EVIDENCE_RANK = {
    "standardized_scaffold": 0,
    "independent_eval": 1,
    "agent_system": 2,
    "vendor_reported": 3,
    "vendor_run": 4,
}
EVIDENCE_LABEL = {
    "standardized_scaffold": "standardized scaffold",
    "independent_eval": "independent evaluation",
    "agent_system": "agent system's own harness",
    "vendor_reported": "vendor-reported",
    "vendor_run": "vendor-run",
}
RELIABILITY_RANK = {
    "official leaderboard": 0,
    "independent": 1,
    "primary source": 2,
    "secondary copy": 3,
    "vendor claim": 4,
    "blog": 5,
    "AI digest / low confidence": 6,
}
PUBLIC_SET_SIZE = {
    (VERIFIED, "test"): 500,
    (PRO, "public"): 731,
    (PRO, "commercial"): 276,
    ("SWE-bench Lite", "test"): 300,
}
"""Instances behind a public score, when a row does not say (the official split sizes)."""
_COLUMNS = ("benchmark", "split", "system", "model", "score_pct", "date", "source_url")
_DATE = re.compile(r"(?<![0-9])((?:19|20)\d\d)-?(0[1-9]|1[0-2])-?(0[1-9]|[12]\d|3[01])(?![0-9])")
_DROP_WORDS = frozenset({"", "latest", "preview", "instruct"})


@dataclass(frozen=True)
class PublicScore:
    """One public leaderboard number with its provenance."""

    benchmark: str
    split: str
    system: str
    model: str
    score_pct: float
    n_instances: str
    date: str
    source_url: str
    evidence: str
    tier: str
    note: str = ""
    origin: str = field(default="", compare=False)
    """``file:line`` the row was read from."""

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.benchmark, self.split, self.system, self.model)

    @property
    def link(self) -> str:
        """The source URL if it is a plain http(s) URL, else '' (never a live link)."""
        return safe_url(self.source_url)

    @property
    def evidence_label(self) -> str:
        return EVIDENCE_LABEL.get(self.evidence, self.evidence)

    @property
    def reliability(self) -> str:
        """How far to trust the number: official leaderboard, independent, primary source,
        secondary copy, vendor claim, blog, or AI digest / low confidence."""
        note, tier = self.note.lower(), self.tier.lower()
        if "ai-written" in note or "digest" in note or "low confidence" in note:
            return "AI digest / low confidence"
        if "blog" in tier:
            return "blog"
        if self.evidence in ("vendor_reported", "vendor_run"):
            return "vendor claim"
        if tier.startswith("secondary"):
            return "secondary copy"
        if self.evidence == "independent_eval":
            return "independent"
        if self.evidence == "standardized_scaffold":
            return "official leaderboard"
        return "primary source"

    @property
    def public_n(self) -> int | None:
        """Instances the score was measured on (for its binomial error)."""
        if self.n_instances.isdigit() and int(self.n_instances) > 0:
            return int(self.n_instances)
        return PUBLIC_SET_SIZE.get((self.benchmark, self.split))


def safe_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL with no whitespace or control characters."""
    if not url or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    return url if parts.scheme.lower() in ("http", "https") and parts.netloc else ""


def _tag(note: str, name: str) -> str:
    match = re.search(rf"\b{name}=([^;\s]+)", note)
    return match.group(1) if match else "unknown"


def _parse(text: str, source: str) -> list[PublicScore]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise UsageError(f"leaderboard CSV lacks column(s) {missing}", path=source)
    rows: list[PublicScore] = []
    seen: dict[tuple[str, str, str, str], int] = {}
    for row in reader:
        line = reader.line_num
        try:
            score = float(row["score_pct"])
        except (TypeError, ValueError):
            raise UsageError(
                f"score_pct {row['score_pct']!r} is not a number", path=source, line=line
            ) from None
        if not 0 <= score <= 100:
            raise UsageError(f"score_pct {score} is not a percentage", path=source, line=line)
        note = row.get("source_note") or ""
        record = PublicScore(
            benchmark=(row["benchmark"] or "").strip(),
            split=(row.get("split") or "").strip(),
            system=(row["system"] or "").strip(),
            model=(row["model"] or "").strip(),
            score_pct=score,
            n_instances=(row.get("n_instances") or "").strip(),
            date=(row["date"] or "").strip(),
            source_url=(row["source_url"] or "").strip(),
            evidence=_tag(note, "evidence"),
            tier=_tag(note, "tier"),
            note=note,
            origin=f"{source}:{line}",
        )
        if record.key in seen:
            # A silent dict overwrite used to drop one of two numbers: make it the user's call.
            raise UsageError(
                f"duplicate row for {record.key} (first at line {seen[record.key]}); "
                "tell the rows apart in the system column",
                path=source,
                line=line,
            )
        seen[record.key] = line
        rows.append(record)
    return rows


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=str(path)
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot read: {exc.strerror}", path=str(path)) from None


def load_leaderboard(extra: Path | None = None) -> list[PublicScore]:
    """The packaged rows, with ``extra``'s rows added or replacing same-key rows."""
    rows = {r.key: r for r in _parse(_read(PACKAGED), str(PACKAGED))}
    if extra is not None:
        if not extra.is_file():
            raise UsageError("leaderboard file not found", path=str(extra))
        for row in _parse(_read(extra), str(extra)):
            rows[row.key] = row
    return list(rows.values())


@dataclass(frozen=True)
class ModelName:
    """A model name split into its comparable base and its snapshot date (if any)."""

    base: str
    date: str

    def matches(self, other: ModelName) -> bool:
        """Same base; a dated snapshot matches the undated name but not another date."""
        return self.base == other.base and (
            not self.date or not other.date or self.date == other.date
        )


def parse_model_name(name: str) -> ModelName:
    """``anthropic/claude-opus-4-5-20251101`` -> (``claude opus 4 5``, ``2025-11-01``).

    Provider prefix dropped, lower-cased, punctuation to spaces, the words ``latest``,
    ``preview`` and ``instruct`` dropped. Full dates (``YYYYMMDD``, ``YYYY-MM-DD``) are a
    snapshot of the same model and kept apart; every other token is part of the name,
    so ``Kimi-K2-0905`` is not ``Kimi K2`` and ``Devstral-Small-2505`` is not ``2512``.
    """
    name = name.rsplit("/", 1)[-1].lower()
    dates = _DATE.findall(name)
    name = _DATE.sub(" ", name)
    tokens = [t for t in re.split(r"[^a-z0-9]+", name) if t not in _DROP_WORDS]
    date = "-".join(dates[-1]) if dates else ""
    return ModelName(" ".join(tokens), date)


def normalize(name: str) -> str:
    """Comparable base of a model name (without its snapshot date)."""
    return parse_model_name(name).base


def load_model_map(path: Path | None) -> dict[str, str]:
    """Agent ``model_name_or_path`` -> leaderboard model name, from TOML or JSON."""
    if path is None:
        return {}
    if not path.is_file():
        raise UsageError("model map not found", path=str(path))
    text = _read(path)
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot parse model map: {exc}", path=str(path)) from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise UsageError("model map must map agent names to model names (strings)", path=str(path))
    return {str(k): v for k, v in data.items()}


def _date_key(date: str) -> tuple[int, int, int]:
    """``2025-10-28`` -> (2025, 10, 28); missing parts are 0, so an empty or year-only
    date sorts as oldest, and ``2025-10`` before ``2025-10-28``."""
    parts = [int(p) for p in re.findall(r"\d+", date)[:3]] + [0, 0, 0]
    return parts[0], parts[1], parts[2]


def candidates(rows: list[PublicScore], model: str, benchmark: str) -> list[PublicScore]:
    """Every row on ``benchmark`` for this model, most comparable first: standardized
    scaffold, the public/test split, the most reliable source, the same snapshot date,
    then the newest."""
    wanted = parse_model_name(model)
    found = [
        r for r in rows if r.benchmark == benchmark and parse_model_name(r.model).matches(wanted)
    ]

    def rank(r: PublicScore) -> tuple[int, int, int, int, tuple[int, int, int]]:
        y, m, d = _date_key(r.date)
        return (
            EVIDENCE_RANK.get(r.evidence, 9),
            0 if r.split in ("test", "public") else 1,
            RELIABILITY_RANK.get(r.reliability, 9),
            0 if wanted.date and parse_model_name(r.model).date == wanted.date else 1,
            (-y, -m, -d),
        )

    return sorted(found, key=rank)


def best_score(rows: list[PublicScore], model: str, benchmark: str) -> PublicScore | None:
    """The most comparable public number for ``model`` on ``benchmark`` (see ``candidates``)."""
    found = candidates(rows, model, benchmark)
    return found[0] if found else None


def near_misses(rows: list[PublicScore], model: str, limit: int = 4) -> list[str]:
    """Leaderboard model names close to ``model`` that the exact rule does not match: the
    same words in another order, one word more or less, or another snapshot date."""
    wanted = parse_model_name(model)
    mine = wanted.base.split()
    close: dict[str, int] = {}
    for r in rows:
        other = parse_model_name(r.model)
        if other.matches(wanted):
            continue
        theirs = other.base.split()
        extra = set(mine) ^ set(theirs)
        shared = len(set(mine) & set(theirs))
        if other.base == wanted.base:
            score = 0  # another snapshot date
        elif sorted(mine) == sorted(theirs):
            score = 1
        elif not mine or not theirs or mine[0] != theirs[0]:
            continue  # another family of models altogether
        elif len(extra) == 1 and shared >= 2:
            score = 2
        elif len(mine) == len(theirs) >= 2 and sum(map(str.__ne__, mine, theirs)) == 1:
            score = 3  # one word differs: Devstral Small 2507 vs 2512
        else:
            continue
        close[r.model] = min(score, close.get(r.model, score))
    return sorted(close, key=lambda m: (close[m], m))[:limit]

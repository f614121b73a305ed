"""The policy file: TOML rules, read with ``tomllib`` and validated with pydantic.

Every error names the line it comes from and the field it is about (``line 7: max_risk
(rule "restart-web"): ...``): TOML syntax errors carry their line from ``tomllib``, and
a field's line is found in the text of its rule's ``[[rules]]`` table.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from dataclasses import dataclass, field
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from signoff.durations import parse_duration
from signoff.lifecycle import Risk, Severity

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
RISK_ORDER = {r: i for i, r in enumerate((Risk.LOW, Risk.MEDIUM, Risk.HIGH, Risk.CRITICAL))}
SEVERITY_ORDER = {s: i for i, s in enumerate(
    (Severity.INFO, Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL))}


def _duration(value: Any) -> timedelta:
    if not isinstance(value, str | int):
        raise ValueError("give a duration like 90s, 15m, 1h or 30d")
    return parse_duration(value)


Duration = Annotated[timedelta, BeforeValidator(_duration)]


def check_glob(glob: str) -> str:
    """A glob of actions (``*``, ``?``, ``[abc]``); an empty one or an unclosed ``[`` is
    refused (``fnmatch`` would match the bracket literally, which nobody means)."""
    if not glob.strip():
        raise ValueError("a glob must not be empty")
    depth = 0
    for char in glob:
        if char == "[":
            depth += 1
        elif char == "]" and depth:
            depth -= 1
    if depth:
        raise ValueError(f"bad glob {glob!r}: a '[' is not closed")
    return glob


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limit(Strict):
    count: StrictInt = Field(ge=1)
    per: Duration


class Precedent(Strict):
    approved: StrictInt = Field(ge=1)
    within: Duration
    by: Literal["fingerprint", "service"] = "fingerprint"


@dataclass(frozen=True)
class Hours:
    """A daily window in minutes of the day, start included, end excluded (1440: the end
    of the day); it wraps midnight when end < start."""

    start: int
    end: int
    text: str

    def holds(self, at: time) -> bool:
        minute = at.hour * 60 + at.minute + (at.second + at.microsecond / 1e6) / 60
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


def parse_hours(value: str) -> Hours:
    match = re.fullmatch(r"\s*(\d{2}):(\d{2})\s*-\s*(\d{2}):(\d{2})\s*", value)
    if match is None:
        raise ValueError(f"bad time range {value!r}: use HH:MM-HH:MM, like 08:00-20:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2):
        raise ValueError(f"bad time range {value!r}: not times of day")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        raise ValueError(f"bad time range {value!r}: start and end are the same")
    return Hours(start, end, f"{h1:02}:{m1:02}-{h2:02}:{m2:02}")


class Rule(Strict):
    name: StrictStr = Field(pattern=r"^[a-z0-9-]+$", max_length=100)
    mode: Literal["enforce", "shadow"] = "shadow"
    actions: list[StrictStr] = Field(min_length=1)
    requesters: list[StrictStr] | None = None
    max_risk: Risk | None = None
    max_severity: Severity | None = None
    services: list[StrictStr] | None = None
    exclude_services: list[StrictStr] | None = None
    hours: StrictStr | None = None
    weekdays: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] | None = None
    limit: Limit | None = None
    precedent: Precedent | None = None

    @field_validator("actions")
    @classmethod
    def _check_actions(cls, value: list[str]) -> list[str]:
        return [check_glob(glob) for glob in value]

    @field_validator("hours")
    @classmethod
    def _check_hours(cls, value: str | None) -> str | None:
        return None if value is None else parse_hours(value).text

    @property
    def pattern(self) -> re.Pattern[str]:
        """The rule's globs as one case-folded regular expression."""
        return _pattern(tuple(self.actions))

    def matches_action(self, action: str) -> bool:
        return self.matches_folded(action.strip().casefold())

    def matches_folded(self, folded: str) -> bool:
        """``matches_action`` for an action already trimmed and case-folded."""
        return self.pattern.match(folded) is not None

    @property
    def window(self) -> Hours | None:
        return None if self.hours is None else parse_hours(self.hours)

    def shown(self) -> dict[str, Any]:
        """The rule as ``GET /policy`` shows it: durations in seconds."""
        return self.model_dump(mode="json", exclude_none=True)


_PATTERNS: dict[tuple[str, ...], re.Pattern[str]] = {}


def _pattern(globs: tuple[str, ...]) -> re.Pattern[str]:
    found = _PATTERNS.get(globs)
    if found is None:
        found = re.compile("|".join(
            f"(?:{fnmatch.translate(g.strip().casefold())})" for g in globs))
        if len(_PATTERNS) < 10_000:
            _PATTERNS[globs] = found
    return found


class PolicyFile(Strict):
    rules: list[Rule] = Field(default_factory=list)


def shown_duration(delta: timedelta) -> str:
    """A duration as a policy file writes it: ``30d``, ``12h``, ``90s``."""
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True, slots=True)
class Check:
    """A rule compiled once for evaluation: sets, orders, its globs as one expression,
    and the parts of its reasons that do not change from one request to the next."""

    name: str
    mode: str
    pattern: re.Pattern[str]
    actions: str
    requesters: frozenset[str] | None
    requesters_text: str
    max_risk: int | None
    max_severity: int | None
    services: frozenset[str] | None
    services_text: str
    exclude_services: frozenset[str] | None
    window: Hours | None
    weekdays: frozenset[str] | None
    weekdays_text: str
    limit: Limit | None
    limit_text: str
    precedent: Precedent | None
    within_text: str
    rule: Rule
    # The windows in seconds: the history's times are compared as POSIX timestamps
    # (aware datetimes in different zones compare through their offsets, many times slower).
    limit_seconds: float = 0.0
    within_seconds: float = 0.0

    @classmethod
    def of(cls, rule: Rule) -> Check:
        def listed(values: list[str] | None) -> str:
            return ", ".join(values or ())

        return cls(
            name=rule.name, mode=rule.mode, pattern=rule.pattern, actions=listed(rule.actions),
            requesters=None if rule.requesters is None else frozenset(rule.requesters),
            requesters_text=listed(rule.requesters),
            max_risk=None if rule.max_risk is None else RISK_ORDER[rule.max_risk],
            max_severity=(None if rule.max_severity is None
                          else SEVERITY_ORDER[rule.max_severity]),
            services=None if rule.services is None else frozenset(rule.services),
            services_text=listed(rule.services),
            exclude_services=(None if rule.exclude_services is None
                              else frozenset(rule.exclude_services)),
            window=rule.window,
            weekdays=None if rule.weekdays is None else frozenset(rule.weekdays),
            weekdays_text=listed(list(rule.weekdays or ())),
            limit=rule.limit,
            limit_text="" if rule.limit is None else shown_duration(rule.limit.per),
            precedent=rule.precedent,
            within_text="" if rule.precedent is None else shown_duration(rule.precedent.within),
            rule=rule,
            limit_seconds=0.0 if rule.limit is None else rule.limit.per.total_seconds(),
            within_seconds=(0.0 if rule.precedent is None
                            else rule.precedent.within.total_seconds()),
        )


@dataclass(frozen=True, slots=True)
class Reach:
    """How much history some rules need: the names of those with a ``limit`` and the
    longest of their windows, and the longest ``precedent`` window by each key."""

    limited: tuple[str, ...]
    limit_per: timedelta | None
    windows: dict[str, timedelta]

    @classmethod
    def of(cls, checks: list[Check] | tuple[Check, ...]) -> Reach:
        pers = [c.limit.per for c in checks if c.limit is not None]
        windows: dict[str, timedelta] = {}
        for c in checks:
            p = c.precedent
            if p is not None and (p.by not in windows or p.within > windows[p.by]):
                windows[p.by] = p.within
        return cls(tuple(c.name for c in checks if c.limit is not None),
                   max(pers) if pers else None, windows)


@dataclass(frozen=True)
class Policy:
    """Rules in file order, as read from ``source``; ``checks``: each compiled once, and
    ``reach``: the history all of them need."""

    rules: tuple[Rule, ...]
    source: str
    checks: tuple[Check, ...] = field(init=False, repr=False, compare=False)
    reach: Reach = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        checks = tuple(Check.of(rule) for rule in self.rules)
        object.__setattr__(self, "checks", checks)
        object.__setattr__(self, "reach", Reach.of(checks))


class PolicyError(ValueError):
    """A policy file that cannot be used; ``errors`` are ``line N: ...`` each."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("; ".join(errors))


def read_policy(path: str | Path) -> Policy:
    """The policy in the file at ``path``; ``PolicyError`` if it cannot be read or used."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError([f"line 0: cannot read {str(path)!r}: {exc}"]) from None
    return parse_policy(text, str(path))


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """The policy in ``text``; ``PolicyError`` with every error found, each with its line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"\(at line (\d+), column (\d+)\)", message)
        line = int(found.group(1)) if found else 1
        said = re.sub(r" *\(at line.*", "", message)
        raise PolicyError([f"line {line}: bad TOML: {said}"]) from None
    places = _Places(text)
    try:
        parsed = PolicyFile.model_validate(data)
    except ValidationError as exc:
        raise PolicyError([places.describe(e) for e in exc.errors()]) from None
    errors = []
    seen: set[str] = set()
    for index, rule in enumerate(parsed.rules):
        if rule.name in seen:
            errors.append(f"line {places.line(index, 'name')}: name: duplicate rule name "
                          f"{rule.name!r}")
        seen.add(rule.name)
    if errors:
        raise PolicyError(errors)
    return Policy(tuple(parsed.rules), source)


class _Places:
    """Where each rule and field is in the text (the first line that sets it)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.starts = [n for n, line in enumerate(self.lines, 1)
                       if re.match(r"\s*\[\[\s*rules\s*\]\]", line)]
        self.headers = [n for n, line in enumerate(self.lines, 1)
                        if re.match(r"\s*\[", line)]

    def line(self, index: int | None, key: str | None) -> int:
        if index is None or index >= len(self.starts):
            return self._find(1, len(self.lines) + 1, key) or 1
        start = self.starts[index]
        end = next((h for h in self.headers if h > start), len(self.lines) + 1)
        return self._find(start + 1, end, key) or start

    def _find(self, start: int, end: int, key: str | None) -> int | None:
        if key is None:
            return None
        pattern = re.compile(rf"\s*[\"']?{re.escape(key)}[\"']?\s*=")
        for n in range(start, end):
            if pattern.match(self.lines[n - 1]):
                return n
        return None

    def describe(self, error: Any) -> str:
        loc = list(error["loc"])
        index = None
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            index = loc[1]
            loc = loc[2:]
        key = next((str(part) for part in loc if isinstance(part, str)), None)
        field = ".".join(str(part) for part in loc) or "rules"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "missing":
            message = "required"
        elif error["type"] == "string_pattern_mismatch" and key == "name":
            message = "a rule name is lowercase letters, digits and '-'"
        message = message.removeprefix("Value error, ")
        name = self._rule_name(index)
        where = f" (rule {name!r})" if name else f" (rule {index + 1})" if index is not None else ""
        return f"line {self.line(index, key)}: {field}{where}: {message}"

    def _rule_name(self, index: int | None) -> str | None:
        if index is None or index >= len(self.starts):
            return None
        start = self.starts[index]
        end = next((h for h in self.headers if h > start), len(self.lines) + 1)
        line = self._find(start + 1, end, "name")
        if line is None:
            return None
        found = re.search(r"=\s*[\"']([^\"']*)[\"']", self.lines[line - 1])
        return found.group(1) if found else None

"""The shapes of what clients send, validated at the edge. Strict where it matters."""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
)

from signoff import errors
from signoff.lifecycle import Risk, Severity

MAX_ACTION = 1_000
MAX_TEXT = 20_000
MAX_JSON_BYTES = 64 * 1024
MAX_REQUIRED_APPROVALS = 100
# Deeper JSON is no real payload, and past a few hundred levels encoders give up.
MAX_JSON_DEPTH = 32


def _storable(value: str) -> str:
    """Text that both databases keep as sent: PostgreSQL refuses NUL, UTF-8 a lone surrogate."""
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (it has a lone surrogate)") from None
    return value


def _json_object(value: dict[str, Any]) -> dict[str, Any]:
    """A JSON object that stores and reads back the same on both databases, within limits."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:  # iterative: the depth is what is being checked
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"must be nested at most {MAX_JSON_DEPTH} levels deep")
            if isinstance(item, dict):
                for key in item:
                    _storable(key)
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict)
                                                   else item))
        elif isinstance(item, str):
            _storable(item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError("must hold finite numbers only (no NaN or Infinity)")
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_JSON_BYTES:
        raise ValueError(f"must be at most {MAX_JSON_BYTES} bytes as JSON (got {size})")
    return value


Storable = AfterValidator(_storable)
Text = Annotated[StrictStr, Field(max_length=MAX_TEXT), Storable]
Name = Annotated[StrictStr, Field(min_length=1, max_length=MAX_TEXT), Storable]
Url = Annotated[StrictStr, Field(max_length=2_000, pattern=r"^https?://\S+$"), Storable]
JsonObject = Annotated[dict[str, Any], AfterValidator(_json_object)]


def _optional_storable(value: str | None) -> str | None:
    return None if value is None else _storable(value)


# A text filter in a query string: anything the database could not compare is refused.
FilterText = Annotated[str | None, AfterValidator(_optional_storable)]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class IncidentIn(Body):
    title: Name
    severity: Severity
    service: Text | None = None
    source: Text | None = None
    fingerprint: Name | None = None
    labels: JsonObject | None = None
    description: Text | None = None


class ResolveIn(Body):
    note: Text | None = None


class LinkIn(Body):
    """A single-use link for this person (``for``: a principal's name)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)
    for_: Annotated[StrictStr, Field(alias="for", min_length=1, max_length=200), Storable]


class RequestIn(Body):
    incident_id: UUID | None = None
    action: Annotated[StrictStr, Field(max_length=MAX_ACTION), Storable]
    params: JsonObject | None = None
    risk: Risk = Risk.MEDIUM
    rationale: Text | None = None
    ttl_seconds: StrictInt | None = Field(default=None, ge=1)
    expires_at: Annotated[AwareDatetime, AfterValidator(utc_instant)] | None = None
    required_approvals: StrictInt = Field(default=1, ge=1, le=MAX_REQUIRED_APPROVALS)
    callback_url: Url | None = None
    # Who alone may decide: names and "group:NAME" entries; none or empty: any approver.
    approvers: Approvers | None = None


MAX_APPROVERS = 50
GROUP_PREFIX = "group:"
GROUP_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"


def _approver(entry: str) -> str:
    if entry.startswith(GROUP_PREFIX):
        name = entry[len(GROUP_PREFIX):]
        if not re.fullmatch(GROUP_NAME, name):
            raise ValueError(f"{entry!r}: a group name is 1 to 64 lowercase letters, digits, "
                             "'-' or '_', starting with a letter or digit")
    elif not entry.strip():
        raise ValueError("an approver's name must not be blank")
    return entry


def _distinct(entries: list[str]) -> list[str]:
    return list(dict.fromkeys(entries))


Approver = Annotated[StrictStr, Field(min_length=1, max_length=200), Storable,
                     AfterValidator(_approver)]
Approvers = Annotated[list[Approver], Field(max_length=MAX_APPROVERS),
                      AfterValidator(_distinct)]


class DecisionIn(Body):
    comment: Text | None = None


class OutcomeIn(Body):
    succeeded: StrictBool
    detail: Text | None = None


def request_deadline(
    body: RequestIn, now: datetime, *, default_ttl: timedelta, max_ttl: timedelta
) -> datetime:
    """The request's deadline: never clamped; anything out of range is the client's error."""
    max_seconds = max_ttl.total_seconds()
    if body.ttl_seconds is not None and body.expires_at is not None:
        raise errors.InvalidInput("give ttl_seconds or expires_at, not both")
    if body.ttl_seconds is not None:
        if body.ttl_seconds > max_seconds:
            raise errors.InvalidInput(
                f"ttl_seconds: at most the maximum TTL, {int(max_seconds)} seconds"
            )
        return now + timedelta(seconds=body.ttl_seconds)
    if body.expires_at is not None:
        expires_at = as_utc(body.expires_at)
        if expires_at <= now:
            raise errors.InvalidInput("expires_at: must be in the future")
        if expires_at - now > max_ttl:
            raise errors.InvalidInput(
                f"expires_at: at most the maximum TTL ({int(max_seconds)} s) ahead"
            )
        return expires_at
    return now + default_ttl


def canonical_digest(body: BaseModel) -> str:
    """A stable fingerprint of a body, to tell a retried create from a different one."""
    # Defaults included: sending a default explicitly is the same body as leaving it out.
    data = body.model_dump(mode="json")
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def as_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def utc_instant(value: datetime) -> datetime:
    """An aware time from a client, in UTC; ``ValueError`` if UTC cannot hold it.

    ``datetime`` takes offsets up to ±23:59 at both ends of its calendar, so
    ``0001-01-01T00:00:00+14:00`` parses but lies before the first UTC instant.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("give a UTC offset (e.g. 2026-01-01T00:00:00Z)")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            "is outside the range of times signoff can hold (years 1 to 9999 in UTC)"
        ) from None

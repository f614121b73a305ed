"""The shapes of what clients send, validated at the edge. Strict where it matters."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
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

from signoff.lifecycle import Risk, Severity

MAX_ACTION = 1_000
MAX_TEXT = 20_000
MAX_JSON_BYTES = 64 * 1024
MAX_REQUIRED_APPROVALS = 100


def _json_size(value: dict[str, Any]) -> dict[str, Any]:
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_JSON_BYTES:
        raise ValueError(f"must be at most {MAX_JSON_BYTES} bytes as JSON (got {size})")
    return value


Text = Annotated[StrictStr, Field(max_length=MAX_TEXT)]
Url = Annotated[StrictStr, Field(max_length=2_000, pattern=r"^https?://\S+$")]
JsonObject = Annotated[dict[str, Any], AfterValidator(_json_size)]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class IncidentIn(Body):
    title: Annotated[StrictStr, Field(min_length=1, max_length=MAX_TEXT)]
    severity: Severity
    service: Text | None = None
    source: Text | None = None
    fingerprint: Annotated[StrictStr, Field(min_length=1, max_length=MAX_TEXT)] | None = None
    labels: JsonObject | None = None
    description: Text | None = None


class ResolveIn(Body):
    note: Text | None = None


class RequestIn(Body):
    incident_id: UUID | None = None
    action: Annotated[StrictStr, Field(max_length=MAX_ACTION)]
    params: JsonObject | None = None
    risk: Risk = Risk.MEDIUM
    rationale: Text | None = None
    ttl_seconds: StrictInt | None = Field(default=None, ge=1)
    expires_at: AwareDatetime | None = None
    required_approvals: StrictInt = Field(default=1, ge=1, le=MAX_REQUIRED_APPROVALS)
    callback_url: Url | None = None


class DecisionIn(Body):
    comment: Text | None = None


class OutcomeIn(Body):
    succeeded: StrictBool
    detail: Text | None = None


def canonical_digest(body: BaseModel) -> str:
    """A stable fingerprint of a body, to tell a retried create from a different one."""
    # Defaults included: sending a default explicitly is the same body as leaving it out.
    data = body.model_dump(mode="json")
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def as_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)

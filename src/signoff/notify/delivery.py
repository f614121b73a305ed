"""What a channel's delivery can say: done, try again (perhaps after ``Retry-After``), or
never; and the retry schedule. Shared by every channel, no I/O."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx
from sqlalchemy.ext.asyncio import AsyncConnection

Row = Mapping[Any, Any]
# Work to commit with the "delivered" mark (a card's message id), in the same transaction.
AfterDelivery = Callable[[AsyncConnection, datetime], Awaitable[None]]

MAX_DELAY = 60.0
FIRST_DELAY = 1.0


class DeliveryFailed(Exception):
    """A delivery attempt failed. ``permanent``: trying again cannot help."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, permanent: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent


class Sender(Protocol):
    """One channel: deliver an outbox item, or raise ``DeliveryFailed``."""

    async def deliver(self, item: Row) -> AfterDelivery | None: ...


def retry_delay(
    attempts: int, retry_after: float | None = None, rng: Callable[[], float] = random.random
) -> float:
    """Seconds until the next attempt: exponential with jitter (half fixed, half random),
    never less than the server's ``Retry-After``, never more than a minute."""
    ceiling = min(MAX_DELAY, FIRST_DELAY * 2.0 ** max(attempts - 1, 0))
    delay = ceiling / 2 + rng() * ceiling / 2
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, MAX_DELAY)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds, from either of its forms (seconds or an HTTP date)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


def check_http(response: httpx.Response, now: datetime) -> None:
    """Raise for an answer that is not a success: 408, 425, 429 and 5xx are worth
    another try; any other 4xx is not."""
    status = response.status_code
    if 200 <= status < 300:
        return
    snippet = response.text[:200].replace("\n", " ")
    message = f"HTTP {status}: {snippet}" if snippet else f"HTTP {status}"
    if status in (408, 425, 429) or status >= 500:
        raise DeliveryFailed(
            message, retry_after=parse_retry_after(response.headers.get("retry-after"), now)
        )
    raise DeliveryFailed(message, permanent=True)

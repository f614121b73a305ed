"""LISTEN on PostgreSQL: how one replica hears of what another committed.

``create_request`` sends one ``NOTIFY signoff_deadlines, '<deadline>'`` per transaction
(the resolver listens); a decision, an approval or a cancellation sends ``NOTIFY
signoff_changed, '<request ids>'`` (the long-poll waiters listen). A listener holds a
connection of its own, outside the pool (LISTEN belongs to a session), and keeps it up:
while it is down, the resolver's backstop keeps expiry going and waiters answer at their
deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg

from signoff.logs import get_logger
from signoff.settings import normalise_database_url
from signoff.store import WAKE_CHANNEL

# A half-open socket (a network partition) shows only when the connection is used.
_KEEPALIVE = 15.0


class Backoff:
    """Exponential backoff with a cap, reset after a success."""

    def __init__(self, first: float, cap: float) -> None:
        self.first, self.cap, self.current = first, cap, first

    def next(self) -> float:
        delay, self.current = self.current, min(self.current * 2, self.cap)
        return delay

    def reset(self) -> None:
        self.current = self.first


class ChannelListener:
    """Calls ``on_notify(payload)`` for each NOTIFY on ``channel``, and ``on_connect()`` on
    each (re)connection, since what was sent while nobody listened was not heard."""

    def __init__(
        self, dsn: str, channel: str, on_notify: Callable[[str], None],
        on_connect: Callable[[], None], *, name: str,
    ) -> None:
        self.dsn = dsn
        self.channel = channel
        self.on_notify = on_notify
        self.on_connect = on_connect
        self.name = name  # of the task, in logs and in pg_stat_activity
        self.listening = False
        self._log = get_logger(f"signoff.{name}")

    async def run(self) -> None:
        """Listen until cancelled, reconnecting with capped backoff."""
        backoff = Backoff(0.5, 30.0)
        while True:
            conn: Any = None
            try:
                conn = await asyncpg.connect(
                    self.dsn, timeout=10,
                    server_settings={"application_name": f"signoff-{self.name}-listen"},
                )
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(self.channel, self._on_notify)
                self.listening = True
                backoff.reset()
                self._log.info(f"{self.name}_listening", channel=self.channel)
                self.on_connect()
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(_KEEPALIVE):
                            await lost.wait()
                    if not lost.is_set():
                        await asyncio.wait_for(conn.fetchval("SELECT 1"), 5)
                raise ConnectionError("the LISTEN connection was closed")
            except Exception as exc:
                retry = backoff.next()
                self._log.warning(f"{self.name}_listen_unavailable", error=repr(exc),
                                  retry_in_seconds=retry)
            finally:
                self.listening = False
                if conn is not None:
                    await _close(conn)
            await asyncio.sleep(retry)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.on_notify(payload)


def listen_dsn(database_url: str) -> str:
    """The DSN asyncpg takes for a SQLAlchemy PostgreSQL URL."""
    return normalise_database_url(database_url).replace("postgresql+asyncpg://",
                                                         "postgresql://", 1)


def deadline_listener(dsn: str, on_deadline: Callable[[datetime | None], None]) -> ChannelListener:
    """The resolver's: ``on_deadline(deadline)`` for each new deadline, and
    ``on_deadline(None)`` (look at the deadlines again) on each (re)connection."""

    def heard(payload: str) -> None:
        try:
            deadline: datetime | None = datetime.fromisoformat(payload)
        except ValueError:  # not ours to judge: look at the deadlines again
            deadline = None
        if deadline is not None and deadline.utcoffset() is None:
            deadline = None  # a naive time names no instant: look at the deadlines again
        on_deadline(deadline)

    return ChannelListener(dsn, WAKE_CHANNEL, heard, lambda: on_deadline(None),
                           name="resolver")


async def _close(conn: Any) -> None:
    """Close politely if the server answers quickly, else drop the socket."""
    if conn.is_closed():
        return
    try:
        await asyncio.wait_for(conn.close(), 2)
    except asyncio.CancelledError:
        conn.terminate()
        raise
    except Exception:
        conn.terminate()

"""LISTEN for new deadlines: how one replica's resolver hears of another's requests.

``create_request`` sends one ``NOTIFY signoff_deadlines, '<deadline>'`` per transaction.
The listener holds a connection of its own, outside the pool (LISTEN belongs to a
session), and keeps it up: while it is down, the resolver's backstop keeps expiry going.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg

from signoff.logs import get_logger
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


class DeadlineListener:
    """Calls ``on_deadline(deadline)`` for each NOTIFY, and ``on_deadline(None)`` on each
    (re)connection, since requests created while nobody listened were not heard of."""

    def __init__(self, dsn: str, on_deadline: Callable[[datetime | None], None]) -> None:
        self.dsn = dsn
        self.on_deadline = on_deadline
        self.listening = False
        self._log = get_logger("signoff.resolver")

    async def run(self) -> None:
        """Listen until cancelled, reconnecting with capped backoff."""
        backoff = Backoff(0.5, 30.0)
        while True:
            conn: Any = None
            try:
                conn = await asyncpg.connect(
                    self.dsn, timeout=10,
                    server_settings={"application_name": "signoff-resolver-listen"},
                )
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(WAKE_CHANNEL, self._on_notify)
                self.listening = True
                backoff.reset()
                self._log.info("resolver_listening", channel=WAKE_CHANNEL)
                self.on_deadline(None)
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(_KEEPALIVE):
                            await lost.wait()
                    if not lost.is_set():
                        await asyncio.wait_for(conn.fetchval("SELECT 1"), 5)
                raise ConnectionError("the LISTEN connection was closed")
            except Exception as exc:
                retry = backoff.next()
                self._log.warning("resolver_listen_unavailable", error=repr(exc),
                                  retry_in_seconds=retry)
            finally:
                self.listening = False
                if conn is not None:
                    await _close(conn)
            await asyncio.sleep(retry)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            deadline: datetime | None = datetime.fromisoformat(payload)
        except ValueError:  # not ours to judge: look at the deadlines again
            deadline = None
        if deadline is not None and deadline.utcoffset() is None:
            deadline = None  # a naive time names no instant: look at the deadlines again
        self.on_deadline(deadline)


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

"""uvicorn's server as ``signoff serve`` runs it."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from signoff.collector import Collector


class GracefulServer(uvicorn.Server):
    """uvicorn's server, save that a signal that stopped it is not raised again.

    uvicorn catches SIGINT and SIGTERM, shuts down gracefully, then raises the signal
    again once its handlers are gone, so that the process dies of it (exit status 130 or
    143). A service stopped by its supervisor that shut down cleanly has succeeded, and
    ``serve`` exits 0. A second SIGINT skips the graceful shutdown: ``force_exit`` tells.

    It also tells the app's long-poll waiters the moment shutdown begins: they answer with
    the state they read then, instead of holding the shutdown up (uvicorn waits for every
    open answer before it runs the lifespan's shutdown).

    While it serves, a ``Collector`` keeps the garbage collector's full passes off the
    long-lived objects, and gives memory back once the waiters have drained
    (``signoff.collector``).
    """

    _collecting: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        service = getattr(getattr(self.config.app, "state", None), "service", None)
        waiters = getattr(service, "waiters", None)
        collector = Collector(waiting=None if waiters is None else waiters.__len__)
        self._collecting = asyncio.create_task(collector.run(), name="signoff-collector")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        service = getattr(getattr(self.config.app, "state", None), "service", None)
        waiters = getattr(service, "waiters", None)
        if waiters is not None:
            waiters.close()
        changes = getattr(service, "changes", None)
        if changes is not None:  # the console's live streams end too
            changes.close()
        if self._collecting is not None:
            self._collecting.cancel()
        await super().shutdown(sockets)

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        caught = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in caught}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

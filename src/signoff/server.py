"""uvicorn's server as ``signoff serve`` runs it."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn


class GracefulServer(uvicorn.Server):
    """uvicorn's server, save that a signal that stopped it is not raised again.

    uvicorn catches SIGINT and SIGTERM, shuts down gracefully, then raises the signal
    again once its handlers are gone, so that the process dies of it (exit status 130 or
    143). A service stopped by its supervisor that shut down cleanly has succeeded, and
    ``serve`` exits 0. A second SIGINT skips the graceful shutdown: ``force_exit`` tells.
    """

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

"""The resolver on an event loop of its own, in a thread of the serving process.

On the HTTP server's event loop every step of a pass (the timer firing, each round trip's
answer) waits behind whatever HTTP work is ready at that moment. Here the resolver has a
loop, an engine and connections of its own; the HTTP loop only hands it wake-ups
(``call_soon_threadsafe``). ``docs/design.md`` says why, with the figures.

The thread is started and stopped by the app's lifespan (``signoff.app``), never by a
constructor. Its engine is made and disposed on its own loop: an asyncio connection
belongs to the loop that opened it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from datetime import datetime

from signoff.db import Database, create_engine
from signoff.logs import get_logger
from signoff.metrics import Metrics
from signoff.resolver import Resolver
from signoff.settings import Settings

# Connections of the resolver's own pool: the one it holds while it runs, and one for a
# second batch at once (``Resolver.concurrency``).
CONNECTIONS = 2
_STOP_SECONDS = 10.0

log = get_logger("signoff.resolver")


def can_run_apart(db: Database) -> bool:
    """Whether a second engine on ``db``'s URL reaches the same data: not so for an
    in-memory SQLite database, which exists only inside its connection."""
    url = db.engine.url
    return url.get_backend_name() != "sqlite" or url.database not in (None, "", ":memory:")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # not on every platform: asyncio's own loop does the same work
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


class ResolverThread:
    """``Resolver.run`` in a thread: ``await start()``, ``wake()`` from any thread,
    ``await stop()``.

    The resolver's transactions run on an engine of its own (``CONNECTIONS`` pooled
    connections) to the same database as ``db``, with ``db``'s clock (a test's fixed
    clock too) and notification routing.
    """

    def __init__(
        self, db: Database, settings: Settings, metrics: Metrics, *, listen: bool = True
    ) -> None:
        self.db = db
        self.settings = settings
        self.metrics = metrics
        self.listen = listen
        self.resolver: Resolver | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._main: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failed: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def start(self) -> None:
        """Start the thread; return once its loop runs the resolver (wake() reaches it)."""
        if self._thread is not None:
            raise RuntimeError("the resolver thread was already started")
        self._thread = threading.Thread(target=self._run, name="signoff-resolver",
                                        daemon=True)
        self._thread.start()
        await asyncio.to_thread(self._ready.wait)
        if self._failed is not None:
            raise RuntimeError("the resolver thread did not start") from self._failed

    def wake(self, deadline: datetime | None = None) -> None:
        """``Resolver.wake`` on the resolver's loop; callable from any thread.

        Before the loop runs there is nothing to wake: its first pass and plan read every
        request committed by then."""
        loop, resolver = self._loop, self.resolver
        if loop is None or resolver is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: it is stopping
            loop.call_soon_threadsafe(resolver.wake, deadline)

    async def stop(self, within: float = _STOP_SECONDS) -> None:
        """Ask the resolver to stop, wait for the thread to end (cancelling the resolver
        if it does not stop within ``within`` seconds)."""
        thread = self._thread
        if thread is None:
            return
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        await asyncio.to_thread(thread.join, within)
        if thread.is_alive() and loop is not None and self._main is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._main.cancel)
            await asyncio.to_thread(thread.join, within)
        if thread.is_alive():
            log.error("resolver_thread_stuck", seconds=2 * within)

    # -- in the thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(self._serve())
        except BaseException as exc:  # reported to start(), or logged
            if not self._ready.is_set():
                self._failed = exc
            else:
                log.error("resolver_thread_failed", error=repr(exc), exc_info=exc)
        finally:
            self._ready.set()
            self._loop = None

    async def _serve(self) -> None:
        url = self.db.engine.url.render_as_string(hide_password=False)
        settings = self.settings.model_copy(
            update={"database_url": url, "db_pool_size": CONNECTIONS})
        own = Database(create_engine(settings), self.db.clock, self.db.routing)
        try:
            resolver = Resolver(own, self.settings, self.metrics, listen=self.listen,
                                concurrency=CONNECTIONS)
            self._stop = asyncio.Event()
            self._main = asyncio.current_task()
            self.resolver = resolver
            self._loop = asyncio.get_running_loop()
            self._ready.set()
            await resolver.run(self._stop)
        finally:
            await own.dispose()

"""``/ui/live``: Server-Sent Events that tell open pages what changed.

A stream sleeps until the service publishes a change (``signoff.changes``): nothing is
read from the database per open page while nothing changes. A change is sent as the ids
of the requests it touched (``*``: something, unknown); the page reads itself again. The
session is read again before each change is sent, so a revoked token's page is told to
sign in again (``signed-out``) and its stream ends.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from signoff.changes import ANYTHING
from signoff.service import Service
from signoff.web.routing import ConsoleRoute
from signoff.web.security import SignInNeeded, current_session

router = APIRouter(prefix="/ui", route_class=ConsoleRoute, include_in_schema=False)
KEEPALIVE_SECONDS = 25.0
# A stream ends after this long and the browser opens another: a proxy that cuts long
# answers, or a session that ended quietly, is met within this time.
LIFETIME_SECONDS = 600.0
MAX_IDS = 50


@router.get("/live")
async def live(request: Request) -> Response:
    session = await current_session(request)
    service: Service = request.app.state.service
    changes = service.changes
    if changes.closing:
        return Response(status_code=204)  # EventSource stops asking
    sub = changes.subscribe()
    try:  # after subscribing: what commits from now on reaches it one way or the other
        changes.opened_at(await service.newest_event())
    except BaseException:
        changes.unsubscribe(sub)
        raise

    async def stream() -> AsyncIterator[str]:
        try:
            yield "retry: 3000\n: live\n\n"
            ends = time.monotonic() + LIFETIME_SECONDS
            while time.monotonic() < ends:
                ids = await sub.next(KEEPALIVE_SECONDS)
                if sub.closed or changes.closing:
                    return
                if not ids:
                    yield ": keepalive\n\n"
                    continue
                try:
                    await current_session(request)
                except SignInNeeded:
                    yield "event: signed-out\ndata: \n\n"
                    return
                sent = ANYTHING if ANYTHING in ids or len(ids) > MAX_IDS else ",".join(
                    sorted(ids))
                yield f"event: change\ndata: {sent}\n\n"
        finally:
            changes.unsubscribe(sub)

    del session
    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"X-Accel-Buffering": "no"})

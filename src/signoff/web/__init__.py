"""The web console: pages under ``/ui/`` for people who approve, rendered by the server.

A thin front end over the service, like the HTTP API: each page parses what it was sent,
calls the service's operations (decisions through ``Service.approve`` and
``Service.reject``, with the API's refusals) and renders the answer with Jinja2. Every
asset is served from ``/ui/static``; nothing is fetched from anywhere else.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles

from signoff.web.forms import router as forms_router
from signoff.web.links import router as links_router
from signoff.web.live import router as live_router
from signoff.web.pages import router as pages_router
from signoff.web.pages import unknown_page
from signoff.web.security import SecurityHeaders

STATIC = Path(__file__).parent / "static"


def install_console(app: FastAPI) -> None:
    """Mount the console on ``app``: its pages, assets, live stream and headers."""
    app.include_router(forms_router)
    app.include_router(links_router)
    app.include_router(live_router)
    app.include_router(pages_router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="console-static")
    app.add_api_route("/ui/{rest:path}", unknown_page, methods=["GET"],
                      include_in_schema=False)

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=303)

    app.add_middleware(SecurityHeaders)

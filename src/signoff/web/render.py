"""Templates and how values look on a page: times in the display time zone, with its
name; durations in words. Autoescaped: markup in anything a client sent shows as text."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from signoff.settings import Settings
from signoff.web.charts import bar_chart, line_chart

TEMPLATES = Path(__file__).parent / "templates"


def _instant(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def local_time(value: Any, settings: Settings, *, seconds: bool = True) -> str:
    """``2026-12-07 09:14:03 Asia/Taipei``: the display time zone, named."""
    at = _instant(value)
    if at is None:
        return ""
    shown = at.astimezone(settings.zone)
    return shown.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M") + \
        f" {settings.display_tz}"


def clock_time(value: Any, settings: Settings) -> str:
    """``09:14:03 Asia/Taipei``."""
    at = _instant(value)
    if at is None:
        return ""
    return at.astimezone(settings.zone).strftime("%H:%M:%S") + f" {settings.display_tz}"


def left(seconds: float) -> str:
    """``4m 05s left``; ``expired`` once none are."""
    if seconds <= 0:
        return "expired"
    whole = int(seconds)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h {m:02d}m left"
    if m:
        return f"{m}m {s:02d}s left"
    return f"{s}s left"


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(
        ["html"], default=True), trim_blocks=True, lstrip_blocks=True)
    env.filters["json"] = pretty_json
    env.filters["percent"] = percent
    env.filters["left"] = left
    env.globals["bar_chart"] = bar_chart
    env.globals["line_chart"] = line_chart
    return env


ENV = _environment()


def render(
    request: Request, name: str, context: dict[str, Any], *, status: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """The page ``name``; with ``X-Fragment: 1`` (the live script), only its ``<main>``."""
    settings: Settings = request.app.state.settings
    state = request.state
    values = {
        "request": request,
        "nonce": getattr(state, "csp_nonce", ""),
        "who": getattr(state, "who", None),
        "csrf": getattr(state, "csrf", ""),
        "zone": settings.display_tz,
        "local": lambda v, seconds=True: local_time(v, settings, seconds=seconds),
        "clock": lambda v: clock_time(v, settings),
        **context,
    }
    template = ENV.get_template(name)
    if request.headers.get("x-fragment") == "1" and "main" in template.blocks:
        ctx = template.new_context(values)
        body = "".join(template.blocks["main"](ctx))
    else:
        body = template.render(values)
    return HTMLResponse(Markup(body), status_code=status, headers=headers)

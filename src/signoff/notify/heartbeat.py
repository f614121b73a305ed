"""The heartbeat: the daily report, sent to the channels at a local time of day.

At ``SIGNOFF_HEARTBEAT_AT`` on local day D (in the display time zone) the report of day
D-1, the last complete day, is written to the outbox, once per channel: the dedupe key
``heartbeat:<channel>:<D-1>`` lets the first replica's write be the only one. So every
ended request is counted in exactly one heartbeat, and ``signoff report --day D-1`` shows
the same figures. A process that was down at that time writes it when it comes back on
day D; an older day is never sent late. The report is computed when it is written and
travels in the item's payload.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff.db import Database
from signoff.logs import get_logger
from signoff.notify import outbox
from signoff.report import build_report
from signoff.settings import Settings
from signoff.tables import outbox as outbox_table


def due_day(now: datetime, zone: ZoneInfo, at: time) -> date | None:
    """The day whose heartbeat is due at ``now``: yesterday (local) once the local time of
    day has reached ``at``; None before it."""
    local = now.astimezone(zone)
    if local.time() < at:
        return None
    return local.date() - timedelta(days=1)


def heartbeat_key(channel: outbox.Channel, day: date) -> str:
    return f"heartbeat:{channel.value}:{day.isoformat()}"


def channels_of(settings: Settings) -> list[outbox.Channel]:
    """The channels a heartbeat goes to: Telegram and the webhook, when configured."""
    channels = []
    if settings.telegram_enabled:
        channels.append(outbox.Channel.TELEGRAM)
    if settings.webhook_url is not None:
        channels.append(outbox.Channel.WEBHOOK)
    return channels


async def enqueue_due(
    conn: AsyncConnection, now: datetime, settings: Settings
) -> tuple[date, list[str]] | None:
    """Write the heartbeat due at ``now`` on each channel that has not got it yet.

    Returns the day it is about and the channels written to (empty: another replica wrote
    it, or no channel is configured); None when no heartbeat is due (before the time of
    day, or the heartbeat is off)."""
    at = settings.heartbeat_time
    if at is None:
        return None
    day = due_day(now, settings.zone, at)
    if day is None:
        return None
    keys = {channel: heartbeat_key(channel, day) for channel in channels_of(settings)}
    if not keys:
        return day, []
    present = set((
        await conn.execute(
            sa.select(outbox_table.c.dedupe_key)
            .where(outbox_table.c.dedupe_key.in_(list(keys.values())))
        )
    ).scalars().all())
    missing = [channel for channel, key in keys.items() if key not in present]
    if not missing:
        return day, []
    report = await build_report(conn, now, settings, day)
    items: list[dict[str, Any]] = []
    for channel in missing:
        if channel is outbox.Channel.TELEGRAM:
            payload: dict[str, Any] = {"day": day.isoformat(), "text": report.as_text()}
        else:
            payload = {"event": outbox.DAILY_REPORT, "at": now.isoformat(), "request": None,
                       "incident": None, "report": report.as_json()}
        items.append({"channel": channel.value, "event": outbox.DAILY_REPORT,
                      "created_at": now, "payload": payload, "dedupe_key": keys[channel]})
    # A replica that got there first in the meantime wins: its rows stay, ours are left out.
    await outbox.add_items(conn, items)
    return day, [channel.value for channel in missing]


class Heartbeat:
    """Run after each watchdog pass in ``signoff serve``: writes the heartbeat once it is
    due. Reads only the clock until then; once a day is seen to, nothing more that day."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.done: date | None = None  # the last day this process has seen to
        self._log = get_logger("signoff.heartbeat")

    async def beat(self) -> list[str]:
        """Write the heartbeat if it is due and not written yet; the channels written to."""
        at = self.settings.heartbeat_time
        if at is None:
            return []
        zone = self.settings.zone

        async def due(conn: AsyncConnection, now: datetime) -> date | None:
            return due_day(now, zone, at)

        day = await self.db.run(due, readonly=True)
        if day is None or day == self.done:
            return []

        async def write(conn: AsyncConnection, now: datetime) -> tuple[date, list[str]] | None:
            return await enqueue_due(conn, now, self.settings)

        result = await self.db.run(write)
        if result is None:
            return []
        self.done, written = result
        if written:
            self._log.info("daily_report_queued", day=self.done.isoformat(), zone=zone.key,
                           channels=written)
        elif not channels_of(self.settings):
            self._log.info("daily_report", day=self.done.isoformat(), zone=zone.key,
                           sent=False, why="no channel is configured")
        return written

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
from signoff.report import Report, build_report
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
    """The channels a heartbeat goes to: the chats and the webhook, when configured."""
    channels = [outbox.Channel(name) for name in settings.card_channels]
    if settings.webhook_url is not None:
        channels.append(outbox.Channel.WEBHOOK)
    return channels


async def missing_channels(
    conn: AsyncConnection, day: date, channels: list[outbox.Channel]
) -> list[outbox.Channel]:
    """The channels whose heartbeat about ``day`` is not in the outbox yet."""
    if not channels:
        return []
    keys = {channel: heartbeat_key(channel, day) for channel in channels}
    present = set((
        await conn.execute(
            sa.select(outbox_table.c.dedupe_key)
            .where(outbox_table.c.dedupe_key.in_(list(keys.values())))
        )
    ).scalars().all())
    return [channel for channel, key in keys.items() if key not in present]


def heartbeat_items(report: Report, channels: list[outbox.Channel]) -> list[dict[str, Any]]:
    """The outbox rows that carry ``report``, one per channel, keyed by channel and day."""
    made_at, day = report.made_at, report.window.day
    items: list[dict[str, Any]] = []
    for channel in channels:
        if channel in outbox.CARD_CHANNELS:
            payload: dict[str, Any] = {"day": day.isoformat(), "text": report.as_text()}
        else:
            payload = {"event": outbox.DAILY_REPORT, "at": made_at.isoformat(),
                       "request": None, "incident": None, "report": report.as_json()}
        items.append({"channel": channel.value, "event": outbox.DAILY_REPORT,
                      "created_at": made_at, "payload": payload,
                      "dedupe_key": heartbeat_key(channel, day)})
    return items


class Heartbeat:
    """Run after each watchdog pass in ``signoff serve``: writes the heartbeat once it is
    due. Once this process has seen to a day, it reads nothing more until the next."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.channels = channels_of(settings)
        self.done: date | None = None  # the last day this process has seen to
        self._log = get_logger("signoff.heartbeat")

    async def beat(self) -> list[str]:
        """Write the heartbeat if it is due and not written yet; the channels written to."""
        at = self.settings.heartbeat_time
        if at is None:
            return []
        zone = self.settings.zone

        async def peek(
            conn: AsyncConnection, now: datetime
        ) -> tuple[date | None, list[outbox.Channel]]:
            day = due_day(now, zone, at)
            if day is None or day == self.done:
                return None, []
            return day, await missing_channels(conn, day, self.channels)

        day, missing = await self.db.run(peek, readonly=True)
        if day is None:
            return []
        if not missing:  # another replica wrote it, or there is no channel
            if not self.channels:
                self._log.info("daily_report", day=day.isoformat(), zone=zone.key,
                               sent=False, why="no channel is configured")
            self.done = day
            return []

        # Computed in a read-only transaction: on SQLite the write lock is held only for
        # the insert. Replicas racing here both compute it; the dedupe keys keep one.
        async def make(conn: AsyncConnection, now: datetime) -> Report:
            return await build_report(conn, now, self.settings, day)

        report = await self.db.run(make, readonly=True)

        async def write(conn: AsyncConnection, now: datetime) -> None:
            await outbox.add_items(conn, heartbeat_items(report, missing))

        await self.db.run(write)
        self.done = day
        written = [channel.value for channel in missing]
        self._log.info("daily_report_queued", day=day.isoformat(), zone=zone.key,
                       channels=written)
        return written

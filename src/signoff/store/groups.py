"""Approver groups: who is in which, kept with its history (a removal is a date, not a
deletion); and who may decide a request that names its approvers."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff.lifecycle import EventKind
from signoff.schemas import GROUP_PREFIX
from signoff.store.rows import record_events
from signoff.tables import group_members, requests

_CURRENT = group_members.c.removed_at.is_(None)


async def add_members(
    conn: AsyncConnection, now: datetime, group: str, members: Sequence[str], *, actor: str
) -> list[str]:
    """Add ``members`` to ``group`` (audited); those already in it are left as they are.
    The ones added, in the order given."""
    present = await _current(conn, group, members)
    added = [m for m in dict.fromkeys(members) if m not in present]
    if added:
        await conn.execute(group_members.insert(), [
            {"id": uuid.uuid4(), "group_name": group, "member": m, "added_at": now,
             "added_by": actor} for m in added])
        await record_events(conn, [{
            "at": now, "kind": EventKind.GROUP_MEMBERS_ADDED, "actor": actor,
            "detail": {"group": group, "members": added},
        }])
    return added


async def remove_members(
    conn: AsyncConnection, now: datetime, group: str, members: Sequence[str], *, actor: str
) -> list[str]:
    """Take ``members`` out of ``group`` (audited; their membership is kept, ended). The
    ones removed; those not in it are left out."""
    removed = (await conn.execute(
        group_members.update()
        .where(group_members.c.group_name == group,
               group_members.c.member.in_(list(members)), _CURRENT)
        .values(removed_at=now, removed_by=actor)
        .returning(group_members.c.member)
    )).scalars().all()
    if removed:
        order = {m: i for i, m in enumerate(members)}
        removed = sorted(removed, key=order.__getitem__)
        await record_events(conn, [{
            "at": now, "kind": EventKind.GROUP_MEMBERS_REMOVED, "actor": actor,
            "detail": {"group": group, "members": removed},
        }])
    return list(removed)


async def _current(conn: AsyncConnection, group: str, members: Iterable[str]) -> set[str]:
    found = await conn.execute(
        sa.select(group_members.c.member).where(
            group_members.c.group_name == group, group_members.c.member.in_(list(members)),
            _CURRENT))
    return set(found.scalars())


async def list_groups(conn: AsyncConnection) -> dict[str, list[dict[str, Any]]]:
    """Every group with a current member, and its members (name, since, by whom)."""
    rows = (await conn.execute(
        sa.select(group_members.c.group_name, group_members.c.member,
                  group_members.c.added_at, group_members.c.added_by)
        .where(_CURRENT).order_by(group_members.c.group_name, group_members.c.member)
    )).mappings().all()
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["group_name"], []).append(
            {"member": r["member"], "since": r["added_at"], "by": r["added_by"]})
    return groups


async def unknown_groups(conn: AsyncConnection, approvers: Sequence[str]) -> list[str]:
    """The ``group:NAME`` entries among ``approvers`` that name no group with a member."""
    wanted = [a[len(GROUP_PREFIX):] for a in approvers if a.startswith(GROUP_PREFIX)]
    if not wanted:
        return []
    known = set((await conn.execute(
        sa.select(group_members.c.group_name).distinct()
        .where(group_members.c.group_name.in_(wanted), _CURRENT)
    )).scalars())
    return [f"{GROUP_PREFIX}{g}" for g in wanted if g not in known]


async def may_decide(conn: AsyncConnection, approvers: Sequence[str] | None, actor: str) -> bool:
    """Whether ``actor`` is among ``approvers`` (by name or a current group); None or
    empty: anyone who may approve."""
    if not approvers:
        return True
    if actor in approvers:
        return True
    groups = [a[len(GROUP_PREFIX):] for a in approvers if a.startswith(GROUP_PREFIX)]
    if not groups:
        return False
    found = await conn.execute(sa.select(group_members.c.id).where(
        group_members.c.member == actor, group_members.c.group_name.in_(groups), _CURRENT
    ).limit(1))
    return found.first() is not None


def approver_guard(dialect: str, actor: Any) -> sa.ColumnElement[bool]:
    """SQL that holds when ``actor`` (a bind parameter) may decide the request row being
    guarded: it names no approvers, or names ``actor``, or a group ``actor`` is in now."""
    elements = (sa.func.jsonb_array_elements_text if dialect == "postgresql"
                else sa.func.json_each)(requests.c.approvers).table_valued("value")
    groups = sa.select(sa.literal(GROUP_PREFIX) + group_members.c.group_name).where(
        group_members.c.member == actor, _CURRENT)
    named = sa.exists(sa.select(sa.literal(1)).select_from(elements).where(
        sa.or_(elements.c.value == actor, elements.c.value.in_(groups))))
    return sa.or_(requests.c.approvers.is_(None), named)

"""The service's group operations: approver groups, kept in the database and audited.

A part of ``Service`` (which inherits it), kept apart to keep each file short. Groups are
managed from the command line on the database (``signoff group``), like tokens; a request
names them in ``approvers`` as ``group:NAME``. A group exists while it has a member.
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from signoff import errors, store
from signoff.logs import get_logger
from signoff.schemas import GROUP_NAME
from signoff.views import iso

T = TypeVar("T")
Work = Callable[[AsyncConnection, datetime], Awaitable[T]]
log = get_logger("signoff.groups")


def _checked(group: str, members: Sequence[str]) -> None:
    if not re.fullmatch(GROUP_NAME, group):
        raise errors.InvalidInput(
            f"{group!r}: a group name is 1 to 64 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit")
    if not members:
        raise errors.InvalidInput("name at least one member")
    for member in members:
        if not member.strip() or len(member) > 200 or member.startswith("group:"):
            raise errors.InvalidInput(f"{member!r}: a member is a principal's name, "
                                      "1 to 200 characters (groups do not nest)")


class GroupOperations:
    """Add and remove members, list the groups."""

    async def _read(self, work: Work[T]) -> T:
        raise NotImplementedError

    async def _write(self, work: Work[T]) -> T:
        raise NotImplementedError

    async def add_to_group(self, group: str, members: Sequence[str]) -> list[str]:
        """Add ``members`` (audited); the ones that were not in it already."""
        _checked(group, members)
        actor = f"cli:{getpass.getuser()}"
        added = await self._write(
            lambda conn, now: store.add_members(conn, now, group, members, actor=actor))
        log.info("group_members_added", group=group, members=added, by=actor)
        return added

    async def remove_from_group(self, group: str, members: Sequence[str]) -> list[str]:
        """Take ``members`` out (audited; kept as history); the ones that were in it."""
        _checked(group, members)
        actor = f"cli:{getpass.getuser()}"
        removed = await self._write(
            lambda conn, now: store.remove_members(conn, now, group, members, actor=actor))
        log.info("group_members_removed", group=group, members=removed, by=actor)
        return removed

    async def list_groups(self) -> dict[str, list[dict[str, Any]]]:
        """Every group with its current members: name, since when, added by whom."""
        groups = await self._read(lambda conn, now: store.list_groups(conn))
        return {g: [{**m, "since": iso(m["since"])} for m in members]
                for g, members in groups.items()}

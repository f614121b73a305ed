"""The service's link operations: single-use links that let one approver decide one
request from a URL, with no token of their own at hand (a chat message, a page).

A part of ``Service`` (which inherits it), kept apart to keep each file short. A link is
made by the request's requester or an admin (``POST /api/v1/approvals/{id}/links``,
``signoff link create``) for a person who may decide it. Opening it does not use it up; a
decision through it does, in the decision's own transaction. It stops working once used,
once the request has ended, and at the request's deadline; its secret is stored hashed.
"""

from __future__ import annotations

import getpass
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from signoff import errors, queries, store
from signoff.lifecycle import Principal, RequestStatus, Role, role_allows
from signoff.logs import get_logger
from signoff.schemas import DecisionIn
from signoff.settings import Settings
from signoff.views import iso, request_view

T = TypeVar("T")
Work = Callable[[AsyncConnection, datetime], Awaitable[T]]
log = get_logger("signoff.links")
DECIDERS = frozenset({Role.APPROVER.value, Role.ADMIN.value})


def _request_id(value: str | uuid.UUID) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(value)
    except ValueError:
        raise errors.RequestNotFound() from None


def why_gone(link: Any, request: dict[str, Any]) -> errors.LinkGone | None:
    """Why a link no longer works, for its page; None while it works."""
    status = request["status"]
    if link["used_at"] is not None:
        used = iso(link["used_at"])
        return errors.LinkGone(f"This link was used at {used}.", status=status, why="used",
                               at=used)
    if status == RequestStatus.EXPIRED.value:
        return errors.LinkGone(f"The request expired at {request['expires_at']}.",
                               status=status, why="expired", at=request["expires_at"])
    if status != RequestStatus.PENDING.value:
        return errors.LinkGone(
            f"The request was already {status} by {request['decided_by']}.", status=status,
            why="ended", at=request["decided_at"], by=request["decided_by"])
    return None


class LinkOperations:
    """Make, open and decide through single-use links."""

    settings: Settings

    async def _read(self, work: Work[T]) -> T:
        raise NotImplementedError

    async def _write(self, work: Work[T]) -> T:
        raise NotImplementedError

    async def _decide(
        self, who: Principal, request_id: str | uuid.UUID, body: DecisionIn | errors.InvalidInput,
        *, approving: bool, via: str, link: uuid.UUID | None = None,
    ) -> dict[str, Any]:
        raise NotImplementedError

    async def create_link(
        self, who: Principal | None, request_id: str | uuid.UUID,
        principal: str | errors.InvalidInput, *, base_url: str | None = None,
    ) -> dict[str, Any]:
        """A link for ``principal`` to decide the request: ``{url, expires_at}``. ``who``:
        its requester or an admin; None from the command line (the database's own user).
        The URL starts with ``SIGNOFF_PUBLIC_URL``, else ``base_url``, else the server's
        own address."""
        if who is not None and not role_allows(who.role, Role.REQUESTER):
            raise errors.Forbidden(f"this needs the requester role; the token is {who.role}")
        rid = _request_id(request_id)
        actor = who.name if who is not None else f"cli:{getpass.getuser()}"

        async def work(conn: AsyncConnection, now: datetime) -> tuple[str, datetime]:
            request = await store.get_request(conn, rid)
            if who is not None and who.role is not Role.ADMIN and (
                    request["requested_by"] != who.name):
                raise errors.Forbidden("only the request's requester or an admin may make "
                                       "links to it")
            if request["status"] != RequestStatus.PENDING.value:
                raise errors.RequestNotPending(f"the request is already {request['status']}",
                                               status=request["status"])
            if request["expires_at"] <= now:
                raise errors.RequestNotPending("the request has expired", status="expired")
            if isinstance(principal, errors.InvalidInput):  # content: after who, what, state
                raise principal
            if principal == request["requested_by"]:
                raise errors.InvalidInput("for: nobody decides their own request")
            if not await store.live_roles(conn, principal) & DECIDERS:
                raise errors.InvalidInput(f"for: {principal!r} has no live approver or admin "
                                          "token")
            if not await store.may_decide(conn, request["approvers"], principal):
                raise errors.InvalidInput(f"for: {principal!r} is not among the request's "
                                          "approvers")
            return await store.create_link(conn, now, request, principal, actor=actor)

        secret, expires_at = await self._write(work)
        s = self.settings
        base = (s.public_url or base_url or f"http://{s.host}:{s.port}").rstrip("/")
        log.info("link_created", request_id=str(rid), principal=principal, by=actor)
        return {"url": f"{base}/ui/l/{secret}", "expires_at": iso(expires_at)}

    async def open_link(self, secret: str) -> tuple[Principal, dict[str, Any]]:
        """Who the link signs in, for its request alone, and that request as it is now;
        ``LinkNotFound`` (404) or ``LinkGone`` (410, saying why). Nothing is used up."""

        async def work(conn: AsyncConnection, now: datetime) -> tuple[Any, dict[str, Any]]:
            link = await store.find_link(conn, secret)
            if link is None:
                raise errors.LinkNotFound()
            ((row, votes),) = await queries.requests_by_id(conn, [link["request_id"]])
            return link, request_view(row, votes, now)

        link, request = await self._read(work)
        gone = why_gone(link, request)
        if gone is not None:
            raise gone
        return Principal(link["principal"], Role.APPROVER), request

    async def decide_by_link(
        self, secret: str, body: DecisionIn | errors.InvalidInput, *, approving: bool
    ) -> dict[str, Any]:
        """Approve or reject as the link's person, using the link up in the same
        transaction; the refusals of a decision, and 404/410 for the link (410 too for a
        request that has ended or whose deadline has passed, saying what won)."""
        link = await self._read(lambda conn, now: store.find_link(conn, secret))
        if link is None:
            raise errors.LinkNotFound()
        if link["used_at"] is not None:
            used = iso(link["used_at"])
            raise errors.LinkGone(f"This link was used at {used}.", why="used", at=used)
        who = Principal(link["principal"], Role.APPROVER)
        try:
            return await self._decide(who, link["request_id"], body, approving=approving,
                                      via="link", link=link["id"])
        except (errors.RequestNotPending, errors.LinkGone):
            await self.open_link(secret)  # raises LinkGone, saying why as of now
            raise

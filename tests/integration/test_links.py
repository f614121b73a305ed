"""Single-use links through the service, on SQLite and PostgreSQL: made by the requester or
an admin for someone who may decide; opened any number of times; one decision uses them
up; dead once the request has ended or at its deadline; stored hashed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from signoff import errors
from signoff.db import Database
from signoff.lifecycle import Principal, Role
from signoff.metrics import Metrics
from signoff.schemas import DecisionIn, RequestIn
from signoff.service import Service
from signoff.settings import Settings
from signoff.tables import links
from tests.conftest import FakeClock

BOT = Principal("bot", Role.REQUESTER)
OTHER_BOT = Principal("bot2", Role.REQUESTER)
ROOT = Principal("root", Role.ADMIN)


@pytest.fixture
async def service(db_url: str, clock: FakeClock) -> AsyncIterator[Service]:
    settings = Settings(database_url=db_url, public_url="https://signoff.example.com/")
    db = Database.from_settings(settings, clock=clock)
    made = Service(db, settings, Metrics())
    for name, role in (("alice", Role.APPROVER), ("bob", Role.APPROVER),
                       ("victor", Role.VIEWER)):
        await made.create_token(name, role)
    yield made
    await db.dispose()


def secret_of(url: str) -> str:
    prefix = "https://signoff.example.com/ui/l/"
    assert url.startswith(prefix), url
    return url[len(prefix):]


async def test_a_link_decides_once_as_its_person(service: Service) -> None:
    request, _ = await service.create_request(BOT, RequestIn(action="restart", ttl_seconds=60))
    made = await service.create_link(BOT, request["id"], "alice")
    assert made["expires_at"] == request["expires_at"]
    secret = secret_of(made["url"])
    for _ in range(2):  # opening it uses nothing up
        who, seen = await service.open_link(secret)
        assert who == Principal("alice", Role.APPROVER) and seen["status"] == "pending"
    first, second = await asyncio.gather(
        service.decide_by_link(secret, DecisionIn(comment="ok"), approving=True),
        service.decide_by_link(secret, DecisionIn(), approving=False),
        return_exceptions=True)
    decided = [r for r in (first, second) if isinstance(r, dict)]
    refused = [r for r in (first, second) if isinstance(r, Exception)]
    assert len(decided) == 1 and len(refused) == 1, (first, second)
    assert decided[0]["decided_by"] == "alice"
    assert isinstance(refused[0], errors.LinkGone), refused
    with pytest.raises(errors.LinkGone, match="used at"):
        await service.open_link(secret)
    async with service.db.begin() as conn:  # only its hash is kept
        stored = (await conn.execute(sa.select(links.c.secret_hash))).scalars().all()
    assert secret not in stored and len(stored[0]) == 64


async def test_a_link_dies_when_the_request_ends_and_at_its_deadline(
    service: Service, clock: FakeClock
) -> None:
    ended, _ = await service.create_request(BOT, RequestIn(action="a", ttl_seconds=60))
    late, _ = await service.create_request(BOT, RequestIn(action="b", ttl_seconds=60))
    to_ended = secret_of((await service.create_link(BOT, ended["id"], "alice"))["url"])
    to_late = secret_of((await service.create_link(BOT, late["id"], "alice"))["url"])
    await service.reject(Principal("bob", Role.APPROVER), ended["id"], DecisionIn())
    with pytest.raises(errors.LinkGone, match="already rejected by bob"):
        await service.open_link(to_ended)
    with pytest.raises(errors.LinkGone, match="already rejected by bob"):
        await service.decide_by_link(to_ended, DecisionIn(), approving=True)
    clock.advance(61)
    with pytest.raises(errors.LinkGone, match="expired at"):
        await service.open_link(to_late)
    with pytest.raises(errors.LinkGone, match="expired at"):
        await service.decide_by_link(to_late, DecisionIn(), approving=True)
    with pytest.raises(errors.LinkNotFound):
        await service.open_link("sol_nothing")


async def test_who_may_make_a_link_and_for_whom(service: Service) -> None:
    request, _ = await service.create_request(
        BOT, RequestIn(action="a", ttl_seconds=60, approvers=["alice"]))
    with pytest.raises(errors.Forbidden):  # another requester's request
        await service.create_link(OTHER_BOT, request["id"], "alice")
    with pytest.raises(errors.Forbidden):  # an approver makes no links
        await service.create_link(Principal("bob", Role.APPROVER), request["id"], "alice")
    assert (await service.create_link(ROOT, request["id"], "alice"))["url"]
    for nobody, why in (("bob", "not among the request's approvers"),
                        ("victor", "no live approver or admin token"),
                        ("bot", "nobody decides their own request"),
                        ("mallory", "no live approver or admin token")):
        with pytest.raises(errors.InvalidInput, match=why):
            await service.create_link(BOT, request["id"], nobody)
    await service.revoke_tokens("alice")  # revoked: a link for her is refused
    with pytest.raises(errors.InvalidInput, match="no live approver"):
        await service.create_link(BOT, request["id"], "alice")
    with pytest.raises(errors.RequestNotFound):
        await service.create_link(BOT, "not-an-id", "alice")

"""A callback is checked again when it is delivered: what its host name resolves to,
every address of it, and the connection goes to an address that was checked, with the
name kept for the Host header and for TLS. A refusal is final: the item is dead at once,
with the reason recorded and logged.

Names under ``.test`` (reserved, never in DNS) are resolved by a stand-in for the
system's resolver, so that what a name resolves to is the test's to say.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from signoff import store
from signoff.db import Database
from signoff.lifecycle import Principal, Role
from signoff.metrics import Metrics
from signoff.notify import outbox
from signoff.notify.channels import build_senders
from signoff.notify.egress import CallbackTransport, resolve_host
from signoff.notify.webhook import SignedPoster
from signoff.notify.worker import Notifier
from signoff.schemas import RequestIn
from signoff.service import Service
from signoff.settings import Settings
from tests.integration.notify_support import Recorder, serving
from tests.integration.store_support import new_request


class Names:
    """What each name resolves to, answer after answer; every question is kept."""

    def __init__(self, **answers: list[list[str]]) -> None:
        self.answers = {name.replace("_", "."): list(a) for name, a in answers.items()}
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        queue = self.answers.get(host)
        if not queue:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return queue.pop(0) if len(queue) > 1 else queue[0]


@pytest.fixture
def receiver() -> Iterator[Recorder]:
    with serving(Recorder()) as rec:
        yield rec


def worker(
    db: Database, settings: Settings, names: Names, verify: ssl.SSLContext | bool = True
) -> Notifier:
    transport = CallbackTransport(settings.callback_policy, resolve=names, verify=verify)
    client = httpx.AsyncClient(transport=transport, timeout=2)
    senders = {"callback": SignedPoster(client, url=None, secret=None)}
    return Notifier(db, settings, Metrics(), senders, rng=lambda: 0.5)


async def created_and_rejected(db: Database, settings: Settings, url: str) -> uuid.UUID:
    """A request made through the API's operation (its create-time check), then ended:
    its callback is queued."""
    service = Service(db, settings, Metrics())
    out, _ = await service.create_request(
        Principal("bot", Role.REQUESTER), RequestIn(action="restart web", callback_url=url))
    rid = uuid.UUID(out["id"])
    await db.run(lambda c, n: store.reject_request(c, n, rid, actor="alice"))
    return rid


async def callback_item(db: Database) -> Any:
    [item] = await db.run(lambda c, n: outbox.list_items(c), readonly=True)
    return item


async def test_a_name_that_resolves_to_loopback_is_refused_when_delivered(
    db: Database, db_url: str, receiver: Recorder
) -> None:
    settings = Settings(database_url=db_url)
    port = receiver.url.rsplit(":", 1)[1]
    rid = await created_and_rejected(db, settings, f"http://callback.test:{port}/hook")
    names = Names(callback_test=[["127.0.0.1"]])
    notifier = worker(db, settings, names)
    with capture_logs() as logs:
        assert await notifier.run_once() == 1
    item = await callback_item(db)
    assert (item["status"], item["attempts"]) == ("dead", 1)  # not tried again
    assert "callback.test resolves to 127.0.0.1, a loopback address" in item["last_error"]
    assert "SIGNOFF_CALLBACK_ALLOW" in item["last_error"]
    assert receiver.calls == [] and names.asked == ["callback.test"]
    [dead] = [e for e in logs if e["event"] == "notification_dead"]
    assert dead["request_id"] == str(rid) and dead["error"] == item["last_error"]
    assert await notifier.run_once() == 0


async def test_every_address_of_a_name_must_pass(
    db: Database, db_url: str, receiver: Recorder
) -> None:
    settings = Settings(database_url=db_url)
    await created_and_rejected(db, settings, "https://hooks.test/ci")
    names = Names(hooks_test=[["93.184.215.14", "169.254.169.254"]])
    await worker(db, settings, names).run_once()
    item = await callback_item(db)
    assert item["status"] == "dead"
    assert "resolves to 169.254.169.254, a link-local address" in item["last_error"]


async def test_a_callback_goes_to_the_address_that_was_checked(
    db: Database, db_url: str, receiver: Recorder
) -> None:
    """The name is resolved once; the connection goes to that address, not to what the
    name might answer next (here an address no test server listens on), and the Host
    header keeps the name. The system's resolver knows nothing of ``hooks.test``."""
    settings = Settings(database_url=db_url, callback_allow=["127.0.0.0/8"])
    port = receiver.url.rsplit(":", 1)[1]
    await created_and_rejected(db, settings, f"http://hooks.test:{port}/hook")
    names = Names(hooks_test=[["127.0.0.1"], ["192.0.2.1"]])
    await worker(db, settings, names).run_once()
    assert (await callback_item(db))["status"] == "delivered"
    [call] = receiver.calls
    assert call.path == "/hook" and call.headers["host"] == f"hooks.test:{port}"
    assert call.json["event"] == "request.rejected"
    assert names.asked == ["hooks.test"]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for ``hooks.test``: (certificate, key)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=hooks.test",
             "-addext", "subjectAltName=DNS:hooks.test", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True, timeout=30,
        )
    except FileNotFoundError:
        pytest.skip("needs the openssl command to make a certificate")
    return cert, key


async def test_https_keeps_the_name_for_sni_and_the_certificate(
    db: Database, db_url: str, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    offered: list[str | None] = []

    def note_sni(_sock: Any, name: str | None, _ctx: Any) -> None:
        offered.append(name)

    server_tls.sni_callback = note_sni
    trusted = ssl.create_default_context(cafile=str(cert))
    settings = Settings(database_url=db_url, callback_allow=["127.0.0.0/8"])
    names = Names(hooks_test=[["127.0.0.1"]], other_test=[["127.0.0.1"]])
    with serving(Recorder(), tls=server_tls) as receiver:
        port = receiver.url.rsplit(":", 1)[1]
        await created_and_rejected(db, settings, f"https://hooks.test:{port}/hook")
        await worker(db, settings, names, verify=trusted).run_once()
        assert (await callback_item(db))["status"] == "delivered"
        assert offered == ["hooks.test"]
        assert receiver.calls[0].headers["host"] == f"hooks.test:{port}"

        # The certificate is checked against the name: one for hooks.test does not do for
        # another name at the same address (a failed attempt, tried again later).
        await created_and_rejected(db, settings, f"https://other.test:{port}/hook")
        await worker(db, settings, names, verify=trusted).run_once()
        items = await db.run(lambda c, n: outbox.list_items(c, status="pending"), readonly=True)
        [failed] = items
        assert "certificate" in failed["last_error"].lower()
        assert len(receiver.calls) == 1


async def test_a_name_that_does_not_resolve_is_tried_again(
    db: Database, db_url: str
) -> None:
    settings = Settings(database_url=db_url)
    await created_and_rejected(db, settings, "https://nowhere.test/hook")
    await worker(db, settings, Names()).run_once()
    item = await callback_item(db)
    assert (item["status"], item["attempts"]) == ("pending", 1)
    assert "cannot resolve nowhere.test" in item["last_error"]


@pytest.mark.parametrize(
    ("url", "says"),
    [("http://127.0.0.1:9/hook", "127.0.0.1 is a loopback address"),
     ("http://localhost:9/hook", "localhost is a loopback name"),
     ("file:///etc/passwd", "only http and https")],
)
async def test_a_url_stored_before_the_rules_is_refused_by_the_running_worker(
    db: Database, db_url: str, receiver: Recorder, url: str, says: str
) -> None:
    """Requests written before the setting existed, or under a wider one: the worker
    built from today's settings refuses them."""
    settings = Settings(database_url=db_url)
    request = await new_request(db, callback_url=url)
    await db.run(lambda c, n: store.reject_request(c, n, request["id"], actor="alice"))
    async with httpx.AsyncClient() as client:
        notifier = Notifier(db, settings, Metrics(), build_senders(db, settings, client))
        await notifier.run_once()
    item = await callback_item(db)
    assert item["status"] == "dead" and says in item["last_error"]


async def test_the_system_resolver_gives_each_address_once() -> None:
    found = await resolve_host("localhost", 80)
    assert found and set(found) <= {"127.0.0.1", "::1"}
    assert len(found) == len(set(found))


async def test_an_endless_answer_does_not_hold_the_delivery(db: Database, db_url: str) -> None:
    """A receiver that never stops answering: the first 64 KiB are read, then the
    connection is closed and the status counts."""
    sent = 0

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 16384
        try:
            while sent < 64 * 1024 * 1024:
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
                sent += len(chunk)
        except ConnectionError:
            pass
        writer.close()

    server = await asyncio.start_server(endless, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = Settings(database_url=db_url, callback_allow=["http://127.0.0.1"])
    try:
        await created_and_rejected(db, settings, f"http://127.0.0.1:{port}/hook")
        async with httpx.AsyncClient() as client:
            notifier = Notifier(db, settings, Metrics(), build_senders(db, settings, client))
            await asyncio.wait_for(notifier.run_once(), 10)
    finally:
        server.close()
        await server.wait_closed()
    assert (await callback_item(db))["status"] == "delivered"
    assert sent < 8 * 1024 * 1024

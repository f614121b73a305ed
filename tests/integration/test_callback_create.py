"""POST /approvals refuses a callback_url that points at the host itself or the private
network (422, naming the setting that would allow it), unless SIGNOFF_CALLBACK_ALLOW
lists it. Checked by the URL's text: creating a request asks no DNS."""

from __future__ import annotations

import pytest

from signoff.db import Database
from signoff.settings import Settings
from tests.integration.api_support import api_for

LOCAL = [
    "http://127.0.0.1:8080/hook",
    "http://localhost/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.7/hook",
    "http://[::1]:8080/hook",
    "http://127.1/hook",
]


@pytest.mark.parametrize("url", LOCAL)
async def test_a_local_callback_is_refused_unless_listed(
    db: Database, db_url: str, url: str
) -> None:
    async with api_for(db, Settings(database_url=db_url)) as api:
        bot = api.as_("bot")
        refused = await bot.post("/approvals", json={"action": "restart", "callback_url": url})
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["code"] == "callback_refused"
        assert error["message"].startswith("callback_url: ")
        assert "SIGNOFF_CALLBACK_ALLOW" in error["message"]
        assert (await bot.get("/approvals")).json()["items"] == []  # nothing was written

    listed = ["http://127.0.0.1", "localhost", "169.254.169.254", "10.0.0.0/8", "[::1]"]
    async with api_for(db, Settings(database_url=db_url, callback_allow=listed)) as api:
        made = await api.as_("bot").post(
            "/approvals", json={"action": "restart", "callback_url": url})
        assert made.status_code == 201, made.text


@pytest.mark.parametrize(
    ("url", "says"),
    [("ftp://files.example.com/x", "callback_url"),
     ("http://[/x", "not a valid host name"),
     ("http://exa%20mple.com/x", "not a valid host name")],
)
async def test_what_is_no_http_url_is_refused(
    db: Database, db_url: str, url: str, says: str
) -> None:
    everything = Settings(database_url=db_url, callback_allow=["0.0.0.0/0", "::/0"])
    async with api_for(db, everything) as api:
        refused = await api.as_("bot").post(
            "/approvals", json={"action": "restart", "callback_url": url})
        assert refused.status_code == 422, refused.text
        assert says in refused.json()["error"]["message"]


async def test_public_addresses_and_names_are_taken_as_they_are(
    db: Database, db_url: str
) -> None:
    """A name that no entry lists passes here; what it resolves to is checked when the
    callback is delivered."""
    async with api_for(db, Settings(database_url=db_url, callback_allow=["10.0.0.0/8"])) as api:
        for url in ("https://hooks.example.com/ci/1", "http://93.184.215.14:8080/x",
                    "https://[2606:4700:4700::1111]/x", "http://10.1.2.3/x"):
            made = await api.as_("bot").post(
                "/approvals", json={"action": "restart", "callback_url": url})
            assert made.status_code == 201, made.text
        refused = await api.as_("bot").post(
            "/approvals", json={"action": "restart", "callback_url": "http://192.168.1.1/"})
        assert refused.status_code == 422
        assert "192.168.1.1 is a private address" in refused.json()["error"]["message"]

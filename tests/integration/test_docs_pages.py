"""``/docs`` and ``/redoc`` work without the internet: every script, style, icon and the
document they load come from signoff itself, with the right content type."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from signoff.app import create_app
from signoff.settings import Settings

CONTENT_TYPES = {".js": ("text/javascript", "application/javascript"), ".css": ("text/css",),
                 ".png": ("image/png",), ".json": ("application/json",)}


class References(HTMLParser):
    """Every URL a page makes the browser load: src, href, Redoc's spec-url, and the
    ``url`` Swagger UI is given in its inline script."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._script = tag == "script"
        for name, value in attrs:
            if name in ("src", "href", "spec-url") and value:
                self.urls.append(value)

    def handle_data(self, data: str) -> None:
        if self._script:
            self.urls += re.findall(r"""\burl:\s*['"]([^'"]+)['"]""", data)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_only_what_signoff_serves(page: str, tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/signoff.db"),
                     run_resolver=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://signoff") as client:
        answer = await client.get(page)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/html")
        named = re.findall(r"https?:[^\s'\"]*|//[\w.-]+", answer.text)
        assert not named, f"the page names another host: {named}"
        found = References()
        found.feed(answer.text)
        assert len(found.urls) >= 2, found.urls  # a script, and the document
        for url in found.urls:
            assert url.startswith("/") and not url.startswith("//"), url
            asset = await client.get(url)
            assert asset.status_code == 200, url
            kind = asset.headers["content-type"].split(";")[0]
            assert kind in CONTENT_TYPES[Path(url).suffix], (url, kind)
            assert asset.content, url

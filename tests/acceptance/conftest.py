"""The real ``signoff`` command, started as a subprocess and driven over HTTP."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from signoff import store
from signoff.db import Database
from signoff.lifecycle import Role
from signoff.settings import Settings


def signoff_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "signoff", *args]


def run_signoff(
    env: dict[str, str], *args: str, timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        signoff_command(*args),
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    """A running ``signoff serve`` and a token per principal."""

    url: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path
    tokens: dict[str, str] = field(default_factory=dict)
    clients: dict[str | None, httpx.Client] = field(default_factory=dict)

    def client(self, who: str | None = None) -> httpx.Client:
        """A client acting as ``who`` (no token when None), closed when the server stops."""
        if who not in self.clients:
            headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
            self.clients[who] = httpx.Client(  # idle connections go before the server's
                base_url=self.url + "/api/v1", headers=headers, timeout=30,  # keep-alive
                limits=httpx.Limits(keepalive_expiry=2.0),  # timeout (5 s) closes them
            )
        return self.clients[who]

    def token(self, name: str, role: str) -> str:
        done = run_signoff(self.env, "token", "create", name, "--role", role)
        assert done.returncode == 0, done.stderr
        secret = done.stdout.strip().splitlines()[-1]
        self.tokens[name] = secret
        return secret

    def stop(self) -> None:
        for client in self.clients.values():
            client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_server(
    database_url: str, log_path: Path, *, port: int | None = None, **extra_env: str
) -> Server:
    """``signoff serve`` on ``port`` (default: a free one), once it answers ``/healthz``."""
    port = port or free_port()
    env = {
        **os.environ,
        "SIGNOFF_DATABASE_URL": database_url,
        "SIGNOFF_PORT": str(port),
        "SIGNOFF_HOST": "127.0.0.1",
        "SIGNOFF_LOG_FORMAT": "json",
        **extra_env,
    }
    with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            signoff_command("serve"),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"signoff serve exited: {log_path.read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        process.kill()
        raise RuntimeError(f"signoff serve did not start: {log_path.read_text()}")
    server = Server(url=url, env=env, process=process, log_path=log_path)
    # Tokens straight into the database: a `signoff token create` process per principal
    # would cost seconds per test (test_token_create_prints_the_token_last drives the CLI).
    server.tokens.update(asyncio.run(_make_tokens(database_url, PRINCIPALS)))
    return server


PRINCIPALS = {
    "bot": "requester", "bot2": "requester", "alice": "approver", "bob": "approver",
    "carol": "approver", "viewer": "viewer", "root": "admin",
}


async def _make_tokens(database_url: str, principals: dict[str, str]) -> dict[str, str]:
    db = Database.from_settings(Settings(database_url=database_url))
    try:
        made = {}
        for name, role in principals.items():
            made[name] = await db.run(
                lambda conn, now, n=name, r=role: store.create_token(conn, now, n, Role(r))
            )
        return made
    finally:
        await db.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database for one server: a new SQLite file, or the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/signoff.db"
    url: str = request.getfixturevalue("db_url_postgres")
    return url


@pytest.fixture
def db_url_postgres(postgres_url: str) -> str:
    from tests.conftest import _truncate

    asyncio.run(_truncate(postgres_url))
    return postgres_url


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    srv = start_server(database_url, tmp_path / "serve.log")
    yield srv
    srv.stop()

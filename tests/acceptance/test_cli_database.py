"""The commands that work on an existing database refuse one that is missing or not
migrated, in one line that names the URL and what to do (exit 2), without creating
anything; an unreachable database is one line too (exit 1), the traceback only with -v."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.conftest import run_signoff
from tests.conftest import POSTGRES_URL, _admin, _with_database

ADVICE = "set SIGNOFF_DATABASE_URL, or run signoff db upgrade"

# Every command that reads or writes the database but may not create it.
USERS = [
    pytest.param(["token", "create", "ci-bot", "--role", "admin"], id="token-create"),
    pytest.param(["doctor"], id="doctor"),
    pytest.param(["watchdog"], id="watchdog"),
    pytest.param(["report"], id="report"),
    pytest.param(["resolve", "--once"], id="resolve-once"),
    pytest.param(["resolve"], id="resolve"),
    pytest.param(["notify", "--once"], id="notify-once"),
    pytest.param(["notify"], id="notify"),
]


def clean_env(**variables: str) -> dict[str, str]:
    """The environment without any SIGNOFF_* setting of the caller's, plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    return {**env, "SIGNOFF_LOG_FORMAT": "json", **variables}


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize("args", USERS)
def test_no_database_in_this_folder_is_refused_and_none_is_created(
    args: list[str], tmp_path: Path
) -> None:
    done = run_signoff(clean_env(), *args, cwd=tmp_path, timeout=20)
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert "sqlite:///./signoff.db" in line and ADVICE in line
    assert str(tmp_path.resolve() / "signoff.db") in line  # where that is, from this folder
    assert done.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_db_upgrade_creates_the_database_the_others_then_use(tmp_path: Path) -> None:
    env = clean_env()
    refused = run_signoff(env, "token", "create", "ci-bot", "--role", "admin", cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    done = run_signoff(env, "db", "upgrade", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "signoff.db").exists()
    made = run_signoff(env, "token", "create", "ci-bot", "--role", "admin", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().startswith("so_")


@pytest.mark.parametrize("args", USERS)
def test_an_sqlite_file_that_is_not_migrated_is_refused_and_left_as_it_was(
    args: list[str], tmp_path: Path
) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()  # an empty file is an empty SQLite database
    url = f"sqlite:///{empty}"
    done = run_signoff(clean_env(SIGNOFF_DATABASE_URL=url), *args, timeout=20)
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert url in line and "not migrated" in line and ADVICE in line
    assert empty.stat().st_size == 0


def test_an_sqlite_database_behind_the_newest_schema_is_refused(tmp_path: Path) -> None:
    env = clean_env(SIGNOFF_DATABASE_URL=f"sqlite:///{tmp_path}/old.db")
    assert run_signoff(env, "db", "upgrade", "0002").returncode == 0
    done = run_signoff(env, "token", "create", "ci-bot", "--role", "admin")
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert "at revision 0002" in line and ADVICE in line
    assert run_signoff(env, "db", "upgrade").returncode == 0
    made = run_signoff(env, "token", "create", "ci-bot", "--role", "admin")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().startswith("so_")


@pytest.mark.parametrize("args", [["serve"], ["db", "upgrade"], ["doctor"]],
                         ids=lambda args: "-".join(args))
def test_a_database_migrated_by_a_newer_signoff_is_refused_by_every_command(
    args: list[str], tmp_path: Path
) -> None:
    path = tmp_path / "newer.db"
    env = clean_env(SIGNOFF_DATABASE_URL=f"sqlite:///{path}")
    assert run_signoff(env, "db", "upgrade").returncode == 0
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    done = run_signoff(env, *args, timeout=20)
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert "revision 9999, which this signoff does not know" in line


def test_db_upgrade_to_an_unknown_revision_is_one_line(tmp_path: Path) -> None:
    env = clean_env(SIGNOFF_DATABASE_URL=f"sqlite:///{tmp_path}/x.db")
    done = run_signoff(env, "db", "upgrade", "nonesuch")
    assert done.returncode == 2, done.stderr
    assert "nonesuch" in one_line(done.stderr)


@pytest.fixture
def empty_postgres_url(postgres_url: str) -> Iterator[str]:
    """A database of this test's own on the PostgreSQL server, created empty."""
    name = f"signoff_empty_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(POSTGRES_URL, f'CREATE DATABASE "{name}"'))
    yield _with_database(postgres_url, name)
    asyncio.run(_admin(POSTGRES_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.postgres
@pytest.mark.parametrize("args", [["token", "create", "ci-bot", "--role", "admin"], ["doctor"]])
def test_a_postgres_database_that_is_not_migrated_is_refused(
    args: list[str], empty_postgres_url: str
) -> None:
    done = run_signoff(clean_env(SIGNOFF_DATABASE_URL=empty_postgres_url), *args)
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert empty_postgres_url in line and "not migrated" in line and ADVICE in line


@pytest.mark.postgres
def test_a_postgres_database_behind_the_newest_schema_is_refused(
    empty_postgres_url: str,
) -> None:
    env = clean_env(SIGNOFF_DATABASE_URL=empty_postgres_url)
    assert run_signoff(env, "db", "upgrade", "0003").returncode == 0
    done = run_signoff(env, "resolve", "--once")
    assert done.returncode == 2, done.stderr
    assert "at revision 0003" in one_line(done.stderr)


@pytest.mark.postgres
@pytest.mark.parametrize("args", [["serve"], ["db", "upgrade"], ["doctor"]])
def test_a_postgres_database_that_does_not_exist_is_one_line(
    args: list[str], postgres_url: str
) -> None:
    url = _with_database(postgres_url, f"signoff_missing_{uuid.uuid4().hex[:8]}")
    done = run_signoff(clean_env(SIGNOFF_DATABASE_URL=url), *args, timeout=20)
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert url in line and "does not exist" in line


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens there once the socket is closed


@pytest.mark.parametrize(
    "args",
    [["token", "create", "ci-bot", "--role", "admin"], ["doctor"], ["resolve", "--once"],
     ["resolve"], ["db", "upgrade"], ["serve"]],
    ids=lambda args: "-".join(args),
)
def test_an_unreachable_database_is_one_line_with_the_password_masked(args: list[str]) -> None:
    url = f"postgresql://signoff:s3cret@127.0.0.1:{closed_port()}/signoff"
    done = run_signoff(clean_env(SIGNOFF_DATABASE_URL=url), *args, timeout=20)
    assert done.returncode == 1, done.stderr
    line = one_line(done.stderr)
    assert url.replace("s3cret", "***") in line and "s3cret" not in line
    assert "-v" in line  # how to see more


def test_verbose_shows_the_traceback_as_well() -> None:
    url = f"postgresql://signoff@127.0.0.1:{closed_port()}/signoff"
    done = run_signoff(clean_env(SIGNOFF_DATABASE_URL=url), "-v", "doctor", timeout=20)
    assert done.returncode == 1, done.stderr
    assert "Traceback" in done.stderr
    assert url in done.stderr.strip().splitlines()[-1]


class Cutter:
    """A TCP proxy to PostgreSQL that, once a client sends ``marker``, drops every
    connection and stops accepting: the database is lost mid-work and stays away."""

    def __init__(self, target: tuple[str, int], marker: bytes) -> None:
        self.target, self.marker = target, marker
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.cut = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.cut.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False),
                             daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, inspect: bool) -> None:
        try:
            while data := source.recv(65536):
                if inspect and self.marker in data:
                    self.close()
                    return
                sink.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.cut.set()
        for sock in [self.listener, *self.sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@pytest.mark.postgres
def test_resolve_once_losing_its_database_mid_pass_is_one_line(postgres_url: str) -> None:
    from sqlalchemy.engine import make_url

    from tests.conftest import _truncate

    asyncio.run(_truncate(postgres_url))
    target = make_url(postgres_url)
    cutter = Cutter((target.host or "127.0.0.1", target.port or 5432), b"approval_requests")
    try:
        url = target.set(host="127.0.0.1", port=cutter.port).render_as_string(
            hide_password=False)
        done = run_signoff(clean_env(SIGNOFF_DATABASE_URL=url), "resolve", "--once",
                           timeout=30)
    finally:
        cutter.close()
    assert cutter.cut.is_set()  # the schema was read; the pass lost its connection
    assert done.returncode == 1, done.stderr
    assert url in one_line(done.stderr)

"""Faults to inject: a PostgreSQL of the test's own to crash, a proxy that loses answers.

``PrivatePostgres`` runs ``initdb`` and ``pg_ctl`` from the server's binaries into a
temporary directory, on a free port, as the ``postgres`` OS user when the test runs as root;
stopping it ``-m immediate`` is a crash, and starting it again runs crash recovery. The
shared server is never touched.

``AnswerDropper`` is a TCP proxy that speaks just enough of the PostgreSQL protocol to
recognise a COMMIT of a transaction that ran a chosen statement: it forwards the COMMIT,
waits for the server to finish it, then drops the answer and both connections. The client
sees its connection die during COMMIT and cannot know whether it committed (it did).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.reliability.harness import free_port

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104


def postgres_bin() -> Path | None:
    """The directory of the server's binaries (``initdb``, ``pg_ctl``), if installed.

    ``pg_config --bindir`` first; then Debian's versioned layout, newest first; then PATH.
    """
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                               check=False).stdout.strip()
        if found and (Path(found) / "initdb").exists():
            return Path(found)
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@dataclass
class PrivatePostgres:
    """A throw-away PostgreSQL cluster owned by the test."""

    bindir: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="signoff-pg-")))
    port: int = field(default_factory=free_port)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_owner(self, *args: str) -> list[str]:
        if os.geteuid() == 0:  # the server refuses to run as root
            return ["runuser", "-u", "postgres", "--", *args]
        return list(args)

    async def _run(self, *args: str, within: float = 120) -> None:
        process = await asyncio.create_subprocess_exec(
            *self._as_owner(*args), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(within):
            out, _ = await process.communicate()
        if process.returncode != 0:
            log = (self.root / "server.log")
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {out.decode(errors='replace')}\n{tail}")

    async def init(self) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        await self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                        "--auth=trust", "-E", "UTF8", "--no-sync")

    async def start(self) -> None:
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   "-c max_connections=60")
        await self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l",
                        str(self.root / "server.log"), "-o", options, "-w", "-t", "120",
                        "start")

    async def stop(self, mode: str = "fast") -> None:
        await self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                        "-t", "120", "stop")

    async def destroy(self) -> None:
        with contextlib.suppress(Exception):
            await self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


# -- lost answers -------------------------------------------------------------------------


@dataclass
class _Session:
    marked: dict[bytes, bool] = field(default_factory=dict)  # prepared statement -> marked
    dirty: bool = False  # the open transaction ran a marked statement
    swallow: bool = False  # drop the server's answers until it is ready again


class AnswerDropper:
    """A proxy that loses the answer to the COMMIT of ``drops`` transactions that ran a
    statement containing ``marker``; everything else passes through untouched."""

    def __init__(self, target_port: int, marker: bytes, *, drops: int, every: int = 1) -> None:
        self.target_port = target_port
        self.marker = marker
        self.remaining = drops
        self.every = every  # lose one in ``every`` eligible commits
        self.eligible = 0
        self.dropped: list[bytes] = []  # the command tags the server answered, then lost
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> AnswerDropper:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        # Closing the sockets ends every session's pumps; nothing is cancelled midway.
        for writer in list(self._writers):
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        writers = [client_w]
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
            writers.append(server_w)
            self._writers.update(writers)
            session = _Session()
            pumps = [
                asyncio.create_task(self._upstream(client_r, client_w, server_w, session)),
                asyncio.create_task(self._downstream(server_r, client_w, session)),
            ]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for writer in writers:  # the other pump then ends on its closed socket
                writer.close()
            await asyncio.gather(*pumps, return_exceptions=True)
        except OSError:
            pass
        finally:
            for writer in writers:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
                self._writers.discard(writer)
            self._tasks.discard(task)

    async def _upstream(
        self, reader: asyncio.StreamReader, client_w: asyncio.StreamWriter,
        server_w: asyncio.StreamWriter, session: _Session,
    ) -> None:
        # Untyped start-up messages; an SSL or GSS request is refused here, so that the
        # rest of the conversation stays readable.
        while True:
            head = await reader.readexactly(4)
            body = await reader.readexactly(struct.unpack("!I", head)[0] - 4)
            code = struct.unpack("!I", body[:4])[0]
            if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                client_w.write(b"N")
                await client_w.drain()
                continue
            server_w.write(head + body)
            await server_w.drain()
            break
        while True:
            kind = await reader.readexactly(1)
            head = await reader.readexactly(4)
            body = await reader.readexactly(struct.unpack("!I", head)[0] - 4)
            self._inspect(kind, body, session)
            server_w.write(kind + head + body)
            await server_w.drain()

    def _inspect(self, kind: bytes, body: bytes, session: _Session) -> None:
        if kind == b"P":  # Parse: statement name, query text
            name, query = body.split(b"\0", 2)[:2]
            session.marked[name] = self.marker in query
        elif kind == b"B":  # Bind: portal name, statement name
            statement = body.split(b"\0", 2)[1]
            session.dirty |= session.marked.get(statement, False)
        elif kind == b"Q":  # a simple query: COMMIT and ROLLBACK come this way
            query = body.rstrip(b"\0").strip().upper()
            if self.marker.upper() in query:
                session.dirty = True
            # The last of its statements ends the transaction (the notifications of a
            # commit come first, in the same message: ``SELECT pg_notify(…); COMMIT``).
            last = query.rstrip(b"; ").rsplit(b";", 1)[-1].strip()
            if last.startswith((b"COMMIT", b"ROLLBACK", b"END", b"ABORT")):
                if last.startswith(b"COMMIT") and session.dirty and self.remaining > 0:
                    self.eligible += 1
                    if self.eligible % self.every == 0:
                        self.remaining -= 1
                        session.swallow = True
                session.dirty = False

    async def _downstream(
        self, reader: asyncio.StreamReader, client_w: asyncio.StreamWriter, session: _Session
    ) -> None:
        tag = b""
        while True:
            kind = await reader.readexactly(1)
            head = await reader.readexactly(4)
            body = await reader.readexactly(struct.unpack("!I", head)[0] - 4)
            if not session.swallow:
                client_w.write(kind + head + body)
                await client_w.drain()
                continue
            if kind == b"C":  # CommandComplete: COMMIT, or ROLLBACK if it had failed
                tag = body.rstrip(b"\0")
            if kind == b"Z":  # the server is done with the COMMIT: lose its answer
                self.dropped.append(tag)
                return

"""Real HTTP servers on loopback for the notification tests: a webhook receiver and a fake
Telegram Bot API. Each records what it was sent and answers as a test scripts it."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def method(self) -> str:
        """The Bot API method (the last path segment)."""
        return self.path.rsplit("/", 1)[-1]


@dataclass
class Answer:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    hang: float = 0.0  # seconds to wait before answering (a server that hangs)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        call = Call(self.path, {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length))
        answer = self.server.owner.answer(call)
        if answer.hang:
            self.server.owner.released.wait(answer.hang)
        body = json.dumps(answer.body if answer.body is not None else {"ok": True}).encode()
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass

    def log_message(self, *_: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    owner: Recorder


class Recorder:
    """Records every POST. ``script`` answers in order, then ``default`` forever."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.script: list[Answer] = []
        self.default = Answer()
        self.released = threading.Event()
        self.lock = threading.Lock()
        self.url = ""

    def answer(self, call: Call) -> Answer:
        with self.lock:
            self.calls.append(call)
            return self.script.pop(0) if self.script else self.respond(call)

    def respond(self, call: Call) -> Answer:
        return self.default

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Call]:
        deadline = time.monotonic() + timeout
        while len(self.calls) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.calls)


class FakeBotApi(Recorder):
    """Speaks the Bot API's shapes: sendMessage, editMessageText, editMessageReplyMarkup,
    answerCallbackQuery. ``down`` answers every call with it (500, 429, a hang)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.down: Answer | None = None
        self.messages: dict[int, dict[str, Any]] = {}
        self._next_id = 100

    def respond(self, call: Call) -> Answer:
        if self.down is not None:
            return self.down
        if not call.path.startswith(f"/bot{self.token}/"):
            return Answer(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
        params, method = call.json, call.method
        if method == "sendMessage":
            self._next_id += 1
            message = {"message_id": self._next_id, "chat": {"id": params["chat_id"]},
                       "text": params["text"], "reply_markup": params.get("reply_markup")}
            self.messages[self._next_id] = message
            return Answer(body={"ok": True, "result": message})
        if method in ("editMessageText", "editMessageReplyMarkup"):
            message = self.messages.get(params["message_id"])
            if message is None:
                return Answer(400, {"ok": False, "error_code": 400,
                                    "description": "Bad Request: message to edit not found"})
            if "text" in params:
                message["text"] = params["text"]
            message["reply_markup"] = params.get("reply_markup")
            return Answer(body={"ok": True, "result": message})
        if method == "answerCallbackQuery":
            return Answer(body={"ok": True, "result": True})
        return Answer(404, {"ok": False, "error_code": 404, "description": "Not Found"})

    def of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]


@contextmanager
def serving(recorder: Recorder, tls: ssl.SSLContext | None = None) -> Iterator[Recorder]:
    """``recorder`` behind a server on 127.0.0.1; with ``tls``, speaking HTTPS."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.owner = recorder
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
        recorder.url = recorder.url.replace("http://", "https://")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        recorder.released.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


class FakeSlackApi(Recorder):
    """Speaks the Slack Web API's shapes at ``/api/{method}`` (chat.postMessage,
    chat.update), and takes the replies posted to a press's ``response_url`` at
    ``/response/...``. ``down`` answers every API call with it (500, 429, ``ok: false``, a
    hang); ``reply_hang`` makes the ``response_url`` slow to answer."""

    CHANNEL_ID = "C0SIGNOFF"
    CHANNEL_NAME = "#ops"

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.down: Answer | None = None
        self.reply_hang = 0.0
        self.messages: dict[str, dict[str, Any]] = {}  # by ts, thread replies too
        self.replies: list[dict[str, Any]] = []  # what response_urls were sent
        self._count = 0

    @property
    def api_base(self) -> str:
        return self.url + "/api"

    def response_url(self, name: str = "press") -> str:
        return f"{self.url}/response/{name}"

    def respond(self, call: Call) -> Answer:
        if call.path.startswith("/response/"):
            self.replies.append(call.json)
            return Answer(body={"ok": True}, hang=self.reply_hang)
        if self.down is not None:
            return self.down
        if call.headers.get("authorization") != f"Bearer {self.token}":
            return Answer(body={"ok": False, "error": "invalid_auth"})
        params, method = call.json, call.method
        if method == "chat.postMessage":
            if params.get("channel") not in (self.CHANNEL_NAME, self.CHANNEL_ID):
                return Answer(body={"ok": False, "error": "channel_not_found"})
            self._count += 1
            ts = f"{1767268800 + self._count}.{self._count * 7:06d}"
            message = {"ts": ts, "channel": self.CHANNEL_ID, "text": params.get("text"),
                       "blocks": params.get("blocks"), "thread_ts": params.get("thread_ts")}
            self.messages[ts] = message
            return Answer(body={"ok": True, "channel": self.CHANNEL_ID, "ts": ts,
                                "message": message})
        if method == "chat.update":
            message = self.messages.get(params.get("ts", ""))
            if message is None or params.get("channel") != self.CHANNEL_ID:
                return Answer(body={"ok": False, "error": "message_not_found"})
            message.update(text=params.get("text"), blocks=params.get("blocks"))
            return Answer(body={"ok": True, "channel": self.CHANNEL_ID, "ts": message["ts"],
                                "text": message["text"]})
        return Answer(body={"ok": False, "error": "unknown_method"})

    def of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def cards(self) -> list[dict[str, Any]]:
        """The messages that are not thread replies, oldest first."""
        return [m for m in self.messages.values() if m["thread_ts"] is None]

    def card_of(self, request_id: str) -> dict[str, Any]:
        [card] = [m for m in self.cards() if request_id in shown(m)]
        return card


def shown(message: dict[str, Any]) -> str:
    """All the text a Slack message shows: its blocks' texts, fields and context."""
    parts = [message.get("text") or ""]
    for block in message.get("blocks") or []:
        for item in [block.get("text"), *block.get("fields", []), *block.get("elements", [])]:
            if isinstance(item, dict):
                text = item.get("text")
                parts.append(text["text"] if isinstance(text, dict) else str(text or ""))
    return "\n".join(parts)


def buttons(message: dict[str, Any]) -> list[tuple[str, str]]:
    """A Slack message's buttons: (action_id, value) each."""
    return [(e["action_id"], e["value"]) for block in message.get("blocks") or []
            if block["type"] == "actions" for e in block["elements"]]

"""The policy a process uses now, re-read when its file changes.

``refresh`` reads the file and, when its text has changed, parses it again: a good file
replaces the rules, a broken one keeps the last good rules and records its error (shown
at ``GET /api/v1/policy``, in the ``signoff_policy_error`` gauge and in the log). The
app's lifespan calls ``refresh`` every second, so a change is in use within 5 s on every
replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from signoff.logs import get_logger
from signoff.policy.rules import Policy, PolicyError, parse_policy

log = get_logger("signoff.policy")
RELOAD_SECONDS = 1.0


class PolicyHolder:
    """The rules from ``path`` (None: no policy, nothing is auto-approved)."""

    def __init__(
        self, path: str | Path | None, *,
        on_change: Callable[[PolicyHolder], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.path = None if path is None else Path(path)
        self.policy: Policy | None = None
        self.loaded_at: datetime | None = None
        self.error: str | None = None
        self.errors: list[str] = []
        self._digest: str | None = None
        self.on_change = on_change
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def load(self) -> None:
        """The first read, at start: a broken file raises ``PolicyError``."""
        if self.path is None:
            return
        self.refresh()
        if self.policy is None:
            raise PolicyError(self.errors)

    def refresh(self) -> bool:
        """Read the file again; True when its text changed since the last read."""
        if self.path is None:
            return False
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raw = f"<unreadable: {exc}>".encode()
            text: str | None = None
        else:
            try:
                text = raw.decode()
            except UnicodeDecodeError:
                text = None
        digest = hashlib.sha256(raw).hexdigest()
        if digest == self._digest:
            return False
        self._digest = digest
        try:
            if text is None:
                raise PolicyError([f"line 0: cannot read {str(self.path)!r} as UTF-8 text"])
            policy = parse_policy(text, str(self.path))
        except PolicyError as exc:
            self.errors = exc.errors
            self.error = "; ".join(exc.errors)
            log.error("policy_reload_failed", source=str(self.path), errors=exc.errors,
                      kept_rules=None if self.policy is None else len(self.policy.rules))
        else:
            self.policy, self.errors, self.error = policy, [], None
            self.loaded_at = self._clock()
            log.info("policy_loaded", source=str(self.path), rules=len(policy.rules))
        if self.on_change is not None:
            self.on_change(self)
        return True

    def shown(self) -> dict[str, Any]:
        """``GET /api/v1/policy`` without ``paused`` (which the database knows)."""
        return {
            "source": None if self.path is None else str(self.path),
            "loaded_at": None if self.loaded_at is None else self.loaded_at.isoformat(),
            "rules": [] if self.policy is None else [r.shown() for r in self.policy.rules],
            "error": self.error,
        }

    async def watch(self, stop: asyncio.Event, interval: float = RELOAD_SECONDS) -> None:
        """Re-read the file every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await stop.wait()
            if not stop.is_set():
                await asyncio.to_thread(self.refresh)

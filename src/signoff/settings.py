"""Settings: one typed object, read from ``SIGNOFF_*`` variables and CLI flags.

Built at the edge (the CLI callback or the app factory) and passed down; nothing
reads the environment at import time.
"""

from __future__ import annotations

import re
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from signoff.destinations import CallbackPolicy
from signoff.durations import parse_duration
from signoff.lifecycle import Severity

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def normalise_database_url(url: str) -> str:
    """Map the user-facing URL forms onto the async drivers signoff uses."""
    url = url.strip()
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("postgresql+asyncpg://"):
        return url
    if url.startswith("sqlite+aiosqlite://"):
        return url
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url.split("://", 1)[1]
    raise ValueError(
        f"unsupported database URL {url!r}: use sqlite:///path/to/file.db "
        "or postgresql://user@host:port/dbname"
    )


class Settings(BaseSettings):
    """Everything signoff can be told at start, validated once."""

    model_config = SettingsConfigDict(env_prefix="SIGNOFF_", extra="ignore")

    database_url: str = "sqlite:///./signoff.db"
    host: str = "127.0.0.1"
    port: int = Field(default=8700, ge=1, le=65535)
    default_ttl: Duration = timedelta(minutes=15)
    max_ttl: Duration = timedelta(days=7)
    display_tz: str = "UTC"
    db_pool_size: int = Field(default=10, ge=1, le=1000)
    db_pool_timeout: Duration = timedelta(seconds=30)
    resolver_backstop: Duration = timedelta(seconds=2)
    resolver_batch_size: int = Field(default=1000, ge=1, le=100_000)
    log_level: str = "info"
    log_format: str = "auto"
    # Notifications (all optional: a channel is on when its settings are given).
    placeholder_actions: str = "NO_ACTION,TBD,pending analysis,待分析"
    notify_max_attempts: int = Field(default=8, ge=1, le=100)
    # Where people reach this server: links and the chat cards' Open buttons start here.
    public_url: str | None = None
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    telegram_bot_token: SecretStr | None = None
    telegram_chat_id: str | None = None
    telegram_api_base: str = "https://api.telegram.org"
    telegram_webhook_secret: SecretStr | None = None
    telegram_approvers: str = ""
    slack_bot_token: SecretStr | None = None
    slack_channel: str | None = None
    slack_signing_secret: SecretStr | None = None
    slack_approvers: str = ""
    slack_api_base: str = "https://slack.com/api"
    reminder_fractions: str = "0.5,0.9"
    # Where requesters' callbacks may go besides public addresses (``signoff.destinations``):
    # comma-separated in the environment.
    callback_allow: Annotated[tuple[str, ...], NoDecode] = ()
    # Watchdogs (checked in serve every interval, and when read).
    watchdog_interval: Duration = timedelta(seconds=30)
    watchdog_notify_grace: Duration = timedelta(seconds=120)
    watchdog_outcome_limit: Duration = timedelta(hours=1)
    watchdog_dead_window: Duration = timedelta(hours=24)
    watchdog_orphan_grace: Duration = timedelta(minutes=15)
    # The daily report: HH:MM in the display time zone, or "off".
    heartbeat_at: str = "09:00"
    # Policy (``docs/policy.md``): without a file nothing is auto-approved.
    policy_file: str | None = None
    # Alertmanager intake: the alert's severity label → an incident severity, and the
    # label that names the service.
    alert_severity_map: str = "critical=critical,error=high,warning=medium,info=info"
    alert_service_label: str = "service"
    # The web console: how long a sign-in lasts (``public_url`` on https makes its
    # cookies Secure).
    session_ttl: Duration = timedelta(hours=12)

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        normalise_database_url(value)
        return value

    @field_validator("display_tz")
    @classmethod
    def _check_tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name like Asia/Taipei)"
            ) from exc
        return value

    @field_validator("heartbeat_at")
    @classmethod
    def _check_heartbeat(cls, value: str) -> str:
        parse_time_of_day(value)
        return value

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        value = value.lower()
        if value not in {"debug", "info", "warning", "error"}:
            raise ValueError("log level must be one of debug, info, warning, error")
        return value

    @field_validator("log_format")
    @classmethod
    def _check_format(cls, value: str) -> str:
        value = value.lower()
        if value not in {"auto", "json", "console"}:
            raise ValueError("log format must be one of auto, json, console")
        return value

    @field_validator("session_ttl")
    @classmethod
    def _check_session_ttl(cls, value: timedelta) -> timedelta:
        if not timedelta(minutes=1) <= value <= timedelta(days=30):
            raise ValueError("the session TTL must be between 1m and 30d")
        return value

    @field_validator("webhook_url", "telegram_api_base", "slack_api_base", "public_url")
    @classmethod
    def _check_http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://\S+$", value.strip()):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return None if value is None else value.strip().rstrip("/")

    @field_validator("telegram_approvers")
    @classmethod
    def _check_approvers(cls, value: str) -> str:
        parse_approvers(value)
        return value

    @field_validator("slack_approvers")
    @classmethod
    def _check_slack_approvers(cls, value: str) -> str:
        parse_slack_approvers(value)
        return value

    @field_validator("alert_severity_map")
    @classmethod
    def _check_severity_map(cls, value: str) -> str:
        parse_severity_map(value)
        return value

    @field_validator("alert_service_label")
    @classmethod
    def _check_service_label(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the service label must not be empty")
        return value.strip()

    @field_validator("policy_file")
    @classmethod
    def _check_policy_file(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("reminder_fractions")
    @classmethod
    def _check_fractions(cls, value: str) -> str:
        parse_fractions(value)
        return value

    @field_validator("callback_allow", mode="before")
    @classmethod
    def _split_callback_allow(cls, value: Any) -> Any:
        return value.split(",") if isinstance(value, str) else value

    @field_validator("callback_allow")
    @classmethod
    def _check_callback_allow(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        entries = tuple(entry.strip() for entry in value if entry.strip())
        CallbackPolicy.from_entries(entries)
        return entries

    @model_validator(mode="after")
    def _check_telegram(self) -> Settings:
        if (self.telegram_bot_token is None) != (self.telegram_chat_id is None):
            raise ValueError(
                "Telegram needs both SIGNOFF_TELEGRAM_BOT_TOKEN and SIGNOFF_TELEGRAM_CHAT_ID"
            )
        return self

    @model_validator(mode="after")
    def _check_slack(self) -> Settings:
        if (self.slack_bot_token is None) != (self.slack_channel is None):
            raise ValueError("Slack needs both SIGNOFF_SLACK_BOT_TOKEN and SIGNOFF_SLACK_CHANNEL")
        return self

    @model_validator(mode="after")
    def _check_ttls(self) -> Settings:
        if self.default_ttl > self.max_ttl:
            raise ValueError(
                f"default TTL ({self.default_ttl}) is longer than the maximum TTL ({self.max_ttl})"
            )
        return self

    @property
    def async_database_url(self) -> str:
        return normalise_database_url(self.database_url)

    @property
    def is_postgres(self) -> bool:
        return self.async_database_url.startswith("postgresql")

    @property
    def shown_database_url(self) -> str:
        """The database URL as given, its password masked: for messages a person reads."""
        given = self.database_url.strip()
        try:
            url = make_url(given)
            return given if url.password is None else url.render_as_string(hide_password=True)
        except ArgumentError:
            return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", given)

    @property
    def sqlite_file(self) -> Path | None:
        """The file of an SQLite database; None on PostgreSQL or for an in-memory one."""
        url = make_url(self.async_database_url)
        if url.get_backend_name() != "sqlite":
            return None
        name = url.database or ""
        if name in ("", ":memory:") or url.query.get("mode") == "memory":
            return None
        return Path(name.removeprefix("file:").split("?", 1)[0])  # also the uri=true form

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.display_tz)

    @property
    def placeholders(self) -> frozenset[str]:
        """The placeholder actions, trimmed and folded; the empty action is always one."""
        names = (p.strip().casefold() for p in self.placeholder_actions.split(","))
        return frozenset({"", *names})

    def is_placeholder(self, action: str) -> bool:
        """Whether ``action`` says that no real action was proposed (its analysis failed)."""
        return action.strip().casefold() in self.placeholders

    @property
    def approvers(self) -> dict[int, str]:
        """Telegram user id → the approver name a press by that user decides as."""
        return parse_approvers(self.telegram_approvers)

    @property
    def callback_policy(self) -> CallbackPolicy:
        """Where callbacks may go, parsed from ``callback_allow``."""
        return CallbackPolicy.from_entries(self.callback_allow)

    @property
    def reminders(self) -> tuple[float, ...]:
        return parse_fractions(self.reminder_fractions)

    @property
    def heartbeat_time(self) -> time | None:
        """When the daily report is sent, local time in ``zone`` (None: never)."""
        return parse_time_of_day(self.heartbeat_at)

    @property
    def secure_cookies(self) -> bool:
        """Whether the console is reached over https (its cookies are then Secure)."""
        return (self.public_url or "").lower().startswith("https://")

    @property
    def slack_users(self) -> dict[str, str]:
        """Slack user id → the approver name a press by that user decides as."""
        return parse_slack_approvers(self.slack_approvers)

    @property
    def severity_map(self) -> dict[str, Severity]:
        """An alert's ``severity`` label (folded) → the incident's severity."""
        return parse_severity_map(self.alert_severity_map)

    @property
    def telegram_enabled(self) -> bool:
        return self.telegram_bot_token is not None and self.telegram_chat_id is not None

    @property
    def slack_enabled(self) -> bool:
        return self.slack_bot_token is not None and self.slack_channel is not None

    @property
    def card_channels(self) -> tuple[str, ...]:
        """The chats that get a card per request: ``telegram``, ``slack``, both or none."""
        return tuple(name for name, on in (("telegram", self.telegram_enabled),
                                           ("slack", self.slack_enabled)) if on)


def parse_approvers(value: str) -> dict[int, str]:
    """``telegram_user_id=approver_name,...`` → a mapping; anything else is refused."""
    mapping: dict[int, str] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        user, sep, name = item.partition("=")
        if not sep or not user.strip().lstrip("-").isdigit() or not name.strip():
            raise ValueError(f"{item.strip()!r} is not telegram_user_id=approver_name")
        mapping[int(user.strip())] = name.strip()
    return mapping


def parse_slack_approvers(value: str) -> dict[str, str]:
    """``slack_user_id=approver_name,...`` (``U0123ABC=alice``) → a mapping."""
    mapping: dict[str, str] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        user, sep, name = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Z0-9]+", user.strip()) or not name.strip():
            raise ValueError(f"{item.strip()!r} is not slack_user_id=approver_name "
                             "(a Slack user id is like U0123ABCD)")
        mapping[user.strip()] = name.strip()
    return mapping


def parse_severity_map(value: str) -> dict[str, Severity]:
    """``label=severity,...`` → a mapping (labels folded); a severity must be signoff's."""
    mapping: dict[str, Severity] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        label, sep, severity = item.partition("=")
        if not sep or not label.strip():
            raise ValueError(f"{item.strip()!r} is not label=severity")
        try:
            mapping[label.strip().casefold()] = Severity(severity.strip().lower())
        except ValueError:
            raise ValueError(
                f"{severity.strip()!r} is not a severity: use "
                + ", ".join(s.value for s in Severity)) from None
    return mapping


def parse_fractions(value: str) -> tuple[float, ...]:
    """``0.5,0.9`` → sorted fractions of a request's time to live, each in (0, 1)."""
    fractions = set()
    for item in value.split(","):
        if not item.strip():
            continue
        try:
            fraction = float(item)
        except ValueError:
            raise ValueError(f"{item.strip()!r} is not a number") from None
        if not 0 < fraction < 1:
            raise ValueError(f"a reminder fraction must be between 0 and 1, got {item.strip()}")
        fractions.add(fraction)
    return tuple(sorted(fractions))


def parse_time_of_day(value: str) -> time | None:
    """``HH:MM`` (24 h) → a time of day; ``off`` or empty → None."""
    text = value.strip()
    if text.lower() in ("", "off"):
        return None
    match = re.fullmatch(r"([0-9]{1,2}):([0-9]{2})", text)
    if match is None or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise ValueError(
            f"{value!r} is not a time of day; use HH:MM on a 24-hour clock, like 09:00, or off"
        )
    return time(int(match.group(1)), int(match.group(2)))

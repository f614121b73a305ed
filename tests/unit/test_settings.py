"""Settings: durations, URLs, TTLs and time zones are validated at start, with clear errors."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from signoff.settings import Settings, normalise_database_url, parse_duration


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("SIGNOFF_"):
            monkeypatch.delenv(name)
    yield


def test_defaults_match_the_contract() -> None:
    s = Settings()
    assert s.database_url == "sqlite:///./signoff.db"
    assert (s.host, s.port) == ("127.0.0.1", 8700)
    assert s.default_ttl == timedelta(minutes=15)
    assert s.max_ttl == timedelta(days=7)
    assert s.display_tz == "UTC"
    assert s.db_pool_size == 10
    assert not s.is_postgres


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15m", timedelta(minutes=15)),
        ("7d", timedelta(days=7)),
        ("90s", timedelta(seconds=90)),
        ("90", timedelta(seconds=90)),
        ("1.5h", timedelta(minutes=90)),
        ("2w", timedelta(weeks=2)),
        ("3650d", timedelta(days=3650)),
        ("250ms", timedelta(milliseconds=250)),
        (" 15 m ", timedelta(minutes=15)),
        (30, timedelta(seconds=30)),
        (0.5, timedelta(milliseconds=500)),
        (timedelta(hours=1), timedelta(hours=1)),
    ],
)
def test_durations(text: object, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("soon", "is not a duration"),
        ("15 minutes", "is not a duration"),
        ("-5m", "is not a duration"),
        ("", "is not a duration"),
        ("0", "must be positive"),
        ("0s", "must be positive"),
        (0, "must be positive"),
        (-3, "must be positive"),
        (timedelta(0), "must be positive"),
        (timedelta(seconds=-1), "must be positive"),
        (True, "is not a duration"),
        (None, "is not a duration"),
        ("99999999999999999999d", "too long"),
        ("3651d", "too long"),
        (float("inf"), "too long"),
        (float("nan"), "must be positive"),
    ],
)
def test_bad_durations(text: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


def test_durations_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNOFF_DEFAULT_TTL", "2m")
    monkeypatch.setenv("SIGNOFF_MAX_TTL", "1d")
    monkeypatch.setenv("SIGNOFF_DISPLAY_TZ", "Asia/Taipei")
    s = Settings()
    assert s.default_ttl == timedelta(minutes=2)
    assert s.max_ttl == timedelta(days=1)
    assert s.zone == ZoneInfo("Asia/Taipei")


@pytest.mark.parametrize("field", ["default_ttl", "max_ttl"])
@pytest.mark.parametrize("value", ["0", "-1m", "0s", "forever"])
def test_zero_or_negative_ttl_is_refused(field: str, value: str) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})


def test_default_ttl_longer_than_max_ttl_is_refused() -> None:
    with pytest.raises(ValidationError, match="longer than the maximum TTL"):
        Settings(default_ttl="2d", max_ttl="1d")


def test_absurd_max_ttl_is_a_clear_error_not_a_crash() -> None:
    with pytest.raises(ValidationError, match="too long"):
        Settings(max_ttl="99999999999999999999d")


def test_default_ttl_equal_to_max_ttl_is_fine() -> None:
    s = Settings(default_ttl="1d", max_ttl="24h")
    assert s.default_ttl == s.max_ttl


def test_default_ttl_over_the_default_max_ttl_is_refused() -> None:
    with pytest.raises(ValidationError, match="longer than the maximum TTL"):
        Settings(default_ttl="8d")


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("postgresql://u@h:5432/db", "postgresql+asyncpg://u@h:5432/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:///./x.db", "sqlite+aiosqlite:///./x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_database_urls(url: str, normalised: str) -> None:
    assert normalise_database_url(url) == normalised
    s = Settings(database_url=url)
    assert s.async_database_url == normalised
    assert s.is_postgres is normalised.startswith("postgresql")


@pytest.mark.parametrize(
    "url", ["mysql://u@h/db", "signoff.db", "", "http://example.com", "postgresql+psycopg://u@h/db"]
)
def test_bad_database_url_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="unsupported database URL"):
        Settings(database_url=url)


@pytest.mark.parametrize("zone", ["Mars/Olympus", "Asia/Taipe", "UTC+8", "../etc/passwd", ""])
def test_unknown_time_zone_is_refused(zone: str) -> None:
    with pytest.raises(ValidationError, match="unknown time zone"):
        Settings(display_tz=zone)


def test_bad_port_and_pool_are_refused() -> None:
    with pytest.raises(ValidationError, match="port"):
        Settings(port=0)
    with pytest.raises(ValidationError, match="db_pool_size"):
        Settings(db_pool_size=0)


def test_log_settings() -> None:
    assert Settings(log_level="DEBUG").log_level == "debug"
    with pytest.raises(ValidationError, match="log level"):
        Settings(log_level="loud")
    with pytest.raises(ValidationError, match="log_format"):
        Settings(log_format="xml")


def test_notification_settings_parse_and_refuse_nonsense() -> None:
    from signoff.settings import Settings

    s = Settings(telegram_approvers="123=alice, -45=bob", reminder_fractions="0.9, 0.5")
    assert s.approvers == {123: "alice", -45: "bob"}
    assert s.reminders == (0.5, 0.9)
    assert s.is_placeholder("  tbd ") and s.is_placeholder("") and not s.is_placeholder("TBD2")
    assert not s.telegram_enabled
    for bad in ({"telegram_approvers": "alice"}, {"reminder_fractions": "1.5"},
                {"reminder_fractions": "nan"}, {"telegram_bot_token": "t"},
                {"webhook_url": "ftp://x"}):
        with pytest.raises(ValueError):
            Settings(**bad)  # type: ignore[arg-type]


def test_callback_allow_list_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().callback_allow == ()  # empty: public addresses only
    monkeypatch.setenv("SIGNOFF_CALLBACK_ALLOW",
                       " https://hooks.example.com/ci/, *.corp.example,,10.0.0.0/8 ")
    s = Settings()
    assert s.callback_allow == ("https://hooks.example.com/ci/", "*.corp.example", "10.0.0.0/8")
    assert s.callback_policy.check_url("http://10.1.2.3/x") is not None
    assert Settings(callback_allow=["http://127.0.0.1"]).callback_policy.check_url(
        "http://127.0.0.1:9/x").listed


@pytest.mark.parametrize(
    "value", ["ftp://files.example.com/", "*", "hooks.example.com:8443", "10.0.0.0/33",
              '["hooks.example.com"]'])
def test_callback_allow_entries_that_mean_nothing_stop_the_start(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SIGNOFF_CALLBACK_ALLOW", value)
    with pytest.raises(ValidationError, match="callback_allow"):
        Settings()

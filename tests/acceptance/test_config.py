"""Settings are validated at start: a bad value is a clear message, not a traceback."""

from __future__ import annotations

import os

import pytest

from tests.acceptance.conftest import run_signoff


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SIGNOFF_DATABASE_URL", "mysql://x@y/z", "unsupported database URL"),
        ("SIGNOFF_DEFAULT_TTL", "-5m", "duration"),
        ("SIGNOFF_MAX_TTL", "0", "positive"),
        ("SIGNOFF_DISPLAY_TZ", "Mars/Olympus", "unknown time zone"),
        ("SIGNOFF_PORT", "99999", "SIGNOFF_PORT"),
    ],
)
def test_bad_settings_are_refused_at_start(
    variable: str, value: str, message: str, tmp_path: object
) -> None:
    env = {**os.environ, "SIGNOFF_DATABASE_URL": f"sqlite:///{tmp_path}/x.db", variable: value}
    done = run_signoff(env, "db", "upgrade")
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_a_flag_overrides_its_variable(tmp_path: object) -> None:
    env = {**os.environ, "SIGNOFF_DATABASE_URL": "mysql://nope"}
    done = run_signoff(env, "--database-url", f"sqlite:///{tmp_path}/y.db", "db", "upgrade")
    assert done.returncode == 0, done.stderr

"""Durations as people write them: ``90s``, ``15m``, ``2h``, ``7d`` or plain seconds.

Its own module, with nothing but the standard library, so that the client commands can
read a ``--ttl`` without loading the server's settings.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Anything longer is a typo, and ``now + duration`` must stay a valid datetime.
_LONGEST = timedelta(days=3650)


def parse_duration(value: Any) -> timedelta:
    """Turn ``15m``, ``90s``, ``7d``, ``1.5h`` or a plain number of seconds into a timedelta."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(
                f"{value!r} is not a duration; use a number with a unit, like 90s, 15m, 2h or 7d"
            )
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    else:
        raise ValueError(f"{value!r} is not a duration")
    if not seconds > 0:  # also refuses NaN
        raise ValueError(f"a duration must be positive, got {value!r}")
    if seconds > _LONGEST.total_seconds():
        raise ValueError(f"{value!r} is too long; a duration may be at most {_LONGEST.days}d")
    return timedelta(seconds=seconds)

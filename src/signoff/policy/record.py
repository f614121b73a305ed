"""The policy's evaluation as a request stores it: its JSON, compressed.

A policy of a hundred rules writes a hundred evaluations with their reasons on every
create (17 KB of JSON in the benchmark); compressed they are under a kilobyte, which
keeps the row out of PostgreSQL's TOAST tables and the create fast. The record is never
queried inside, only read back whole.
"""

from __future__ import annotations

import json
import zlib
from typing import Any


def encode_record(evaluation: dict[str, Any]) -> bytes:
    text = json.dumps(evaluation, separators=(",", ":"), ensure_ascii=False)
    return zlib.compress(text.encode(), 1)


def decode_record(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    found: dict[str, Any] = json.loads(zlib.decompress(raw))
    return found

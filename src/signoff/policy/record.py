"""The policy's evaluation as a request stores it: compact JSON, compressed.

A policy of a hundred rules writes a hundred evaluations with their reasons on every
create (13 KB of JSON in the benchmark); compressed they are under a kilobyte, which
keeps the row out of PostgreSQL's TOAST tables and the create fast. The record is never
queried inside, only read back whole.

Each evaluation is stored as a list, ``[rule, mode, holds, reasons]``, under a header
``[2, decision, rule, evaluations]``: the keys are not repeated a hundred times. Records
written before this form (the answer's own dict) are read as they are. Compression uses a
small window and little memory: setting up zlib's default state cost more than
compressing the record. The JSON is written and read by orjson, which takes a tenth of the
standard library's time for a hundred evaluations; the bytes are the same compact JSON.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from signoff.policy.evaluate import Verdict

COMPACT = 2
_WINDOW_BITS, _MEMORY_LEVEL = 13, 4


def encode_verdict(verdict: Verdict) -> bytes:
    compact = [COMPACT, verdict.decision, verdict.rule,
               [[e.rule, e.mode, e.holds, e.reasons] for e in verdict.evaluations]]
    text = orjson.dumps(compact)
    packer = zlib.compressobj(1, zlib.DEFLATED, _WINDOW_BITS, _MEMORY_LEVEL)
    return packer.compress(text) + packer.flush()


def decode_record(raw: bytes | None) -> dict[str, Any] | None:
    """The record as requests answer it: ``{decision, rule, evaluations: [{rule, mode,
    holds, reasons}]}``."""
    if raw is None:
        return None
    found = orjson.loads(zlib.decompress(raw))
    if isinstance(found, list) and found and found[0] == COMPACT:
        _, decision, rule, evaluations = found
        return {"decision": decision, "rule": rule, "evaluations": [
            {"rule": name, "mode": mode, "holds": holds, "reasons": reasons}
            for name, mode, holds, reasons in evaluations]}
    stored: dict[str, Any] = found  # written before the compact form
    return stored

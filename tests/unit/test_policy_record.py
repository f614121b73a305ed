"""The policy's record as a request stores it: read back as the answer shows it, in the
compact form and in the form written before it."""

from __future__ import annotations

import json
import zlib

from signoff.policy.evaluate import Evaluation, Verdict
from signoff.policy.record import decode_record, encode_verdict


def test_a_stored_verdict_reads_back_as_the_answer_shows_it() -> None:
    verdict = Verdict("approved", "b", [
        Evaluation("a", "shadow", False, ["risk high is above max_risk medium"], ["max_risk"]),
        Evaluation("b", "enforce", True),
    ])
    stored = encode_verdict(verdict)
    assert decode_record(stored) == verdict.as_json()
    assert len(stored) < len(json.dumps(verdict.as_json()))


def test_a_record_written_before_the_compact_form_still_reads() -> None:
    record = {"decision": "none", "rule": None, "evaluations": [
        {"rule": "a", "mode": "shadow", "holds": True, "reasons": []}]}
    stored = zlib.compress(json.dumps(record).encode(), 1)
    assert decode_record(stored) == record
    assert decode_record(None) is None


def test_the_record_is_the_same_compact_json_the_standard_library_writes() -> None:
    verdict = Verdict("none", None, [
        Evaluation("café", "shadow", False, ['action "x\\y" matches none of ["a*"]\u2028'],
                   ["actions"]),
        Evaluation("b", "enforce", True),
    ])
    compact = [2, "none", None, [[e.rule, e.mode, e.holds, e.reasons]
                                 for e in verdict.evaluations]]
    expected = json.dumps(compact, separators=(",", ":"), ensure_ascii=False).encode()
    assert zlib.decompress(encode_verdict(verdict)) == expected

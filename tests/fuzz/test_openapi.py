"""Schemathesis over the running server's ``/openapi.json``, with valid tokens.

Every operation gets examples that fit its schema and examples that do not, sent by
each principal (and by no one, and by a wrong token), with path ids drawn half the time
from requests and incidents that exist in every state. The promises checked on each call:

- no answer is a 5xx;
- a refused call (4xx), and any read, changes nothing in the database: a full snapshot of
  every table before and after differs only by what the resolver does on its own (a
  request past its deadline recorded as expired, its incident closed as a timeout);
- the answer is the one the document gives (schemathesis's checks: its status, content
  type, headers and body; a call that breaks the schema is refused; a route that needs a
  token refuses the call without one). Not the check that a call the schema allows is
  accepted: an opaque cursor that does not decode, a deadline in the past, ``since``
  after ``until`` or a reused Idempotency-Key are refused by rules no schema states.

``SIGNOFF_FUZZ_EXAMPLES`` (default 25) sets the examples per operation and mode; e.g.
``SIGNOFF_FUZZ_EXAMPLES=500 pytest tests/fuzz`` for a long run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from tests.acceptance.conftest import PRINCIPALS, Server, start_server
from tests.fuzz.support import Seeded, Snapshots, seed, unexplained_changes

EXAMPLES = int(os.environ.get("SIGNOFF_FUZZ_EXAMPLES", "25"))
# Routes that parse their body themselves: the spec must still describe it.
BODY_ROUTES = {
    ("POST", "/api/v1/incidents/{incident_id}/resolve"): False,
    ("POST", "/api/v1/approvals/{request_id}/approve"): False,
    ("POST", "/api/v1/approvals/{request_id}/reject"): False,
    ("POST", "/api/v1/approvals/{request_id}/outcome"): True,
}


@pytest.fixture
def fuzz_server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    server = start_server(database_url, tmp_path / "serve.log")
    try:
        yield server
    finally:
        server.stop()


# -- the run --------------------------------------------------------------------------------


def _operations(schema: Any) -> list[Any]:
    found = []
    for result in schema.get_all_operations():
        found.append(result.ok())
    return found


def _aim(case: Any, draw: Callable[[Any], Any], seeded: Seeded) -> None:
    """Point half the path ids at rows that exist, and some cursors at valid ones."""
    for name in list(case.path_parameters or {}):
        if draw(st.booleans()):
            pool = seeded.incidents if name == "incident_id" else seeded.requests
            case.path_parameters[name] = draw(st.sampled_from(pool))
    if case.query and "cursor" in case.query and draw(st.booleans()):
        case.query["cursor"] = draw(st.sampled_from(seeded.cursors))
    if case.query and "wait" in case.query:
        case.query["wait"] = _short_wait(case.query["wait"])


def _short_wait(value: Any) -> Any:
    """A long-poll's ``wait`` that the server accepts, cut to a second: a pending request
    would hold the call for up to 60 s, past this client's timeout, and waiting is not
    what is fuzzed here. A value it refuses is sent as drawn."""
    if isinstance(value, bool):
        return value
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return value
    return min(seconds, 1.0) if 0 <= seconds <= 60 else value


class Fuzzer:
    """Sends generated calls as random principals; checks each answer and the database."""

    def __init__(self, server: Server, snapshots: Snapshots, seeded: Seeded) -> None:
        self.server, self.snapshots, self.seeded = server, snapshots, seeded
        self.session = requests.Session()
        # Mostly principals that exist, so that calls get past authentication.
        self.callers = [*PRINCIPALS, *PRINCIPALS, None, "wrong-token"]
        self.tally: dict[str, int] = {}

    def headers(self, who: str | None) -> dict[str, str]:
        if who == "wrong-token":
            return {"Authorization": "Bearer so_not-a-token"}
        if who is None:
            return {}
        return {"Authorization": f"Bearer {self.server.tokens[who]}"}

    def check(self, strategy: Any) -> None:
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
        @given(data=st.data())
        def run(data: st.DataObject) -> None:
            case = data.draw(strategy)
            _aim(case, data.draw, self.seeded)
            who = data.draw(st.sampled_from(self.callers))
            before = self.snapshots.take()
            try:
                response = case.call(base_url=self.server.url, session=self.session,
                                     headers=self.headers(who), timeout=30)
            except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL,
                    UnicodeError, ValueError):
                hypothesis.reject()  # the client would not send it
            status = response.status_code
            key = f"{status // 100}xx"
            self.tally[key] = self.tally.get(key, 0) + 1
            repro = f"as {who}: {case.as_curl_command(base_url=self.server.url)}"
            assert status < 500, f"{status} {response.text[:500]}\n{repro}"
            if status >= 400 or case.method.upper() == "GET":
                changed = unexplained_changes(before, self.snapshots.take())
                assert not changed, f"{status} changed data: {changed[:5]}\n{repro}"
            if status == 413:  # refused for its size (documented), before anything was read
                return
            case.validate_response(
                response, headers=self.headers(who), excluded_checks=[positive_data_acceptance],
                transport_kwargs={"base_url": self.server.url, "session": self.session,
                                  "timeout": 30},
            )

        run()


def fuzz(server: Server, database_url: str, seeded: Seeded) -> dict[str, int]:
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    # The fuzzer sends each principal's token itself (and none, and a wrong one).
    schema.config.generation.update(with_security_parameters=False)
    operations = _operations(schema)
    assert len(operations) >= 15
    with Snapshots(database_url) as snapshots:
        fuzzer = Fuzzer(server, snapshots, seeded)
        try:
            for operation in operations:
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                    try:
                        fuzzer.check(operation.as_strategy(generation_mode=mode))
                    except hypothesis.errors.Unsatisfiable:
                        # Nothing can break the schema of, e.g., a lone string in a path.
                        if mode is GenerationMode.POSITIVE:
                            raise
        finally:
            fuzzer.session.close()
    return fuzzer.tally


def test_the_spec_describes_every_body(fuzz_server: Server) -> None:
    spec = requests.get(fuzz_server.url + "/openapi.json", timeout=10).json()
    for (method, path), required in BODY_ROUTES.items():
        body = spec["paths"][path][method.lower()]["requestBody"]
        assert body["required"] is required
        assert body["content"]["application/json"]["schema"]["type"] == "object"


def test_fuzzed_calls_never_5xx_and_refusals_change_nothing(
    fuzz_server: Server, database_url: str
) -> None:
    seeded = seed(fuzz_server)
    tally = fuzz(fuzz_server, database_url, seeded)
    print(f"fuzzed calls by answer: {tally}")
    # The run reached past authentication and validation: some calls succeeded.
    assert tally.get("2xx", 0) > 0 and tally.get("4xx", 0) > 0
    assert "5xx" not in tally

"""The policy file: what it accepts, and every error with its line and field."""

from __future__ import annotations

from datetime import time, timedelta
from pathlib import Path

import pytest

from signoff.policy import PolicyError, parse_policy, read_policy
from signoff.policy.rules import parse_hours

EXAMPLE = Path(__file__).parents[2] / "deploy" / "policy.example.toml"


def errors_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    return caught.value.errors


def test_every_field_of_the_contract_is_read() -> None:
    policy = parse_policy('''
[[rules]]
name = "restart-web-pods"
mode = "enforce"
actions = ["restart pod web-*"]
requesters = ["remediation-bot"]
max_risk = "medium"
max_severity = "high"
services = ["web"]
exclude_services = ["db"]
hours = "08:00-20:00"
weekdays = ["mon", "tue", "wed", "thu", "fri"]
limit = { count = 5, per = "1h" }
precedent = { approved = 3, within = "30d", by = "fingerprint" }

[[rules]]
name = "second"
actions = ["*"]
''')
    first, second = policy.rules
    assert first.mode == "enforce" and second.mode == "shadow"
    assert first.limit is not None and first.limit.per == timedelta(hours=1)
    assert first.precedent is not None and first.precedent.within == timedelta(days=30)
    assert first.matches_action("Restart Pod WEB-7 ")
    assert not first.matches_action("restart pod api-1")
    assert parse_policy("").rules == ()


def test_the_shipped_example_is_accepted() -> None:
    assert read_policy(EXAMPLE).rules


@pytest.mark.parametrize(("text", "expected"), [
    ("[[rules]\nname = 1", "line 1: bad TOML: "),
    ('[[rules]]\nname = "a"\nactions = ["x"]\ncolour = "red"\n',
     "line 4: colour (rule 'a'): unknown key"),
    ('[[rules]]\nname = "a"\nactions = ["x"]\n\n[[rules]]\nname = "b"\n'
     'actions = ["restart [web"]\n',
     "line 7: actions (rule 'b'): bad glob 'restart [web': a '[' is not closed"),
    ('[[rules]]\nname = "a"\nactions = ["x"]\nhours = "20:00-20:00"\n',
     "line 4: hours (rule 'a'): bad time range '20:00-20:00': start and end are the same"),
    ('[[rules]]\nname = "a"\nactions = ["x"]\nhours = "8-20"\n',
     "line 4: hours (rule 'a'): bad time range '8-20': use HH:MM-HH:MM"),
    ('[[rules]]\nname = "a"\nactions = ["x"]\n[[rules]]\nname = "a"\nactions = ["y"]\n',
     "line 5: name: duplicate rule name 'a'"),
    ('[[rules]]\nname = "Bad_Name"\nactions = ["x"]\n', "line 2: name (rule 'Bad_Name'): "),
    ('[[rules]]\nname = "a"\n', "line 1: actions (rule 'a'): required"),
    ('[[rules]]\nname = "a"\nactions = ["x"]\nmax_risk = "huge"\n',
     "line 4: max_risk (rule 'a'): Input should be"),
    ('[[rules]]\nname = "a"\nactions = ["x"]\nlimit = { count = 0, per = "1h" }\n',
     "line 4: limit.count (rule 'a'): "),
    ('[[rules]]\nname = "a"\nactions = ["x"]\nprecedent = { approved = 3, within = "soon" }\n',
     "line 4: precedent.within (rule 'a'): 'soon' is not a duration"),
    ('[[rules]]\nname = "a"\nactions = ["x"]\nweekdays = ["someday"]\n',
     "line 4: weekdays.0 (rule 'a'): "),
    ('[[rules]]\nname = "a"\nactions = ["x"]\nmode = "always"\n', "line 4: mode (rule 'a'): "),
    ('version = 2\n', "line 1: version: unknown key"),
])
def test_an_error_names_its_line_and_field(text: str, expected: str) -> None:
    found = errors_of(text)
    assert any(e.startswith(expected) for e in found), found


def test_every_error_of_a_file_is_reported() -> None:
    found = errors_of('[[rules]]\nname = "a"\nactions = []\nmax_risk = "x"\n')
    assert [e.split(":")[0] for e in found] == ["line 3", "line 4"]


def test_an_unreadable_file_is_an_error() -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        read_policy("/nonexistent/policy.toml")


@pytest.mark.parametrize(("text", "inside", "outside"), [
    ("08:00-20:00", [time(8), time(19, 59, 59)], [time(7, 59, 59), time(20), time(0)]),
    ("22:00-06:00", [time(22), time(23, 59), time(0), time(5, 59, 59)],
     [time(6), time(21, 59, 59), time(12)]),
    ("00:00-24:00", [time(0), time(23, 59, 59)], []),
])
def test_hours_include_the_start_exclude_the_end_and_may_wrap_midnight(
    text: str, inside: list[time], outside: list[time]
) -> None:
    hours = parse_hours(text)
    assert all(hours.holds(t) for t in inside)
    assert not any(hours.holds(t) for t in outside)

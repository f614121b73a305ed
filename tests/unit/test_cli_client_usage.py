"""Bad usage of the client commands exits 2 before any call: the URL they are given
answers nothing, so a command that tried to call would exit 1 instead."""

from __future__ import annotations

import uuid

import pytest
from typer.testing import CliRunner

from signoff.cli import app

NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing listens there


@pytest.mark.parametrize("args", [
    ("request", "create", "x", "--ttl", "banana"),
    ("request", "create", "x", "--ttl", "0"),
    ("request", "create", "x", "--param", "no-equals-sign"),
    ("request", "create", "x", "--param", "=1"),
    ("request", "create", "x", "--incident", str(uuid.uuid4()), "--fingerprint", "fp"),
    ("request", "create", "x", "--timeout", "10m"),
    ("request", "create", "x", "--risk", "extreme"),
    ("request", "create", "x", "--approvals", "0"),
    ("request", "wait", str(uuid.uuid4()), "--timeout", "-5"),
    ("request", "list", "--status", "done"),
    ("request", "list", "--limit", "501"),
    ("request", "outcome", str(uuid.uuid4())),
    ("incident", "create", "--title", "t", "--severity", "bad"),
    ("incident", "create", "--severity", "high"),
    ("approve",),
    ("reject", str(uuid.uuid4()), "--nope"),
    ("request", "show", "x", "--url", "ftp://example.com"),
])
def test_bad_usage_exits_2(args: tuple[str, ...]) -> None:
    done = CliRunner().invoke(app, [*args, *(() if "--url" in args else ("--url", NOWHERE))],
                              env={"SIGNOFF_TOKEN": "so_x"})
    assert done.exit_code == 2, (args, done.output)
    assert done.exception is None or isinstance(done.exception, SystemExit)


def test_the_same_url_answering_nothing_is_an_error_not_bad_usage() -> None:
    done = CliRunner().invoke(app, ["request", "show", "x", "--url", NOWHERE],
                              env={"SIGNOFF_TOKEN": "so_x"})
    assert done.exit_code == 1
    assert done.output.startswith("signoff: unreachable: cannot reach signoff at ")

"""``signoff serve`` starts again on glibc's allocator; every other command does not."""

from __future__ import annotations

import sys

import pytest
import typer

from signoff.cli import app
from signoff.launch import FLAGS, command, restart_on_allocator


@pytest.mark.parametrize(("argv", "expected"), [
    (["serve"], "serve"),
    (["serve", "--port", "80"], "serve"),
    (["--database-url", "sqlite:///x.db", "serve"], "serve"),
    (["--database-url=sqlite:///x.db", "-v", "--log-level", "debug", "serve"], "serve"),
    (["--verbose", "request", "create", "--reason", "serve"], "request"),
    (["--log-format", "serve", "token", "list"], "token"),  # a value, not the command
    (["--", "serve"], "serve"),
    (["--help"], None),
    ([], None),
])
def test_the_command_is_found_past_the_programs_own_options(
    argv: list[str], expected: str | None
) -> None:
    assert command(argv) == expected


def test_the_launcher_knows_which_of_the_programs_options_take_a_value() -> None:
    group = typer.main.get_command(app)
    options = [p for p in group.get_params(group.context_class(group))
               if isinstance(p, typer.core.TyperOption)]
    flags = {o for p in options if p.is_flag for o in (*p.opts, *p.secondary_opts)}
    valued = {o for p in options if not p.is_flag for o in p.opts}
    assert flags == FLAGS
    assert valued and not valued & FLAGS


def test_serve_alone_restarts_and_a_chosen_allocator_is_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "/venv/bin/signoff", "serve"])
    executable, argv, environ = restart_on_allocator(["serve"], {"HOME": "/h"}) or ("", [], {})
    assert executable == sys.executable
    assert argv == [sys.executable, "/venv/bin/signoff", "serve"]
    assert environ == {"HOME": "/h", "PYTHONMALLOC": "malloc"}
    assert restart_on_allocator(["serve"], {"PYTHONMALLOC": "pymalloc"}) is None
    assert restart_on_allocator(["token", "list"], {}) is None
    assert restart_on_allocator(["--help"], {}) is None
    monkeypatch.setattr(sys, "platform", "darwin")  # no malloc_trim to give memory back
    assert restart_on_allocator(["serve"], {}) is None

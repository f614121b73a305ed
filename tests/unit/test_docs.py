"""The docs stay true to the code: every command in the CLI's table, and shell examples
that run as written after ``make serve`` (which installs into ``.venv``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer

from signoff.cli import app

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def commands(group: Any, prefix: str = "signoff") -> list[str]:
    """Every runnable command of the CLI, as typed: ``signoff token create``."""
    if not getattr(group, "commands", None):
        return [prefix]
    found = []
    for name, command in sorted(group.commands.items()):
        if not getattr(command, "hidden", False):
            found += commands(command, f"{prefix} {name}")
    return found


def test_the_cli_table_lists_every_command() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    table = set(re.findall(r"^\| \[`(signoff [a-z -]+)`\]", text, flags=re.MULTILINE))
    everything = set(commands(typer.main.get_command(app)))
    assert everything - table == set(), "commands missing from docs/cli.md's table"
    assert table - everything == set(), "docs/cli.md's table lists commands that are gone"
    for command in everything:  # and each has its section
        anchor = command.replace(" ", "-")
        assert f"](#{anchor})" in text and f"## `{command}`" in text, command


def shell_blocks(path: Path) -> list[str]:
    return re.findall(r"^```(?:sh|shell|bash|console)\n(.*?)^```", path.read_text(),
                      flags=re.MULTILINE | re.DOTALL)


def test_shell_examples_call_the_installed_command() -> None:
    bare = re.compile(r"(^|\$\(|\|\s*|&&\s*)signoff\s")
    found = []
    for path in DOCS:
        for block in shell_blocks(path):
            for line in block.splitlines():
                if bare.search(line.strip()):
                    found.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert found == [], "use .venv/bin/signoff, as the README does"

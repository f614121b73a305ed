"""The project's own files: what ``make serve`` installs, and metadata pip takes quietly."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def planned(target: str, venv: Path) -> str:
    """The commands ``make`` would run for ``target`` in a fresh venv, without running them."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    done = subprocess.run([make, "-n", target, f"VENV={venv}"], cwd=ROOT, check=True,
                          capture_output=True, text=True)
    return done.stdout


def test_serve_installs_no_test_tools(tmp_path: Path) -> None:
    serve = planned("serve", tmp_path / "venv")
    assert "pip install -q -e ." in serve
    assert "[test]" not in serve, serve
    test = planned("test", tmp_path / "venv")
    assert "'.[test]'" in test, test


def test_the_licence_is_an_spdx_expression() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    licence = project["project"]["license"]
    # A table ({text = ...}) makes pip warn on every install (PEP 639).
    assert isinstance(licence, str) and re.fullmatch(r"[A-Za-z0-9.+-]+", licence), licence
    backend = " ".join(project["build-system"]["requires"])
    version = re.search(r"setuptools>=(\d+)", backend)
    assert version and int(version.group(1)) >= 77, backend  # the first to read it

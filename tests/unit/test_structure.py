"""The package's shape: no module reaches into another's private names, the imports form
no circle, and no module grows past what one sitting can read.

Read from the source with ``ast`` (every import counts, a function-level one too: an
import hidden in a function to dodge a circle is still a circle), and ordered with the
standard library's ``graphlib``. Nothing here lists modules by hand.
"""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import signoff

MAX_LINES = 500


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    tree: ast.Module = field(repr=False)


def modules_of(root: Path, package: str) -> dict[str, Module]:
    """Every module of the package at ``root``, by dotted name."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        name = ".".join(parts)
        found[name] = Module(name, path, is_package, ast.parse(path.read_text(), str(path)))
    return found


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.name.split(".")
    if not module.is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@dataclass
class Imports:
    """What one module takes from the package's other modules."""

    edges: set[str] = field(default_factory=set)
    private: list[str] = field(default_factory=list)


def imports_of(module: Module, modules: dict[str, Module]) -> Imports:
    out = Imports()
    aliases: dict[str, str] = {}  # local name → a module of the package
    where = f"{module.path.name}"
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    out.edges.add(alias.name)
                    if alias.asname:
                        aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            if source not in modules:
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in modules:  # ``from pkg import module``
                    out.edges.add(submodule)
                    aliases[alias.asname or alias.name] = submodule
                    continue
                out.edges.add(source)
                if _private(alias.name):
                    out.private.append(
                        f"{where}:{node.lineno} imports {alias.name} from {source}")
    for node in ast.walk(module.tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and _private(node.attr)
                and aliases[node.value.id] != module.name):
            out.private.append(
                f"{where}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    out.edges.discard(module.name)
    return out


def private_uses(modules: dict[str, Module]) -> list[str]:
    return [use for m in modules.values() for use in imports_of(m, modules).private]


def import_circle(modules: dict[str, Module]) -> list[str] | None:
    """A circle of imports among ``modules``, or None when they form none."""
    graph = {name: imports_of(m, modules).edges for name, m in modules.items()}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        circle: list[str] = exc.args[1]
        return circle
    return None


def long_files(modules: dict[str, Module], limit: int) -> Iterator[str]:
    for m in modules.values():
        lines = len(m.path.read_text().splitlines())
        if lines > limit:
            yield f"{m.name}: {lines} lines"


@pytest.fixture(scope="module")
def package() -> dict[str, Module]:
    root = Path(signoff.__file__).parent
    found = modules_of(root, "signoff")
    assert {"signoff.api", "signoff.service", "signoff.store"} <= set(found)
    return found


def test_no_module_imports_a_private_name_of_another(package: dict[str, Module]) -> None:
    assert private_uses(package) == []


def test_the_package_imports_form_no_circle(package: dict[str, Module]) -> None:
    assert import_circle(package) is None


def test_no_module_is_longer_than_one_sitting(package: dict[str, Module]) -> None:
    assert list(long_files(package, MAX_LINES)) == []


def test_the_front_ends_reach_the_store_only_through_the_service(
    package: dict[str, Module],
) -> None:
    console = [name for name in package if name.startswith("signoff.web")]
    assert len(console) >= 5, console
    for name in console:
        edges = imports_of(package[name], package).edges
        assert not {e for e in edges if e == "signoff.store" or e.startswith("signoff.store.")
                    or e in ("signoff.queries", "signoff.overview")}, name
    for front in ("signoff.api", "signoff.notify.presses", "signoff.cli_support",
                  "signoff.web.pages", "signoff.web.forms"):
        edges = imports_of(package[front], package).edges
        assert not {e for e in edges if e == "signoff.store" or e.startswith("signoff.store.")
                    }, front
        assert "signoff.service" in edges, front
    commands = [name for name in package if name.startswith("signoff.cli")]
    assert len(commands) >= 4, commands
    for command in commands:
        edges = imports_of(package[command], package).edges
        assert not {e for e in edges if e == "signoff.store" or e.startswith("signoff.store.")
                    }, command


# -- the checks themselves fail on a package that breaks the rules ----------------------


def _write(root: Path, files: dict[str, str]) -> dict[str, Module]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return modules_of(root, "pkg")


def test_a_circle_is_found_even_through_a_function_level_import(tmp_path: Path) -> None:
    modules = _write(tmp_path, {
        "__init__.py": "",
        "report.py": "from pkg.watchdog import run\n",
        "watchdog.py": "def run():\n    from pkg.notify.heartbeat import beat\n",
        "notify/__init__.py": "",
        "notify/heartbeat.py": "from pkg import report\nbeat = 1\n",
    })
    circle = import_circle(modules)
    assert circle is not None
    assert set(circle) == {"pkg.report", "pkg.watchdog", "pkg.notify.heartbeat"}


def test_relative_imports_count_and_a_tree_has_no_circle(tmp_path: Path) -> None:
    modules = _write(tmp_path, {
        "__init__.py": "",
        "a.py": "from . import b\n",
        "b.py": "from .store import rows\n",
        "store/__init__.py": "from pkg.store.rows import x\n",
        "store/rows.py": "x = 1\n",
    })
    assert import_circle(modules) is None
    assert imports_of(modules["pkg.a"], modules).edges == {"pkg.b"}
    assert imports_of(modules["pkg.b"], modules).edges == {"pkg.store.rows"}
    modules = _write(tmp_path, {"store/rows.py": "from ..a import b\nx = 1\n"})
    assert import_circle(modules) is not None


def test_private_names_are_found_imported_or_reached_through_a_module(tmp_path: Path) -> None:
    modules = _write(tmp_path, {
        "__init__.py": "__version__ = '1'\n",
        "api.py": "def _write():\n    pass\n",
        "presses.py": "from pkg.api import _write\n",
        "console.py": "from pkg import api\napi._write()\n",
        "fine.py": "from pkg import __version__\nfrom pkg.api import _write as w\n"
                   "import pkg.api\n",
        "self.py": "import pkg.self as me\nme._x = 1\n",
    })
    found = private_uses(modules)
    assert any("presses.py" in f and "_write from pkg.api" in f for f in found)
    assert any("console.py" in f and "pkg.api._write" in f for f in found)
    assert any("fine.py" in f for f in found)  # an alias does not hide it
    assert not any("self.py" in f for f in found)
    assert len(found) == 3

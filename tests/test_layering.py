"""The sans-IO core stays pure: no sockets, clocks, randomness or HTTP (STYLE.md §1)."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "sipwake"
PURE = ("sip", "transaction", "registrar", "proxy", "presence")
FORBIDDEN = {"asyncio", "socket", "ssl", "time", "random", "uuid", "httpx", "sqlite3", "select"}


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", PURE)
def test_pure_packages_import_no_io(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"sipwake/{package} has no modules"
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & FORBIDDEN)
        for path in files
        if _imports(path) & FORBIDDEN
    }
    assert offenders == {}


def test_node_is_pure_too() -> None:
    assert _imports(ROOT / "node.py") & FORBIDDEN == set()

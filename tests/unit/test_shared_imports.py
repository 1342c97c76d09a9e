"""shared/ holds contracts and platform code: none of its modules imports a service (the
services depend on shared, never the other way round)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
SERVICES = {"intake", "matching", "notify"}


def _imported_roots(path: Path) -> set[str]:
    """The top-level packages a module imports, at module level or inside a function."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("module", sorted(SHARED.rglob("*.py")), ids=lambda p: str(p.relative_to(SHARED)))
def test_shared_module_imports_no_service(module: Path) -> None:
    assert not _imported_roots(module) & SERVICES


def test_the_check_sees_a_function_level_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from intake.cli import app\n    import matching.domain\n")
    assert _imported_roots(module) & SERVICES == {"intake", "matching"}

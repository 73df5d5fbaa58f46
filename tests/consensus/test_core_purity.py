"""consensus/core is pure: it imports only the standard library's data modules and itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "consensus" / "core"
ALLOWED = {"__future__", "collections", "dataclasses", "enum", "types", "typing"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_module_imports_nothing_impure(path: Path) -> None:
    for name in _imports(path):
        top = name.split(".")[0]
        assert name.startswith("consensus.core") or top in ALLOWED, f"{path.name} imports {name}"


def test_core_has_the_modules_the_docs_name() -> None:
    names = {p.stem for p in CORE.glob("*.py")}
    assert {"machine", "votekeeper", "proposer", "state", "events", "effects", "types"} <= names

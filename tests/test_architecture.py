"""The import rules of DESIGN.md section 2 and docs/ARCHITECTURE.md, enforced on every import.

Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cli", "node", "consensus", "ledger", "storage", "fl")

# package -> project packages (or exact modules) it may import
ALLOWED: dict[str, set[str]] = {
    "cli": {"node", "consensus", "ledger", "storage", "fl"},
    "node": {"consensus", "ledger", "storage", "fl"},
    "consensus": {"ledger"},
    "ledger": {"fl"},
    "fl": {"ledger.codec", "ledger.merkle"},
    "storage": {"ledger.codec", "ledger.merkle"},
}
# The pure consensus core: no I/O, clock, randomness or heavy libraries.
CORE_FORBIDDEN = {"trio", "libp2p", "plyvel", "torch", "time", "random", "socket", "asyncio",
                  "threading", "os", "logging", "structlog", "node", "storage", "fl"}


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            out += [(n.lineno, a.name) for a in n.names]
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
            out.append((n.lineno, n.module))
    return out


def allowed(pkg: str, module: str) -> bool:
    top = module.split(".")[0]
    if top not in PACKAGES or top == pkg:
        return True
    return any(module == a or module.startswith(a + ".") or a == top for a in ALLOWED[pkg])


def files_of(pkg: str) -> list[Path]:
    return sorted((ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("pkg", PACKAGES)
def test_package_imports_follow_the_layering(pkg: str) -> None:
    bad = [f"{p.relative_to(ROOT)}:{line} imports {mod}"
           for p in files_of(pkg) for line, mod in imports_of(p) if not allowed(pkg, mod)]
    assert not bad, "forbidden imports:\n" + "\n".join(bad)


def test_consensus_core_is_pure() -> None:
    bad = [f"{p.relative_to(ROOT)}:{line} imports {mod}"
           for p in files_of("consensus/core") for line, mod in imports_of(p)
           if mod.split(".")[0] in CORE_FORBIDDEN]
    assert not bad, "consensus/core must stay pure:\n" + "\n".join(bad)


def test_the_rule_checker_catches_violations(tmp_path: Path) -> None:
    f = tmp_path / "x.py"
    f.write_text("def f():\n    import node.daemon\nfrom ledger.state import State\n")
    assert sorted(m for _, m in imports_of(f)) == ["ledger.state", "node.daemon"]
    assert not allowed("fl", "ledger.state") and allowed("fl", "ledger.codec")
    assert not allowed("storage", "node.daemon") and not allowed("consensus", "fl.train")
    assert allowed("node", "ledger.state") and allowed("ledger", "fl.aggregate")


def test_every_module_has_a_docstring() -> None:
    missing = [str(p.relative_to(ROOT)) for pkg in PACKAGES for p in files_of(pkg)
               if ast.get_docstring(ast.parse(p.read_text(encoding="utf-8"))) is None
               and p.stat().st_size > 0]
    assert not missing, "modules without a one-line docstring:\n" + "\n".join(missing)

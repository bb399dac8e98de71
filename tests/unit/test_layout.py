"""The package layout of DESIGN §1, held against the code.

Imports flow one way — util → model → data → vector → extraction, steering → scoring → attack →
eval (and testing) → report → serve, export → cli — and this walks every import in the package
(module level and inside functions, from the source, nothing imported) and fails on:

* an upward import (a package importing one above it, or a sibling at its own level),
* an import cycle between modules,
* a cross-package import of a ``_private`` name,
* anything under ``steerlab`` importing ``steerlab.cli`` or the ``tests`` tree,
* anything but the CLI importing the ``steerlab`` facade itself.

The top-level ``steerlab/__init__.py`` is the lazy public facade and is left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "steerlab"

#: package (first component under steerlab) → level; a module may import its own package or
#: any package of a lower level. Packages sharing a level are siblings and may not import
#: each other.
LEVELS = {
    "errors": -1, "version": -1,  # leaves: they import nothing of steerlab
    "util": 0,
    "model": 1,
    "data": 2,
    "vector": 3,
    "extraction": 4, "steering": 4,
    "scoring": 5,
    "attack": 6,
    "eval": 7, "testing": 7,
    "report": 8,
    "serve": 9, "export": 9,
    "cli": 10,
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        if name != "steerlab":
            out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, str, int]]:
    """(imported module, imported name or "", line) for every steerlab import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: list[tuple[str, str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, "", node.lineno) for a in node.names
                      if a.name.split(".")[0] in ("steerlab", "tests")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] not in ("steerlab", "tests"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub if sub in MODULES else target, alias.name, node.lineno))
    return found


#: (module, imported module): the upward reference the layout allows — the vector's
#: ``apply`` / ``attach`` (over ``steerlab.steer``), the peer habits users expect on the vector
#: itself (lazy, inside those two methods; nothing else of the package may do this).
SANCTIONED = {("steerlab.vector", "steerlab.steering.hooks")}


def _package(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def test_every_package_has_a_level() -> None:
    unknown = sorted({_package(m) for m in MODULES} - set(LEVELS))
    assert not unknown, f"packages without a layout level: {unknown}"


def test_imports_flow_one_way() -> None:
    problems = []
    for name, path in MODULES.items():
        mine = _package(name)
        for target, imported, line in _imports(name, path):
            where = f"{path.relative_to(ROOT.parent)}:{line}"
            if target.split(".")[0] == "tests":
                problems.append(f"{where}: imports the tests tree ({target})")
                continue
            if target == "steerlab":
                if mine != "cli":  # the facade is for users and the CLI, the top
                    problems.append(f"{where}: imports the steerlab facade (import the module)")
                continue
            theirs = _package(target)
            if theirs == mine or (name, target) in SANCTIONED:
                continue
            if theirs not in LEVELS:
                problems.append(f"{where}: imports unknown {target}")
            elif LEVELS[theirs] >= LEVELS[mine]:
                kind = "a sibling" if LEVELS[theirs] == LEVELS[mine] else "upward"
                problems.append(f"{where}: {mine} imports {kind} package {theirs} ({target})")
            if imported.startswith("_") and not imported.startswith("__"):
                problems.append(f"{where}: imports private {target}.{imported} across packages")
    assert not problems, "\n".join(problems)


def test_no_import_cycles() -> None:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        for target, _, _ in _imports(name, path):
            if target in MODULES and target != name and not name.startswith(target + ".") \
                    and (name, target) not in SANCTIONED:
                edges[name].add(target)
    cycles: set[str] = set()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):]
                k = cycle.index(min(cycle))
                cycles.add(" -> ".join(cycle[k:] + cycle[:k] + [min(cycle)]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))


@pytest.mark.parametrize("forbidden", ["steerlab.cli"])
def test_nothing_below_the_cli_imports_it(forbidden: str) -> None:
    users = [name for name, path in MODULES.items() if not name.startswith(forbidden)
             and any(t.startswith(forbidden) for t, _, _ in _imports(name, path))]
    assert not users, f"{forbidden} imported by {users}"

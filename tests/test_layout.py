"""The layout keeps its promises (docs/architecture.md): no import cycle in ``archsearch/``, the
core reaches the built-in plugins only through the plugin manager, and every module and function
fits on a few screens. Each check is run on a small made-up package first, so that it is shown
to catch what it is for."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "archsearch"
#: The limits docs/architecture.md states.
MODULE_LINES = 450
FUNCTION_LINES = 60
#: The one core module allowed to import ``archsearch.plugins``: it lists the built-ins.
PLUGIN_LISTER = "archsearch.plugin.manager"


def modules(root: Path, package: str) -> dict[str, Path]:
    """Every module under ``root`` by dotted name (a package by its ``__init__``)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join([package, *parts])] = path
    return out


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The modules ``path`` imports, at module level or inside functions (an import inside a
    function is still a dependency), less those only under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package
                anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return found


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    mods = modules(root, package)
    known = set(mods)
    return {
        name: {m for m in imports(path, name, known) if m in known and m != name}
        for name, path in mods.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def plugin_imports(root: Path, package: str) -> list[str]:
    """Core modules that import the built-in plugins (``{package}.plugins``) other than the lister."""
    mods = modules(root, package)
    out = []
    for name, path in mods.items():
        if name == PLUGIN_LISTER.replace("archsearch", package, 1):
            continue
        for target in imports(path, name, set(mods)):
            if target == f"{package}.plugins" or target.startswith(f"{package}.plugins."):
                out.append(f"{name} imports {target}")
    return out


def oversized(root: Path, package: str) -> list[str]:
    """Modules over MODULE_LINES lines and functions over FUNCTION_LINES lines."""
    out = []
    for name, path in modules(root, package).items():
        text = path.read_text()
        n = len(text.splitlines())
        if n > MODULE_LINES:
            out.append(f"{name}: {n} lines (limit {MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > FUNCTION_LINES:
                    out.append(
                        f"{name}:{node.lineno} {node.name}() is {length} lines (limit {FUNCTION_LINES})"
                    )
    return out


# -- the checks catch what they are for ----------------------------------------------------------
@pytest.fixture
def bad_package(tmp_path: Path) -> Path:
    root = tmp_path / "pkg"
    (root / "search").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "search" / "__init__.py").write_text("")
    (root / "search" / "engine.py").write_text("from pkg.search import workers\n")
    (root / "search" / "workers.py").write_text("def run():\n    from pkg.search.engine import Engine\n")
    (root / "report.py").write_text("from pkg.plugins.sinks import CSV_NAME\n" + "x = 1\n" * MODULE_LINES)
    (root / "typed.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.report import x\n"
        "def long():\n" + "    y = 1\n" * FUNCTION_LINES
    )
    return root


def test_the_checks_find_a_cycle_a_plugin_import_and_oversized_code(bad_package: Path) -> None:
    graph = import_graph(bad_package, "pkg")
    assert cycles(graph) == [["pkg.search.engine", "pkg.search.workers"]]
    assert "pkg.report" not in graph["pkg.typed"], "TYPE_CHECKING imports are not dependencies"
    assert plugin_imports(bad_package, "pkg") == ["pkg.report imports pkg.plugins.sinks"]
    found = oversized(bad_package, "pkg")
    assert any(f.startswith("pkg.report: 451 lines") for f in found)
    assert any("long() is 61 lines" in f for f in found)


# -- archsearch keeps them -----------------------------------------------------------------------
def test_no_import_cycle_in_archsearch() -> None:
    graph = import_graph(PACKAGE, "archsearch")
    assert len(graph) > 40, "the walk found the package's modules"
    assert "archsearch.search.workers" in graph["archsearch.search.engine"]
    assert cycles(graph) == []


def test_the_core_reaches_plugins_only_through_the_manager() -> None:
    assert plugin_imports(PACKAGE, "archsearch") == []
    lister = modules(PACKAGE, "archsearch")[PLUGIN_LISTER]
    assert "archsearch.plugins" in imports(lister, PLUGIN_LISTER, set()), "the manager lists the built-ins"


def test_modules_and_functions_fit_on_a_few_screens() -> None:
    assert oversized(PACKAGE, "archsearch") == []


def test_docs_name_every_module() -> None:
    """docs/architecture.md names each subpackage and each module, so a new room is described
    where a newcomer looks."""
    import re

    text = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    missing = []
    for name, path in modules(PACKAGE, "archsearch").items():
        parts = name.split(".")[1:]
        if not parts or parts[0] == "bench" or parts[-1].startswith("_"):
            continue
        if len(parts) == 2 and f"{parts[0]}/" not in text:
            missing.append(name)
        if path.name != "__init__.py" and not re.search(rf"\b{parts[-1]}\b", text):
            missing.append(name)
    assert missing == []

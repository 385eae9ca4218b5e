"""The house rules that a reader can check mechanically: no import circle among spool's
modules at import time, and no module over ~400 lines (docs/architecture.md)."""
from __future__ import annotations

import ast
from pathlib import Path

SPOOL = Path(__file__).resolve().parent.parent / "spool"
MAX_LINES = 400
# Modules allowed over MAX_LINES, each with its reason (keep this short).
OVER_LIMIT: dict[str, str] = {}


def _modules() -> dict[str, Path]:
    out = {}
    for path in SPOOL.rglob("*.py"):
        parts = list(path.relative_to(SPOOL.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _top_level_imports(tree: ast.Module) -> list[ast.stmt]:
    """Import statements run at import time: the module body, try/if blocks at top level,
    but not ``if TYPE_CHECKING:`` blocks nor function bodies."""
    out: list[ast.stmt] = []
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        elif isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                todo.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            todo.extend(node.body + node.orelse + node.finalbody)
            for h in node.handlers:
                todo.extend(h.body)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = graph.setdefault(name, set())
        for node in _top_level_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    base_name = ".".join(base + ([node.module] if node.module else []))
                else:
                    base_name = node.module or ""
                subs = [f"{base_name}.{a.name}" for a in node.names]
                targets = [s for s in subs if s in mods] or [base_name]
            edges.update(t for t in targets if t in mods and t != name)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_import_circle_among_spool_modules():
    graph = import_graph()
    assert "spool.aggregate.passes" in graph and graph["spool.cli"], "the graph was not read"
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_over_the_limit():
    over = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    over = {n: k for n, k in over.items() if k > MAX_LINES and n not in OVER_LIMIT}
    assert over == {}, f"split these (one noun per module) or list them in OVER_LIMIT: {over}"


def test_every_package_is_installed_by_pip_install():
    """pyproject lists its packages by hand (migrations/ ships as spool._migrations): a
    package missing there works in an editable install and is absent from `pip install .`."""
    import tomllib

    listed = set(tomllib.loads((SPOOL.parent / "pyproject.toml").read_text())
                 ["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(SPOOL.parent).parts) for p in SPOOL.rglob("__init__.py")}
    assert found and found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"


def test_no_test_module_imports_another():
    """Shared helpers live in tests/support/ (fixtures in conftest.py), never in a test module."""
    tests = SPOOL.parent / "tests"
    names = {p.stem for p in tests.glob("test_*.py")}
    bad = []
    for path in tests.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{path.name}: {m}" for m in mods if m.split(".")[0] in names]
    assert names and bad == [], bad

"""The package's modules import each other downwards only: no import cycle, lazy imports included."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "autohdr_cli"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every package module ``path`` imports, at the top or inside functions (not under TYPE_CHECKING)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    skipped = {id(n) for node in ast.walk(ast.parse(path.read_text())) if _is_type_checking_block(node)
               for n in ast.walk(node)}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and id(node) not in skipped:
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = f"{base}.{node.module}" if node.level and node.module else (node.module or base)
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
            found |= {c for c in candidates if c in modules}
        elif isinstance(node, ast.Import) and id(node) not in skipped:
            found |= {alias.name for alias in node.names if alias.name in modules}
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _imports(p, modules) for p in paths}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for child in sorted(graph.get(node, ())):
            if state.get(child) == 1:
                return stack[stack.index(child):] + [child]
            if child not in state and (found := visit(child)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles_in_the_package():
    graph = _graph()
    assert "autohdr_cli.tiling" in graph["autohdr_cli.inference"]  # the walk does see imports
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_pipeline_sits_above_both_enhancers():
    graph = _graph()
    below = {"autohdr_cli.enhancer", "autohdr_cli.table_enhancer", "autohdr_cli.inference", "autohdr_cli.tiling"}
    for module in below:
        assert "autohdr_cli.pipeline" not in graph[module], module
    assert "autohdr_cli.table_enhancer" not in graph["autohdr_cli.enhancer"]
    assert "autohdr_cli.inference" not in graph["autohdr_cli.enhancer"]

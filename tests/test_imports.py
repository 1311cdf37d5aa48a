"""sfv's import graph is acyclic: every `import` of an sfv module, at module level or inside a function,
is an edge, and no module reaches itself. (The package root `sfv/__init__.py` is left out: it only
re-exports public classes lazily, PEP 562, and implements nothing.)"""

import ast
from pathlib import Path

SFV = Path(__file__).resolve().parents[1] / "sfv"


def module_name(path: Path) -> str:
    parts = path.relative_to(SFV.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in SFV.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from . import x / from .x import y
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                # `from pkg import sub` imports the submodule pkg.sub when there is one
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:  # `import sfv.x.y` names the module sfv.x.y or a parent
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    graph.pop("sfv")
    for edges in graph.values():
        edges.discard("sfv")
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a list of modules (first == last), or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_detects_a_cycle_and_accepts_a_dag():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_graph_sees_function_level_imports():
    graph = import_graph()
    assert "sfv.train" in graph["sfv.cli"]  # cmd_distill imports it inside the function
    assert "sfv.errors" in graph["sfv.console"]


def test_sfv_import_graph_is_acyclic():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module `start` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_monitor_only_observes():
    """The monitor writes logs and samples; exporting the student is the trainer's. It reaches neither the pipeline
    nor the export, not even through another module."""
    graph = import_graph()
    assert reachable(graph, "sfv.monitor").isdisjoint({"sfv.pipeline", "sfv.export"})
    assert reachable({"a": {"b"}, "b": {"c"}}, "a") == {"b", "c"}  # the walk follows arrows through modules

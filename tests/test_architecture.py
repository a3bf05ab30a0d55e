"""The package's shape: short functions, no import cycles, a numpy-only core.

Read from the source with :mod:`ast` (nothing of flmi is imported, except in
the fresh interpreter of the last test), so a violation is named by file,
function or module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "flmi"
MAX_FUNCTION_LINES = 80


def _is_generated(path: Path) -> bool:
    """Protobuf and gRPC stubs written by ``grpc_tools.protoc``."""
    return "_pb2" in path.name


def _sources() -> dict[str, Path]:
    """Every hand-written module of flmi by dotted name (a package by its ``__init__``)."""
    modules: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if _is_generated(path):
            continue
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def long_functions(sources: Mapping[str, Path], *, limit: int) -> list[str]:
    """``file:name:lines`` for every function or method longer than ``limit`` lines."""
    found = []
    for path in sources.values():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(REPO)}:{node.name}:{lines}")
    return found


def _runtime_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at module level or in a function, that runs.

    Imports under ``if TYPE_CHECKING:`` are left out: they never execute, so
    they cannot close a cycle.
    """
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(
    node: ast.Import | ast.ImportFrom, *, module: str, is_package: bool, known: set[str]
) -> set[str]:
    """The flmi modules an import statement in ``module`` loads.

    ``import a.b`` and ``from a.b import c`` load ``a.b``; when ``c`` is itself a
    submodule the edge goes to ``a.b.c`` instead. Relative imports are resolved
    against ``module``'s package.
    """
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in known}
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        base_parts = package[: len(package) - (node.level - 1)]
        base = ".".join([*base_parts, *([node.module] if node.module else [])])
    else:
        base = node.module or ""
    targets: set[str] = set()
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        if submodule in known:
            targets.add(submodule)
        elif base in known:
            targets.add(base)
    return targets


def import_graph(sources: Mapping[str, Path]) -> dict[str, set[str]]:
    """Which flmi modules each flmi module imports, at any depth of its code."""
    known = set(sources)
    graph: dict[str, set[str]] = {}
    for module, path in sources.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges: set[str] = set()
        for node in _runtime_imports(tree):
            edges |= _imported(
                node, module=module, is_package=path.name == "__init__.py", known=known
            )
        graph[module] = edges - {module}
    return graph


def import_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle through each group of modules that import one another, shortest first.

    The groups are the strongly connected components (Tarjan); each is shown
    as a shortest path from its first module back to itself.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = [_shortest_cycle(graph, sorted(c)) for c in components]
    return sorted(cycles, key=lambda c: (len(c), c))


def _shortest_cycle(graph: Mapping[str, set[str]], component: list[str]) -> list[str]:
    """A shortest path ``start -> ... -> start`` inside ``component`` (breadth first)."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"{component} is not strongly connected")


def test_the_cycle_finder_reports_a_planted_circle_and_nothing_in_a_tree() -> None:
    # Arrange: a -> b -> c -> a is a circle; d hangs off it without closing another.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}

    # Act / Assert
    assert import_cycles(graph) == [["a", "b", "c", "a"]]
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_imports_are_resolved_to_submodules_relative_imports_and_function_bodies() -> None:
    # Arrange: `from flmi.x import y` names submodule y; `from . import z` inside a function.
    known = {"flmi", "flmi.x", "flmi.x.y", "flmi.x.z", "flmi.w"}
    tree = ast.parse(
        "from flmi.x import y, helper\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    import flmi.w\n"
        "def f():\n"
        "    from . import z\n"
    )

    # Act
    edges = set()
    for node in _runtime_imports(tree):
        edges |= _imported(node, module="flmi.x.y", is_package=False, known=known)

    # Assert: y is a submodule, helper an attribute of flmi.x; the TYPE_CHECKING import is out.
    assert edges == {"flmi.x.y", "flmi.x", "flmi.x.z"}


def test_no_function_in_flmi_is_longer_than_80_lines() -> None:
    # Arrange / Act
    offenders = long_functions(_sources(), limit=MAX_FUNCTION_LINES)

    # Assert
    assert not offenders, (
        f"functions over {MAX_FUNCTION_LINES} lines (file:name:lines), split them:\n"
        + "\n".join(offenders)
    )


def test_flmi_modules_import_one_another_without_cycles() -> None:
    # Arrange / Act
    cycles = import_cycles(import_graph(_sources()))

    # Assert
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_importing_flmi_core_loads_neither_torch_nor_the_config() -> None:
    # Arrange: a fresh interpreter, so nothing this test session imported counts.
    probe = (
        "import sys, flmi.core, flmi.core.federation, flmi.core.messages, flmi.core.params;"
        "print(sorted(m for m in ('torch', 'flmi.config') if m in sys.modules))"
    )

    # Act
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )

    # Assert
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def import_path(graph: Mapping[str, set[str]], *, start: str, goal: str) -> list[str] | None:
    """A shortest chain of imports ``start -> ... -> goal``, or ``None`` when there is none."""
    previous: dict[str, str] = {start: start}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph.get(v, ())):
                if w in previous:
                    continue
                previous[w] = v
                if w == goal:
                    path = [w]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return list(reversed(path))
                following.append(w)
        frontier = following
    return None


def test_the_path_finder_follows_imports_at_any_depth_and_reports_none_without_one() -> None:
    # Arrange: a reaches d through b and c; d imports nothing back.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"d", "a"}, "d": set()}

    # Act / Assert
    assert import_path(graph, start="a", goal="d") == ["a", "b", "c", "d"]
    assert import_path(graph, start="d", goal="a") is None


def test_the_grpc_server_does_not_load_the_simulator() -> None:
    # Arrange: every import, function bodies included, of every flmi module.
    graph = import_graph(_sources())

    # Act
    path = import_path(graph, start="flmi.runtime.grpc.server", goal="flmi.simulation")

    # Assert: `flmi server` builds its strategy from flmi.wiring, not the simulator.
    assert path is None, "flmi server loads the simulator: " + " -> ".join(path or [])

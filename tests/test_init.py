from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import vsrtel


def test_all_lists_every_public_name_and_each_has_a_docstring() -> None:
    public = {n for n in vars(vsrtel) if not n.startswith("_")} - {"annotations"}
    modules = {n for n in public if inspect.ismodule(getattr(vsrtel, n))}
    assert set(vsrtel.__all__) == (public - modules) | {"__version__"}
    for name in vsrtel.__all__:
        obj = getattr(vsrtel, name)
        if callable(obj):
            assert inspect.getdoc(obj), name


def test_importing_vsrtel_does_not_import_handlers_or_opentelemetry() -> None:
    heavy = ("opentelemetry", "structlog", "vsrtel.handlers")
    code = f"import sys, vsrtel; print(sorted(m for m in sys.modules if m.startswith({heavy})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_importing_vsrtel_loads_neither_blinker_nor_inspect_logging_or_traceback() -> None:
    # Each loads where first needed: blinker (and inspect) at the first attach, logging and
    # traceback on the first failure. Run with -S, so that no .pth file of the environment
    # loads them first; vsrtel is found where this test's own import found it.
    lazy = ("blinker", "inspect", "logging", "traceback")
    path = [str(PACKAGE.parent), *sys.path]
    code = (
        f"import sys; sys.path[:0] = {path!r}; import vsrtel; "
        f"print(sorted(m for m in {lazy!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# -- no import cycle among vsrtel's modules -----------------------------------------------------

PACKAGE = Path(vsrtel.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_level_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """The imports a module runs when it loads, ``if TYPE_CHECKING:`` ones included (a cycle
    there is one for the type checker and the reader); not those inside functions, which run
    once both modules are loaded (``vsrtel.debug`` imports the logs handler so)."""
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    """Each vsrtel module -> the vsrtel modules it imports (``from vsrtel import metrics``
    imports both the package and the submodule)."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        edges = graph.setdefault(name, set())
        for node in _module_level_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                assert node.level == 0 and node.module, f"{path}: a relative import"
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            edges.update(t for t in targets if t in paths and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as a path that ends where it starts, or None."""
    done: set[str] = set()

    def walk(path: list[str]) -> list[str] | None:
        for target in sorted(graph[path[-1]]):
            if target in path:
                return [*path[path.index(target):], target]
            if target not in done:
                cycle = walk([*path, target])
                if cycle:
                    return cycle
        done.add(path[-1])
        return None

    for start in sorted(graph):
        cycle = None if start in done else walk([start])
        if cycle:
            return cycle
    return None


def test_no_vsrtel_module_imports_itself_through_others() -> None:
    graph = import_graph()
    assert find_cycle(graph) is None
    assert "vsrtel._span" in graph["vsrtel._registry"]  # the check sees the imports it must
    assert "vsrtel.handlers.logs" not in graph["vsrtel"]  # and only those run at load time


def test_the_cycle_check_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None

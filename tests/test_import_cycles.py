"""No import cycle anywhere in the tfmtnas package.

A static walk (``ast``, nothing is imported) of every ``import`` and ``from ... import``
statement of every module, at module level and inside functions, classes and
``if TYPE_CHECKING:`` blocks alike: an import inside a function is still a dependency, and
a cycle hidden by one is still a cycle.

Edges: ``import a.b.c`` and ``from a.b import c`` (``c`` a submodule) lead to ``a.b.c``;
``from a.b import name`` leads to ``a.b``. Importing a module also runs the ``__init__`` of
each package above it, so those packages are targets too, except the packages that contain
the importing module (Python has initialised them before the module runs). An explicit
import of such a package (``from tfmtnas.export import x`` inside ``tfmtnas.export``, ``x``
not a submodule) is an edge like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "tfmtnas"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE


def module_files(package_dir: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file below ``package_dir``."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = (package, *path.relative_to(package_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _resolve_relative(importer: str, is_package: bool, module: str | None, level: int) -> str:
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    if level > 1:
        base = base[:len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _statement_targets(node: ast.AST, importer: str, is_package: bool,
                       modules: dict[str, Path]) -> list[str]:
    """The package modules one import statement names (before adding parent packages)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    source = (_resolve_relative(importer, is_package, node.module, node.level)
              if node.level else node.module)
    targets = []
    for alias in node.names:
        submodule = f"{source}.{alias.name}"
        targets.append(submodule if submodule in modules else source)
    return targets


def import_graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """``{importer: {imported module: line of the first import statement}}``."""
    graph: dict[str, dict[str, int]] = {}
    for importer, path in modules.items():
        is_package = path.name == "__init__.py"
        own_packages = set(_ancestors(importer)) | ({importer} if is_package else set())
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            for target in _statement_targets(node, importer, is_package, modules):
                implied = [a for a in _ancestors(target) if a not in own_packages]
                for name in (*implied, target):
                    # ``import a.b`` of a missing module still runs the packages above it.
                    while name and name not in modules:
                        name = name.rpartition(".")[0]
                    if name and name != importer:
                        edges.setdefault(name, node.lineno)
        graph[importer] = edges
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component that has one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan; the package is small enough for recursion
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                connect(w)
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
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_cycle_in(sorted(component), graph) for component in components]


def _cycle_in(component: list[str], graph: dict[str, dict[str, int]]) -> list[str]:
    """A shortest cycle through the first module of a strongly connected component."""
    start, members = component[0], set(component)
    previous = {start: None}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    path = [v]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if w in members and w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"{component} is not strongly connected")


def describe(cycle: list[str], graph: dict[str, dict[str, int]],
             modules: dict[str, Path]) -> str:
    steps = [f"{a} ({modules[a].name}:{graph[a][b]}) -> {b}" for a, b in zip(cycle, cycle[1:])]
    return "; ".join(steps)


def test_the_package_has_no_import_cycle():
    modules = module_files(PACKAGE_DIR, PACKAGE)
    assert f"{PACKAGE}.export.saved_model" in modules  # the walk found the package
    graph = import_graph(modules)
    cycles = find_cycles(graph)
    assert not cycles, "Import cycles:\n" + "\n".join(describe(c, graph, modules)
                                                     for c in cycles)


def test_export_metadata_is_its_own_module():
    # The request helpers read an export's metadata without the exporter (which writes
    # warm-up requests through them).
    graph = import_graph(module_files(PACKAGE_DIR, PACKAGE))
    client, saved_model = f"{PACKAGE}.export.client", f"{PACKAGE}.export.saved_model"
    metadata = f"{PACKAGE}.export.metadata"
    assert saved_model not in graph[client]
    assert metadata in graph[client] and metadata in graph[saved_model]
    assert not {client, saved_model} & set(graph[metadata])


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    package_dir = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/sub/__init__.py": "from pkg.sub.a import f\n",
        "pkg/sub/a.py": "from . import b\n\ndef f():\n    return b.g()\n",
        "pkg/sub/b.py": "def g():\n    from pkg.sub.a import f\n    return f\n",
        "pkg/c.py": "import pkg.sub.a\n",
    })
    modules = module_files(package_dir, "pkg")
    graph = import_graph(modules)
    assert graph["pkg.sub.a"] == {"pkg.sub.b": 1}
    assert graph["pkg.sub.b"] == {"pkg.sub.a": 2}
    assert graph["pkg.c"] == {"pkg.sub": 1, "pkg.sub.a": 1}
    cycles = find_cycles(graph)
    assert cycles == [["pkg.sub.a", "pkg.sub.b", "pkg.sub.a"]]
    assert describe(cycles[0], graph, modules) == (
        "pkg.sub.a (a.py:1) -> pkg.sub.b; pkg.sub.b (b.py:2) -> pkg.sub.a")


def test_parent_packages_of_a_target_are_edges_outside_the_importer_package(tmp_path):
    # pkg.x's __init__ imports pkg.y, which imports a submodule of pkg.x: running pkg.y
    # first would run pkg.x's __init__, which imports pkg.y again.
    package_dir = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/x/__init__.py": "from pkg.y import h\n",
        "pkg/x/leaf.py": "VALUE = 1\n",
        "pkg/y.py": "from pkg.x.leaf import VALUE\n\ndef h():\n    return VALUE\n",
    })
    graph = import_graph(module_files(package_dir, "pkg"))
    assert graph["pkg.y"] == {"pkg.x": 1, "pkg.x.leaf": 1}
    assert find_cycles(graph) == [["pkg.x", "pkg.y", "pkg.x"]]


def test_siblings_and_own_package_names_are_not_cycles(tmp_path):
    package_dir = _write(tmp_path, {
        "pkg/__init__.py": "from pkg.a import A\nfrom pkg.b import B\n",
        "pkg/a.py": "A = 1\n",
        "pkg/b.py": "from pkg.a import A\nfrom .a import A as A2\nimport pkg.a\nB = A\n",
    })
    graph = import_graph(module_files(package_dir, "pkg"))
    assert graph["pkg.b"] == {"pkg.a": 1}
    assert find_cycles(graph) == []
    # ...but importing a name the own package's __init__ defines is a cycle.
    (package_dir / "a.py").write_text("from pkg import B\nA = 1\n")
    assert find_cycles(import_graph(module_files(package_dir, "pkg"))) == [
        ["pkg", "pkg.a", "pkg"]]

"""The import graph of ``ww_callbacks`` and ``ww_callbacks.integrations``, read from the sources
(AST, nothing imported), and the rules it must follow (checked by ``test_import_graph.py``).

Every ``import`` statement counts, at module level and inside functions alike (a function-level
import is still an edge: it runs the first time the function does, and a circle through it is a
circle). The only exceptions are listed in :data:`ALLOWED`, each with its reason. Imports under
``if TYPE_CHECKING:`` never run and are left out.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Source folder -> the package it is installed as.
PACKAGES = {"ww_callbacks": "ww_callbacks", "integrations": "ww_callbacks.integrations"}

#: The engine: weights in, metrics out. It imports nothing of the watch session, the pictures,
#: the report, the distributed layer or the integrations (what sits above it).
ENGINE = ("ww_callbacks.arrays", "ww_callbacks.layers", "ww_callbacks.matrices",
          "ww_callbacks.spectra", "ww_callbacks.spectra_torch", "ww_callbacks.powerlaw",
          "ww_callbacks.metrics", "ww_callbacks.mp_fit", "ww_callbacks.analysis")
#: What the engine (and every module it imports: its helpers) must not reach.
ABOVE_ENGINE = ("ww_callbacks.session", "ww_callbacks.watcher", "ww_callbacks.worker",
                "ww_callbacks.distributed", "ww_callbacks.picture_queue", "ww_callbacks.figures",
                "ww_callbacks.dashboard", "ww_callbacks.report", "ww_callbacks.integrations",
                "ww_callbacks.front_door")
INTEGRATIONS = "ww_callbacks.integrations"

#: Edges the rules let through, each with its reason: ``(importer, imported): reason``.
ALLOWED: dict[tuple[str, str], str] = {
    ("ww_callbacks.layers.composite", "ww_callbacks.snapshot"):
        "deprecated path kept working: `from ww_callbacks.layers.composite import FrozenCopies` "
        "(the snapshot's cache of frozen parts, moved to the copier that owns it) through the "
        "module's __getattr__, only when that name is asked for",
    ("ww_callbacks.analysis", "ww_callbacks.session.host_copies"):
        "deprecated path kept working: `from ww_callbacks.analysis import InitialBase` (the "
        "session's copies of a run's first weights, moved out of the engine) through the "
        "module's __getattr__, only when that name is asked for",
    ("ww_callbacks.analysis", "ww_callbacks.front_door"):
        "compatibility: `from ww_callbacks.analysis import analyze` (an old public path) gives "
        "the front door, through the module's __getattr__, only when that name is asked for",
    ("ww_callbacks.policies.torch_target", "ww_callbacks.integrations.torch_target"):
        "deprecated path kept working: a lazy re-export (module __getattr__) of the class that "
        "moved to the integration; nothing of the core imports it",
    ("ww_callbacks.policies.keras_target", "ww_callbacks.integrations.keras_target"):
        "deprecated path kept working: a lazy re-export (module __getattr__) of the class that "
        "moved to the integration; nothing of the core imports it",
    ("ww_callbacks.policies", "ww_callbacks.integrations.torch_target"):
        "the documented front door `from ww_callbacks.policies import TorchTarget`: a lazy "
        "re-export (module __getattr__) of the integration's class, run only when asked for",
    ("ww_callbacks.policies", "ww_callbacks.integrations.keras_target"):
        "the documented front door `from ww_callbacks.policies import KerasTarget`: a lazy "
        "re-export (module __getattr__) of the integration's class, run only when asked for",
}


@dataclass(frozen=True)
class Edge:
    """``importer`` imports ``imported`` at ``path:line`` (``in_function``: inside a def)."""

    importer: str
    imported: str
    path: str
    line: int
    in_function: bool

    def __str__(self) -> str:
        where = "function-level" if self.in_function else "module-level"
        return f"{self.importer} -> {self.imported} ({where}, {self.path}:{self.line})"


def modules(root: Path = ROOT) -> dict[str, tuple[Path, bool]]:
    """Every module of the two packages: dotted name -> (file, is a package ``__init__``)."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            found[".".join([package, *parts])] = (path, is_package)
    return found


def _targets(module: str, is_package: bool, node: ast.AST, known: set[str]) -> list[str]:
    """The modules of ours that one import statement loads (a name imported from a package is
    the package itself, unless it is a submodule)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        source = f"{base}.{node.module}" if node.module else base
    else:
        source = node.module or ""
    out = []
    for alias in node.names:
        sub = f"{source}.{alias.name}"
        out.append(sub if sub in known else source)
    return out


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def edges(root: Path = ROOT) -> list[Edge]:
    """Every import edge between our modules."""
    known = modules(root)
    names = set(known)
    out: list[Edge] = []
    for module, (path, is_package) in known.items():
        rel = str(path.relative_to(root))
        for node, in_function in _imports(ast.parse(path.read_text()), False):
            for target in _targets(module, is_package, node, names):
                edge = Edge(module, target, rel, node.lineno, in_function)
                if target in names and target != module and edge not in out:
                    out.append(edge)
    return out


def _imports(node: ast.AST, in_function: bool) -> Iterator[tuple[ast.AST, bool]]:
    """Every import statement under ``node`` (none under ``if TYPE_CHECKING:``), and whether
    it sits inside a function."""
    for child in ast.iter_child_nodes(node):
        if _is_type_checking(child):
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, in_function
        yield from _imports(child, in_function or isinstance(
            child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))


def _under(name: str, prefixes: tuple[str, ...] | str) -> bool:
    prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _graph(all_edges: list[Edge]) -> dict[str, list[Edge]]:
    graph: dict[str, list[Edge]] = {}
    for edge in all_edges:
        if (edge.importer, edge.imported) not in ALLOWED:
            graph.setdefault(edge.importer, []).append(edge)
    return graph


def engine_violations(all_edges: list[Edge]) -> list[str]:
    """A chain of imports from an engine module to a module above it, for each one reached."""
    graph = _graph(all_edges)
    problems = []
    for start in sorted({e.importer for e in all_edges if _under(e.importer, ENGINE)}):
        seen = {start: None}
        queue = [start]
        while queue:
            current = queue.pop(0)
            for edge in graph.get(current, ()):
                if edge.imported in seen:
                    continue
                seen[edge.imported] = edge
                if _under(edge.imported, ABOVE_ENGINE):
                    chain, step = [], edge
                    while step is not None:
                        chain.append(str(step))
                        step = seen[step.importer]
                    problems.append(f"the engine module {start} reaches {edge.imported}: "
                                    + "; ".join(reversed(chain)))
                else:
                    queue.append(edge.imported)
    return problems


def core_to_integrations(all_edges: list[Edge]) -> list[str]:
    """Edges from the core (``ww_callbacks.*`` outside the integrations) into an integration."""
    return [f"the core imports an integration: {e}" for e in all_edges
            if not _under(e.importer, INTEGRATIONS) and _under(e.imported, INTEGRATIONS)
            and (e.importer, e.imported) not in ALLOWED]


def cycles(all_edges: list[Edge]) -> list[str]:
    """Each import circle (a strongly connected set of modules), with the edges that close it."""
    graph = _graph(all_edges)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for edge in graph.get(node, ()):
            nxt = edge.imported
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    problems = []
    for component in components:
        inside = [str(e) for m in component for e in graph.get(m, ())
                  if e.imported in component]
        problems.append(f"import circle among {', '.join(component)}: " + "; ".join(inside))
    return problems


def violations(root: Path = ROOT) -> list[str]:
    """Every broken rule of the import graph under ``root`` (empty: the graph is one-way)."""
    all_edges = edges(root)
    return engine_violations(all_edges) + core_to_integrations(all_edges) + cycles(all_edges)


if __name__ == "__main__":  # python tests/import_graph.py: the problems, one a line
    for problem in violations():
        print(problem)

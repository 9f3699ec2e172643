"""The shape of the code: no import cycles in ``src/``, and layers import only downward
(storage < fs < client < wasi, sandbox < integrations, server < cli; docs/design.md).

Imports are read from the source with ``ast``, at any depth (a function-level import
is still a dependency); imports under ``if TYPE_CHECKING:`` are left out, as they
never run. ``from package import module`` depends on that module, not on the
package's ``__init__``."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).parents[1] / "src"

# the layers beside each other above the client (WASI runs, native runs)
ON_THE_CLIENT = {
    "tarbox.errors",
    "tarbox.names",
    "tarbox.storage",
    "tarbox.fs",
    "tarbox.client",
    "tarbox.runs",
    "tarbox",
}
# a module may import from its own layer and the ones listed after its name
LAYERS = {
    "tarbox.storage": {"tarbox.errors"},
    "tarbox.fs": {"tarbox.errors", "tarbox.names", "tarbox.storage"},
    "tarbox.wasi": ON_THE_CLIENT,
    "tarbox.sandbox": ON_THE_CLIENT,
    "tarbox.server": {"*", "-tarbox.cli"},
    "tarbox.integrations": {"*", "-tarbox.cli", "-tarbox.server"},
}


def modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        name = ".".join(p.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


class _Imports(ast.NodeVisitor):
    def __init__(self, package: str, known: dict[str, Path]) -> None:
        self.package, self.known, self.found = package, known, set()

    def visit_If(self, node: ast.If) -> None:
        if "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found.update(a.name for a in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            parts = self.package.split(".")[: len(self.package.split(".")) - node.level + 1]
            base = ".".join(parts + ([base] if base else []))
        subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in self.known]
        self.found.update(subs)
        if len(subs) < len(node.names):
            self.found.add(base)


def graph() -> dict[str, set[str]]:
    known = modules()
    out = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        v = _Imports(package, known)
        v.visit(ast.parse(path.read_text()))
        deps = set()
        for d in v.found:
            while d and d not in known:
                d = d.rpartition(".")[0]
            if d and d != name:
                deps.add(d)
        out[name] = deps
    return out


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _layer(name: str) -> str | None:
    return next((layer for layer in LAYERS if name == layer or name.startswith(layer + ".")), None)


def test_layers_import_only_downward():
    wrong = []
    for name, deps in graph().items():
        layer = _layer(name)
        if layer is None:
            continue
        allowed = LAYERS[layer]
        for d in deps:
            if not d.startswith("tarbox") or _layer(d) == layer:
                continue
            top = _layer(d) or d
            if "*" in allowed:
                if f"-{top}" in allowed:
                    wrong.append(f"{name} -> {d}")
            elif top not in allowed:
                wrong.append(f"{name} -> {d}")
    assert wrong == []


# Reaching into another module's private names (issue 31): ``x._name`` where ``_name``
# is not defined in the module that reads it (a class of its own, a ``self._name =``
# there, a module-level name). None is left: what one part needs of another is a
# public name (the Store's parts declare theirs in fs/shared.py).
# names that are public by convention although they start with an underscore
_PUBLIC_BY_CONVENTION = {"_replace", "_asdict", "_fields", "_make", "_exit", "_getframe", "_current_frames"}
# a library's internals a module relies on by design: its version range is pinned in
# pyproject.toml and the module checks at import that they are what it expects
_LIBRARY_INTERNALS = {"tarbox/wasi/_wasmtime_speedups.py": {"_from_ptr", "_tagged", "_assert_not_locked"}}


def _own_names(tree: ast.AST) -> set[str]:
    names = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(n.name)
        elif isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store):
            if isinstance(n.value, ast.Name) and n.value.id in ("self", "cls"):
                names.add(n.attr)
        elif isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name):
            names.add(n.target.id)
        elif isinstance(n, ast.Assign):
            names.update(t.id for t in n.targets if isinstance(t, ast.Name))
    return names


def private_reaches(source: str, allowed: set[str] = frozenset()) -> list[str]:
    """The private attribute names ``source`` uses that it does not define itself."""
    tree = ast.parse(source)
    own = _own_names(tree) | allowed
    return [
        n.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute)
        and n.attr.startswith("_")
        and not n.attr.startswith("__")
        and n.attr not in own
        and n.attr not in _PUBLIC_BY_CONVENTION
    ]


def test_the_private_reach_check_finds_one():
    mine = "class A:\n    def __init__(self):\n        self._x = 1\n    def f(self, o):\n        return o._x\n"
    assert private_reaches(mine) == []
    assert private_reaches("def f(store):\n    return store._q('x') + store._replace()\n") == ["_q"]


def test_no_module_reaches_into_another_modules_private_names():
    found = {
        name: private_reaches(p.read_text(), _LIBRARY_INTERNALS.get(name, set()))
        for p in sorted((SRC / "tarbox").rglob("*.py"))
        for name in [str(p.relative_to(SRC))]
    }
    total = sum(map(len, found.values()))
    found = {k: sorted(set(v)) for k, v in found.items() if v}
    assert total == 0, f"{total} reaches into other modules' private names: {found}"

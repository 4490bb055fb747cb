"""The floor plan, read from the source: who may import whom (every import, deferred ones too).

* ``tether.runtime`` (event loop, logging, atomic files) imports no other Tether code.
* ``tether.manager.api`` (the manager's API face) imports nothing else of the manager; across the
  helper/manager line only it is imported.
* ``tether.helper.api`` (the helper's API face) imports only itself; ``tether.helper.cluster`` (reaching
  a cluster, for either side) only the API faces.
* The helper's root side (``tether.helper.root``) never imports its user side (``tether.helper.user``).
* The gui imports only the helper's user side and API face, never root-side code or the manager.
* The manager never imports the lab, the helper or the gui; the lab imports of the manager only what it
  runs: the API face (whose sidecar module builds the agent-running pods).
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# folder -> package, as pyproject maps them
FOLDERS = {
    folder: package
    for package, folder in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ].items()
}


def module_name(path: Path) -> str:
    folder, *rest = path.relative_to(ROOT).with_suffix("").parts
    if rest and rest[-1] == "__init__":
        rest.pop()
    return ".".join([FOLDERS[folder], *rest])


def imports_of(path: Path) -> set[str]:
    """Every tether module `path` imports, resolving relative imports and `from package import module`."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m.startswith("tether.") and is_module(m)}


def is_module(dotted: str) -> bool:
    parts = dotted.split(".")
    folder = {v: k for k, v in FOLDERS.items()}.get(".".join(parts[:2]))
    if folder is None:
        return False
    place = ROOT.joinpath(folder, *parts[2:])
    return place.with_suffix(".py").exists() or (place / "__init__.py").exists()


def product_modules() -> dict[str, set[str]]:
    graph = {}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            graph[module_name(path)] = imports_of(path)
    return graph


GRAPH = product_modules()


def inside(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def violations(importers: tuple[str, ...], allowed: tuple[str, ...], within: tuple[str, ...] = ()) -> list[str]:
    """Imports by modules in `importers` of Tether modules outside `allowed` (and outside `within`, the
    importer's own package family)."""
    bad = []
    for module, imported in sorted(GRAPH.items()):
        if not inside(module, *importers):
            continue
        for target in sorted(imported):
            if not inside(target, *allowed, *within):
                bad.append(f"{module} imports {target}")
    return bad


# Each rule: (who, what they may import besides themselves). Besides its own package, everyone may
# import tether.runtime.
RULES = {
    "runtime imports nothing of Tether": (("tether.runtime",), ()),
    "the manager's API face imports only itself": (("tether.manager.api",), ()),
    "the helper's API face imports only itself": (("tether.helper.api",), ("tether.runtime",)),
    "reaching a cluster needs only the API faces": (
        ("tether.helper.cluster",),
        ("tether.helper.api", "tether.manager.api", "tether.runtime"),
    ),
    "the root side never imports the user side, nor manager internals": (
        ("tether.helper.root",),
        ("tether.helper.api", "tether.helper.cluster", "tether.manager.api", "tether.runtime"),
    ),
    "the user side reaches the manager only through its API face": (
        ("tether.helper.user",),
        ("tether.helper.api", "tether.helper.cluster", "tether.manager.api", "tether.runtime", "tether.helper.root"),
    ),
    "the gui imports only the helper's user side and API face": (
        ("tether.gui",),
        ("tether.helper.user", "tether.helper.api", "tether.runtime"),
    ),
    "the manager never imports the lab, the helper or the gui": (("tether.manager",), ("tether.runtime",)),
    "the lab imports of the manager only what it runs": (
        ("tether.lab",),
        ("tether.runtime", "tether.manager.api"),
    ),
}
# Doors the user side may open, each imported only when its command runs: `tether helper start|cleanup`
# run the daemon (as root) in the CLI's own process; `tether lab` loads the optional sandbox cluster.
DOORS = {
    "tether.helper.user.cli.helpercmd": ("tether.helper.root",),
    "tether.helper.user.cli.main": ("tether.lab.cli",),
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_layering(rule):
    importers, allowed = RULES[rule]
    bad = violations(importers, allowed, within=importers)
    bad = [b for b in bad if not through_a_door(*b.split(" imports "))]
    assert not bad, "\n".join(bad)


def through_a_door(module: str, target: str) -> bool:
    return inside(target, *DOORS.get(module, ())) or (target == "tether.lab" and module in DOORS)


def test_the_graph_is_read():
    """The rules above would pass on an empty graph; make sure the walk sees real imports."""
    assert "tether.helper.api.helper_pb2" in GRAPH["tether.helper.user.client"]
    assert "tether.manager.api.framing" in GRAPH["tether.manager.api.mux"] or GRAPH["tether.manager.api.mux"]
    assert any(inside(t, "tether.helper.root") for t in GRAPH["tether.helper.user.cli.helpercmd"])


def test_no_module_cycles():
    """No two modules import each other, directly or around a loop; one hidden behind a deferred or a
    type-checking import still counts."""
    assert not cycles(GRAPH), cycles(GRAPH)


def test_no_package_cycles():
    """No two sibling packages (folders) import each other. A package's own modules and its subpackages
    may (the hub orchestrates its rooms, the rooms use the hub's journal)."""
    edges: dict[str, set[str]] = {}
    for module, imported in GRAPH.items():
        for target in imported:
            a, b = package_of(module), package_of(target)
            if not (inside(a, b) or inside(b, a)):
                edges.setdefault(a, set()).add(b)
    assert not cycles(edges), cycles(edges)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while (top := stack.pop()) != node:
                component.append(top)
            component.append(node)
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycles_are_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def package_of(module: str) -> str:
    parts = module.split(".")
    folder = {v: k for k, v in FOLDERS.items()}[".".join(parts[:2])]
    place = ROOT.joinpath(folder, *parts[2:])
    return module if (place / "__init__.py").exists() else module.rpartition(".")[0]

"""The package's shape: no import cycles, the core never imports a domain, layers point down.

Every import counts, those inside functions and under TYPE_CHECKING too: a lazy import that
closes a cycle is still a cycle for a reader following the code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("embedseg", "domains")

#: The core's layers, lowest first: a module imports only from its own layer or below (see
#: docs/ARCHITECTURE.md). Subpackages are named by their prefix.
CORE_LAYERS = [
    {"embedseg.errors", "embedseg._validation", "embedseg._params", "embedseg.registry", "embedseg._version"},
    {"embedseg.losses", "embedseg.networks", "embedseg.metrics", "embedseg.cluster", "embedseg.distributed", "embedseg.device"},
    {"embedseg.domain", "embedseg.io", "embedseg.plotting", "embedseg.datasets"},
    {"embedseg.inference"},
    {"embedseg.model"},
    {"embedseg.training", "embedseg.trainer", "embedseg.api"},
    {"embedseg.cli", "embedseg.testing", "embedseg"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found[module_name(path)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports anywhere in its code."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # "from . import x" names a submodule when there is one; otherwise the module itself.
            subs = [f"{prefix}.{alias.name}" for alias in node.names if f"{prefix}.{alias.name}" in known]
            targets = subs if subs else [prefix]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
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
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def layer_of(name: str) -> int | None:
    for i, layer in enumerate(CORE_LAYERS):
        for prefix in layer:
            if name == prefix or name.startswith(prefix + "."):
                return i
    return None


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_core_never_imports_a_domain():
    offenders = {m: sorted(t for t in deps if t.startswith("domains")) for m, deps in graph().items() if m.startswith("embedseg")}
    assert {m: d for m, d in offenders.items() if d} == {}


def test_every_core_module_has_a_layer_and_imports_downwards():
    g = graph()
    core = [m for m in g if m.startswith("embedseg")]
    assert [m for m in core if layer_of(m) is None] == []
    upward = [(m, t) for m in core for t in g[m] if t.startswith("embedseg") and layer_of(t) > layer_of(m)]
    assert upward == []


#: the leaf kernels of packages: they import nothing from their own package, so the
#: algorithms build on them and never the reverse.
LEAVES = {
    "embedseg.cluster": ["_distances", "_threads", "_scaling"],
    "embedseg.metrics": ["_assignment", "_labels", "base"],
}


@pytest.mark.parametrize("package", sorted(LEAVES))
def test_leaf_kernels_of_a_package_import_no_siblings(package):
    g = graph()
    leaves = [f"{package}.{name}" for name in LEAVES[package]]
    assert all(m in g for m in leaves)
    offenders = {m: sorted(t for t in g[m] if t.startswith(package + ".")) for m in leaves}
    assert {m: d for m, d in offenders.items() if d} == {}

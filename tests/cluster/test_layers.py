"""The package's structure: each module imports only from its own layer or those below (the
leaf kernels from no sibling at all), so there is no import cycle; and its examples run."""

from __future__ import annotations

import ast
import doctest
import importlib
from pathlib import Path

import pytest

import embedseg.cluster

PACKAGE = Path(embedseg.cluster.__file__).parent

# The layers named in embedseg/cluster/__init__.py, lowest first.
LAYERS = {
    "_distances": 1,
    "_threads": 1,
    "_scaling": 1,
    "_seeding": 2,
    "_lloyd": 3,
    "auto": 4,
    "base": 5,
    "kmeans": 6,
    "gmm": 6,
    "spectral": 6,
    "sklearn_wrapper": 6,
    "__init__": 7,
}
LEAVES = [name for name, layer in LAYERS.items() if layer == 1]


def sibling_imports(name: str) -> set[str]:
    """The modules of embedseg.cluster that module ``name`` imports."""
    tree = ast.parse((PACKAGE / f"{name}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("embedseg.cluster."):
            found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[2] for a in node.names if a.name.startswith("embedseg.cluster."))
    return found


def test_every_module_has_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules == set(LAYERS), f"modules without a layer: {modules - set(LAYERS)}; gone: {set(LAYERS) - modules}"


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_imports_come_from_the_same_layer_or_below(name):
    for imported in sibling_imports(name):
        assert LAYERS[imported] <= LAYERS[name], f"{name} (layer {LAYERS[name]}) imports {imported} (layer {LAYERS[imported]})"


@pytest.mark.parametrize("name", LEAVES)
def test_leaf_kernels_import_no_sibling(name):
    assert sibling_imports(name) == set()


def test_no_import_cycle():
    graph = {name: sibling_imports(name) for name in LAYERS}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join(path + (name,))}"
        if name in done:
            return
        for imported in graph[name]:
            visit(imported, path + (name,))
        done.add(name)

    for name in graph:
        visit(name, ())


@pytest.mark.parametrize("name", sorted(set(LAYERS) - {"__init__"}) + ["__init__"])
def test_examples_run(name):
    module = importlib.import_module("embedseg.cluster" if name == "__init__" else f"embedseg.cluster.{name}")
    assert doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE).failed == 0

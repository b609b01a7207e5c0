"""Imports flow one way: every module of adascale imports only from its own layer,
the layers before it, or the shared leaf modules, counting imports inside functions too.

Order: nn -> data -> models -> training -> scales -> deploy -> validate -> report -> pipeline -> cli.
Placed by this test: ``predictions`` (the PredictionSet file format; it reads data.regimes and
models and scales read it) sits in the data layer. Shared leaves (errors, files, units, runtime,
layout: the run directory's paths, which models, deploy and pipeline all read) import no other adascale module but each
other (``configs`` holds only YAML files). The package root ``adascale`` defines ``__version__`` (importable from anywhere) and
re-exports the public AdaScaleCalculator lazily, a name of the deploy layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import adascale

ORDER = ("nn", "data", "models", "training", "scales", "deploy", "validate", "report", "pipeline", "cli")
PLACED = {"predictions": "data"}
LEAVES = ("errors", "files", "units", "runtime", "layout", "provenance", "configs")
SRC = Path(adascale.__file__).parent
ROOT_LAZY = {"adascale.deploy.calculator", "adascale.deploy.rigid_water"}  # the root's lazy public re-export


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def adascale_imports(path: Path) -> list[tuple[int, str, tuple[str, ...]]]:
    """(line, imported module, names taken from it) of every adascale import in a file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, ()) for alias in node.names if alias.name.split(".")[0] == "adascale"]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            if node.module.split(".")[0] == "adascale":
                found.append((node.lineno, node.module, tuple(alias.name for alias in node.names)))
    return found


def layer(module: str) -> str:
    """A module's layer: its subpackage, its placement, ``leaf`` or ``root``."""
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    head = parts[1]
    if head in LEAVES:
        return "leaf"
    return PLACED.get(head, head)


MODULES = {module_name(path): path for path in sorted(SRC.rglob("*.py"))}


def test_every_module_has_a_layer():
    for module in MODULES:
        assert layer(module) in (*ORDER, "leaf", "root"), f"{module}: place it in a layer (ORDER, PLACED or LEAVES)"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_flow_one_way(module):
    here = layer(module)
    for line, target, names in adascale_imports(MODULES[module]):
        where = f"{MODULES[module].name}:{line}: {module} imports {target}"
        there = layer(target)
        if there == "root":
            assert set(names) <= {"__version__"}, f"{where}: only __version__ comes from the package root"
        elif here == "root":
            assert target in ROOT_LAZY, f"{where}: the package root re-exports only the calculator and RigidWater"
        elif here == "leaf":
            assert there == "leaf", f"{where}: a shared leaf imports only other leaves"
        elif there != "leaf":
            assert ORDER.index(there) <= ORDER.index(here), f"{where}: {here} may not import from {there}"


def test_the_checker_sees_imports_inside_functions(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from adascale.cli import app\n")
    assert adascale_imports(path) == [(2, "adascale.cli", ("app",))]
    assert layer("adascale.cli.run") == "cli" and layer("adascale.predictions") == "data"

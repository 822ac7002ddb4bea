"""No import circles between the project's modules, counting imports inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Optional

from .conftest import ROOT

PACKAGES = ("lit_gpt_mini", "data_modules")


def module_files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Every module of ``packages`` under ``root``: dotted name -> file (a package is its ``__init__.py``)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _target(name: str, modules: dict[str, Path]) -> Optional[str]:
    # The project module an import of ``name`` loads: the longest dotted prefix that is a module of ours.
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the project modules it imports, at module level or inside a function or class (``ast.walk``
    sees every ``import``, wherever it is: a function-level import closes a circle as soon as it runs), or names
    in a string (a module imported by name, through importlib)."""
    modules = module_files(root, packages)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, up level - 1 packages
                    package = _package_of(module, path).split(".")
                    package = package[: len(package) - (node.level - 1)]
                    base = ".".join(package + ([base] if base else []))
                # "from package import submodule" imports the submodule; "from module import name" the module
                names = [f"{base}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in modules:
                names = [node.value]
            for name in names:
                target = _target(name, modules)
                if target is not None and target != module:
                    graph[module].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> Optional[list[str]]:
    """One import circle as ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> Optional[list[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_project_has_no_import_circle():
    graph = import_graph(ROOT)
    assert {"lit_gpt_mini.cli.main", "lit_gpt_mini.lit_module", "lit_gpt_mini.tokenizers", "data_modules.base"} <= set(graph)
    # the graph sees the function-level imports it is meant to check
    assert "lit_gpt_mini.checkpoint" in graph["lit_gpt_mini.lit_module"]
    assert {"lit_gpt_mini.inference.generate", "lit_gpt_mini.inference.serve", "lit_gpt_mini.cli.prepare"} <= graph["lit_gpt_mini.cli.main"]
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_checkpoints_are_read_in_one_place():
    graph = import_graph(ROOT)
    # the LightningModule loads initial weights through checkpoint.py, never through a command's module
    assert not graph["lit_gpt_mini.lit_module"] & {"lit_gpt_mini.inference.export", "lit_gpt_mini.inference.generate", "lit_gpt_mini.cli.main"}
    assert graph["lit_gpt_mini.checkpoint"] <= {"lit_gpt_mini.errors", "lit_gpt_mini.model", "lit_gpt_mini.tokenizers",
                                                "lit_gpt_mini.chat_format"}


# The floors of the house, bottom up: what a module may import is its own floor and the ones below.
FLOORS = {
    "core": 0,  # lit_gpt_mini's top-level modules and tokenizers: model, training, checkpoints, files, formats
    "data_modules": 1,  # the sources build on the core
    "lit_gpt_mini.inference": 1,  # using a trained model
    "lit_gpt_mini.cli": 2,  # the command line runs the rest
}


def floor_of(module: str) -> str:
    for prefix in ("lit_gpt_mini.inference", "lit_gpt_mini.cli", "data_modules"):
        if module == prefix or module.startswith(prefix + "."):
            return prefix
    return "core"


def test_dependencies_go_one_way():
    graph = import_graph(ROOT)
    assert {"lit_gpt_mini.cli.main", "lit_gpt_mini.inference.serve", "lit_gpt_mini.model"} <= set(graph)
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if FLOORS[floor_of(target)] > FLOORS[floor_of(module)]
        or (floor_of(module) != floor_of(target) and FLOORS[floor_of(target)] == FLOORS[floor_of(module)])
    )
    assert upward == [], "imports against the floors: " + ", ".join(upward)
    # in particular, nothing of lit_gpt_mini imports data_modules (the data builds on the package, not the reverse)
    assert not [m for m, targets in graph.items() if m.startswith("lit_gpt_mini") and any(
        t.startswith("data_modules") for t in targets)]


def test_a_circle_closed_by_a_function_level_import_is_found(tmp_path):
    # lit_module -> export (module level) -> generate (relative import) -> lit_module (inside a function)
    package = tmp_path / "lit_gpt_mini"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "lit_module.py").write_text("from lit_gpt_mini.export import import_hf\n")
    (package / "export.py").write_text("from . import generate\n")
    (package / "generate.py").write_text("def load():\n    from lit_gpt_mini.lit_module import GPTModule\n")
    (package / "model.py").write_text("import torch\n")
    (package / "cli.py").write_text("import lit_gpt_mini.export\n")  # into the circle, not part of it
    graph = import_graph(tmp_path, ("lit_gpt_mini",))
    assert graph["lit_gpt_mini.cli"] == {"lit_gpt_mini.export"} and graph["lit_gpt_mini.model"] == set()
    assert find_cycle(graph) == [
        "lit_gpt_mini.export", "lit_gpt_mini.generate", "lit_gpt_mini.lit_module", "lit_gpt_mini.export"
    ]
    (package / "generate.py").write_text("def load():\n    from lit_gpt_mini.model import GPT\n")
    assert find_cycle(import_graph(tmp_path, ("lit_gpt_mini",))) is None

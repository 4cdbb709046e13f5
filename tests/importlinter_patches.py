"""An import-linter contract type: only one package imports the modules of faust and aiokafka
whose attributes it replaces.

import-linter's own ``forbidden`` contract cannot say it: with external packages in the graph,
only their top-level names are there (``faust``, not ``faust.transport.consumer``). This one
takes the internal modules from the graph and reads each one's import statements itself
(:func:`forbidden_imports`), so that ``from faust.transport import consumer`` counts as much as
``import faust.transport.consumer``. Registered in pyproject.toml (``contract_types``);
tests/test_patches.py checks that it fails on such an import.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterable
from pathlib import Path

from grimp import ImportGraph
from importlinter import Contract, ContractCheck, fields, output


def forbidden_imports(source: str, forbidden: Iterable[str]) -> list[tuple[int, str]]:
    """``(line, module)`` for each import in ``source`` of a module in ``forbidden`` or under
    one (``from X import name`` imports ``X`` and maybe ``X.name``: both are looked at)."""
    wanted = tuple(forbidden)

    def hit(name: str) -> bool:
        return any(name == f or name.startswith(f + ".") for f in wanted)

    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        for name in names:
            if hit(name):
                found.append((node.lineno, name))
                break
    return found


class OnlyPatchesImport(Contract):
    """``owner``: the one package (with its submodules) that may import ``patched``."""

    owner = fields.StringField()
    patched = fields.ListField(subfield=fields.StringField())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        roots = tuple(self.session_options["root_packages"])
        owner = str(self.owner)
        broken: list[str] = []
        for module in sorted(graph.modules):
            if module.split(".")[0] not in roots:
                continue  # an external package, squashed
            if module == owner or module.startswith(owner + "."):
                continue
            spec = importlib.util.find_spec(module)
            if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
                continue
            source = Path(spec.origin).read_text(encoding="utf-8")
            for line, name in forbidden_imports(source, self.patched):
                broken.append(f"{module}:{line} imports {name}")
        return ContractCheck(kept=not broken, metadata={"broken": broken})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for line in check.metadata["broken"]:
            output.print_error(line, bold=False)
            output.new_line()
        output.print(f"Only {self.owner} may import the modules it patches.")

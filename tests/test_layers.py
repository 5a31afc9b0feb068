"""The package shows its layers and keeps them: each module imports only from its own layer or
the ones below, there is no import cycle, and nothing on the production path imports the
development tooling."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from kbmigrate.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "lib" / "kbmigrate"
# lowest first: a module may import from its own layer or a lower one
LAYERS = [
    {"kbmigrate", "kbmigrate.errors", "kbmigrate.paths", "kbmigrate.digest"},
    {"kbmigrate.components"},
    {"kbmigrate.conninfo", "kbmigrate.db"},
    {"kbmigrate.engine"},
    {"kbmigrate.checks"},
    {"kbmigrate.backup"},
    {"kbmigrate.runbook", "kbmigrate.cells", "kbmigrate.ipysql"},
    {"kbmigrate.run"},
    {"kbmigrate.dev"},
    {"kbmigrate.cli"},
]


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    for rank, names in enumerate(LAYERS):
        if any(module == n or (n != "kbmigrate" and module.startswith(n + ".")) for n in names):
            return rank
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def _imports() -> dict[str, set[str]]:
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kbmigrate"):
                for alias in node.names:  # "from kbmigrate.engine import plan" imports the module kbmigrate.engine.plan
                    full = f"{node.module}.{alias.name}"
                    graph[name].add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name.startswith("kbmigrate")}
    return graph


def test_every_import_names_a_module_that_exists() -> None:
    """Module moves leave no stale import behind, lazy ones inside functions included."""
    graph = _imports()
    known = set(graph) | {"kbmigrate"}
    stale = [f"{a} -> {b}" for a, targets in graph.items() for b in targets if b not in known]
    assert not stale, ", ".join(sorted(stale))
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "kbmigrate":
                missing = [a.name for a in node.names if f"kbmigrate.{a.name}" not in graph and a.name != "__version__"]
                assert not missing, f"{_module(path)} imports {missing} from kbmigrate, which has no such module"


def test_every_import_goes_to_the_same_layer_or_below() -> None:
    graph = _imports()
    wrong = [f"{a} -> {b}" for a, targets in graph.items() for b in targets
             if b in graph and _layer(b) > _layer(a)]
    assert not wrong, "imports into a higher layer: " + ", ".join(sorted(wrong))
    assert len(graph) > 30  # the walk did find the package


def test_no_import_cycles() -> None:
    graph = _imports()
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt == node or nxt not in graph:
                continue
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(nxt):] + [nxt]))
            if not state.get(nxt):
                visit(nxt, trail + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if not state.get(module):
            visit(module, [module])


def test_the_production_path_does_not_import_the_development_tooling() -> None:
    code = ("import sys, kbmigrate.cli, kbmigrate.run.runner, kbmigrate.runbook, kbmigrate.checks.smoke;"
            "kbmigrate.cli.build_parser();"
            "print(sorted(m for m in sys.modules if m.startswith('kbmigrate.dev')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_cli_offers_the_demos_sizes() -> None:
    from kbmigrate import cli
    from kbmigrate.dev import demo

    assert cli.SIZES == list(demo.SIZES)


def test_the_kernels_api_does_not_import_nbformat() -> None:
    """Every step's kernel imports kbmigrate.runbook first; nbformat (through jsonschema) adds about
    two seconds to each of them, so the kernel's side never imports it (cells.py reads notebooks
    lazily, on the finishing side)."""
    done = subprocess.run([sys.executable, "-c", "import sys, kbmigrate.runbook; print(sorted(m for m in sys.modules "
                           "if m.split('.')[0] in ('nbformat', 'jsonschema', 'nbconvert', 'papermill')))"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout

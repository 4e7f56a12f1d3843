"""The package's house rules, read from the code: no import circle, every import goes down the
layers that ARCHITECTURE.md draws, no module reaches for another's private names, and no module
grows past ~500 lines without saying why at its top.

The layers are parsed from ARCHITECTURE.md's ``layers`` block, so the diagram and the imports
cannot drift apart.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "pypgflow"
#: a module longer than this says at its top why it is not split
MAX_LINES = 520


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path) -> set[str]:
    """The package's modules that ``path`` imports (anywhere in it, type-checking blocks too);
    ``from pypgflow import x`` counts as importing ``pypgflow.x`` when x is a module."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if not node.module.startswith("pypgflow"):
                continue
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("pypgflow"))
    found.discard(module_name(path))
    return found


GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def layers() -> list[tuple[str, list[str]]]:
    """ARCHITECTURE.md's layers, top first: ``(layer, [module prefixes])``."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    match = re.search(r"```text layers\n(.*?)```", text, re.S)
    assert match, "ARCHITECTURE.md has no ```text layers block"
    result = []
    for line in match.group(1).splitlines():
        if line.strip():
            layer, *names = line.split()
            result.append((layer, names))
    return result


def layer_of(module: str) -> int:
    for index, (_, names) in enumerate(layers()):
        for name in names:
            full = "pypgflow" if name == "pypgflow" else f"pypgflow.{name}"
            if module == full or (name != "pypgflow" and module.startswith(full + ".")):
                return index
    raise AssertionError(f"{module} is in no layer of ARCHITECTURE.md")


def test_every_module_is_in_one_layer_of_the_diagram() -> None:
    placed = {module: layer_of(module) for module in MODULES}
    assert placed  # and layer_of raised for any module missing from the diagram
    named = [name for _, names in layers() for name in names]
    assert len(named) == len(set(named)), "a module is listed in two layers"
    for name in named:
        full = "pypgflow" if name == "pypgflow" else f"pypgflow.{name}"
        assert any(m == full or m.startswith(full + ".") for m in MODULES), (
            f"ARCHITECTURE.md names {name!r}, which is no module"
        )


def test_imports_only_go_down_the_layers() -> None:
    upward = [
        f"{module} ({layers()[layer_of(module)][0]}) imports {dep} ({layers()[layer_of(dep)][0]})"
        for module, deps in GRAPH.items()
        for dep in deps
        if dep in MODULES and layer_of(dep) < layer_of(module)
    ]
    assert upward == []


def test_no_import_circle() -> None:
    """Depth-first search for a back edge; the package's ``__init__`` (the public face, which
    imports everything) is part of the graph like any module."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for dep in sorted(GRAPH.get(module, ())):
            if dep not in MODULES:
                continue
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[module] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module)
    assert cycles == []


def test_no_private_name_crosses_modules() -> None:
    """``from pypgflow.x import _name`` or ``pypgflow.x._name``: a private name used elsewhere
    is a missing public one."""
    crossing = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pypgflow"):
                crossing += [
                    f"{name} imports {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert crossing == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_long_modules_say_why_at_their_top(module: str) -> None:
    path = MODULES[module]
    lines = path.read_text().splitlines()
    if len(lines) <= MAX_LINES:
        return
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert "Why one module" in docstring, (
        f"{module} has {len(lines)} lines: split it, or say at its top why it is one module "
        "(a paragraph starting 'Why one module')"
    )


def defined_private_names(tree: ast.AST) -> set[str]:
    """Private names a module defines: functions, classes, and attributes it assigns."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_no_module_reaches_into_another_objects_private_attributes() -> None:
    """``other._method()`` where ``_method`` belongs to another module's class (as the leader
    once called ``App._request``). Private names of the standard library's modules (asyncio's
    running-loop switch) are the library's own business."""
    reaching = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        own = defined_private_names(tree)
        stdlib = {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
            if not alias.name.startswith("pypgflow")
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and node.attr not in own
                and not (
                    isinstance(node.value, ast.Name) and node.value.id in {"self", "cls", *stdlib}
                )
            ):
                reaching.append(f"{name}:{node.lineno} uses .{node.attr}")
    assert reaching == []

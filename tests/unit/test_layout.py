"""The tree is the plan: stages as subpackages, imports running one way down them, no circle, small modules.

Read from the source with `ast` (nothing is imported), so a function-local import counts as much as
one at the top: a circle hidden inside a function is still a circle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pipeline"
# Lowest first: a module may import its own layer or a lower one, never a higher one.
LAYERS = (
    ("pipeline", "pipeline.config", "pipeline.errors", "pipeline.options"),
    ("pipeline.infra",),
    ("pipeline.data",),
    ("pipeline.modeling",),
    ("pipeline.explain",),
    ("pipeline.registry",),
    ("pipeline.serving",),
    ("pipeline.evaluate",),  # below search: a trial's val_* and a version's test_* come from evaluate.metrics
    ("pipeline.search",),
    ("pipeline.train",),
    ("pipeline.cli", "pipeline.commands", "pipeline.cli_docs", "pipeline.__main__"),
    ("pipeline.demo",),
)
MAX_LINES = 300


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The package's own modules that `path` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        assert not (isinstance(node, ast.ImportFrom) and node.level), f"{path}: relative import; write pipeline.<stage>..."
        found |= {n for n in names if n in known}
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(path, set(mods)) - {name} for name, path in mods.items()}


def layer(name: str) -> int:
    best = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    assert best is not None, f"{name} sits in no layer of tests/unit/test_layout.py: give its stage a place"
    return best[0]


def test_every_stage_is_a_subpackage():
    stages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert {"data", "modeling", "search", "train", "evaluate", "explain", "registry", "serving", "infra"} <= stages


def test_imports_run_down_the_layers():
    wrong = [f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
             for a, deps in graph().items() for b in deps
             if layer(b) > layer(a) and not a.startswith(b + ".") and a != "pipeline"]
    assert not wrong, "\n".join(wrong)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle():
    # A package's __init__ importing its own submodules is not a circle between stages.
    edges = {a: {b for b in deps if not b.startswith(a + ".")} for a, deps in graph().items()}
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


def test_cycle_finder_sees_a_circle():  # control: the check above can fail
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("name", sorted(modules()))
def test_module_is_small(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines < MAX_LINES, f"{modules()[name]} has {lines} lines: split it by job (limit {MAX_LINES})"

"""The import graph of `sidecar/`: layers import one way, and no module cycle exists.

Every import counts, lazy and TYPE_CHECKING ones included: a cycle hidden in a function is
still a cycle for the reader.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "sidecar"


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_of(p): p for p in ROOT.rglob("*.py")}


def _resolve(name: str) -> str | None:
    """The sidecar module an imported name lives in, or None when it is not ours."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text())
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from x import y` reaches the module x.y when it is one, else the module x.
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                names.append(sub if sub in MODULES else node.module)
    found = {_resolve(n) for n in names}
    return {t for t in found if t is not None and t != module}


GRAPH = {m: imports_of(m) for m in MODULES}


def _lower_layers() -> list[str]:
    return [m for m in MODULES if m.startswith(("sidecar.dialects", "sidecar.upstream"))]


@pytest.mark.parametrize("module", sorted(_lower_layers()))
def test_dialects_and_upstreams_import_nothing_from_backends(module: str) -> None:
    assert not {t for t in GRAPH[module] if t.startswith("sidecar.backends")}


def test_the_chain_imports_no_backend_kind_and_no_dialect() -> None:
    # It knows no provider and no route: what it needs of a backend is the adapter's interface.
    kinds = {t for t in GRAPH["sidecar.chain"] if t.startswith("sidecar.dialects")}
    kinds |= {t for t in GRAPH["sidecar.chain"] if t.startswith("sidecar.backends.")} - {
        "sidecar.backends.base"
    }
    assert not kinds


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return [*stack[stack.index(t) :], t]
            if t not in state and (cycle := visit(t)) is not None:
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)) is not None:
            return cycle
    return None


def test_no_module_imports_itself_through_others() -> None:
    assert find_cycle(GRAPH) is None


def test_the_cycle_check_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]

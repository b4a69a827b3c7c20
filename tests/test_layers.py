"""The import graph of `sidecar/`: layers import one way, and no module cycle exists; and the
test tree mirrors `sidecar/` module by module.

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


# ---------------------------------------------------------------- the test tree mirrors sidecar/

TESTS = Path(__file__).resolve().parent
# By topic on purpose: the agent CLIs, the deployment files, and the fakes with their own tests.
TOPIC_FOLDERS = ("e2e", "deploy", "fakes")
# Product modules with no test module of their own, and why.
UNMIRRORED = {
    # Two exception types with no behaviour; every dialect's tests raise and check them.
    "sidecar.dialects.errors",
}
# Test modules that mirror no one module: each tests one feature across several, end to end.
ACROSS_MODULES = {
    "test_layers.py",  # the structure itself: the import graph and this mirror
    "test_messages_route.py",  # POST /v1/messages served by every kind
    "test_responses_route.py",  # POST /v1/responses through the chain, native and translated
    "test_thinking_route.py",  # reasoning across vendors, on every route
    "test_openai_sdk.py",  # the official SDKs as the callers, through fallbacks
    "test_responses_sdk.py",
    "test_gemini_sdk.py",
    "test_cross_vendor_sdk.py",
    "test_google_aws_chain.py",  # a three-kind chain over several tool-calling turns
    "test_security.py",  # secrets never leave, through every output the sidecar has
    "test_token_kinds.py",  # cache and reasoning tokens counted from every kind's usage
    "test_tracing_requests.py",  # traces of real requests through the whole sidecar
    "test_credential_rotation.py",  # key files rotated live: config, the poll, chain, redaction
    "backends/test_bedrock_cache_points.py",  # cache_control → cachePoint, two dialects, two kinds
}


def mirrors_of(module: str) -> list[Path]:
    """Where the test module of a sidecar module may be: tests/<same folder>/test_<name>.py, or
    for a backend test_<name>_backend.py (a kind is often named like its dialect, and pytest
    needs every test module's file name to be unique)."""
    *folders, name = module.split(".")[1:]
    folder = TESTS.joinpath(*folders)
    names = [f"test_{name}.py"] + ([f"test_{name}_backend.py"] if folders == ["backends"] else [])
    return [folder / n for n in names]


def _product_modules() -> list[str]:
    return sorted(m for m, p in MODULES.items() if p.stem not in ("__init__", "__main__"))


@pytest.mark.parametrize("module", [m for m in _product_modules() if m not in UNMIRRORED])
def test_every_module_has_a_mirrored_test_module(module: str) -> None:
    assert any(p.exists() for p in mirrors_of(module)), mirrors_of(module)


def test_every_test_module_mirrors_a_module_or_is_listed_as_across_modules() -> None:
    mirrored = {p for m in _product_modules() for p in mirrors_of(m)}
    stray = [
        str(p.relative_to(TESTS))
        for p in TESTS.rglob("test_*.py")
        if p.relative_to(TESTS).parts[0] not in TOPIC_FOLDERS
        and p not in mirrored
        and str(p.relative_to(TESTS)) not in ACROSS_MODULES
    ]
    assert stray == []


def test_the_allow_lists_name_only_what_exists_and_needs_them() -> None:
    assert all(m in MODULES and not any(p.exists() for p in mirrors_of(m)) for m in UNMIRRORED)
    assert all((TESTS / name).exists() for name in ACROSS_MODULES)

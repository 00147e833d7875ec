"""Imports point one way (docs/ARCHITECTURE.md): scoring/ and schemas/ know nothing of
streams/; inside streams/ the Redis state layer knows nothing of Kafka, the batch pipeline
imports no Faust, the Kafka side no worker, and no module imports another that imports it
back, at any depth (imports inside functions, and those for type checking only, count)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("streams", "scoring", "schemas")
FRAMEWORKS = ("faust", "mode", "aiokafka")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[str]:
    module = _module_name(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: -node.level or None]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            yield name
            # ``from streams import metrics`` imports the module streams.metrics
            yield from (f"{name}.{alias.name}" for alias in node.names)


def _graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {_module_name(p) for p in files}
    return {
        _module_name(p): {
            name for name in _imports(p) if name in modules and name != _module_name(p)
        }
        | {name for name in _imports(p) if name.split(".")[0] in FRAMEWORKS}
        for p in files
    }


GRAPH = _graph()


def _importers(prefix: str, of: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{m} -> {d}"
        for m, deps in GRAPH.items()
        if m == prefix or m.startswith(prefix + ".")
        for d in deps
        if any(d == o or d.startswith(o + ".") for o in of)
    )


@pytest.mark.parametrize(
    ("layer", "must_not_import"),
    [
        ("scoring", ("streams",)),
        ("schemas", ("streams", "scoring")),
        ("streams.state", ("streams.pipeline", "streams.kafka", "streams.worker",
                           "streams.tools", "streams.dev", *FRAMEWORKS)),
        ("streams.pipeline", ("streams.kafka", "streams.worker", "streams.tools",
                              "streams.dev", *FRAMEWORKS)),
        ("streams.kafka", ("streams.worker", "streams.tools", "streams.dev")),
        ("streams.worker", ("streams.tools", "streams.dev")),
        ("streams.tools", ("streams.worker", "streams.dev")),
        ("streams.settings", ("streams.state", "streams.pipeline", "streams.kafka",
                              "streams.worker", "streams.tools", "streams.dev")),
    ],
)  # fmt: skip
def test_a_layer_imports_only_what_is_below_it(layer: str, must_not_import: tuple[str]) -> None:
    assert _importers(layer, must_not_import) == []


def test_only_the_kafka_side_and_the_worker_import_faust_or_mode() -> None:
    found = [
        line
        for line in _importers("streams", ("faust", "mode"))
        if not line.startswith(("streams.kafka.", "streams.worker.", "streams.cli -> "))
    ]
    assert found == []


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """A cycle of ``graph``, or [] when it has none."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_no_module_imports_one_that_imports_it_back() -> None:
    # A package's __init__ importing its own modules would count too: none does.
    project = {m: {d for d in deps if d.split(".")[0] in PACKAGES} for m, deps in GRAPH.items()}
    assert _cycle(project) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []

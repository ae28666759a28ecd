"""No circle in the imports at any scale: between two modules, and between the children of any
package (its modules and sub-packages, each taken whole). import-linter's layer contracts
(``pyproject.toml``) order the floors and the layers inside them; this checks the rest."""

from __future__ import annotations

import grimp
import pytest

from tests.packages import PACKAGES, SETUPTOOLS_INCLUDE


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES)


def owner(module: str, children: set[str]) -> str | None:
    """The child of a package that holds ``module`` (itself or an ancestor), if any."""
    for child in children:
        if module == child or module.startswith(child + "."):
            return child
    return None


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def package_edges(graph: grimp.ImportGraph, package: str) -> dict[str, set[str]]:
    """Which children of ``package`` import which others (each child with all it holds)."""
    children = graph.find_children(package)
    edges: dict[str, set[str]] = {child: set() for child in children}
    for child in children:
        for module in {child, *graph.find_descendants(child)}:
            for imported in graph.find_modules_directly_imported_by(module):
                target = owner(imported, children)
                if target is not None and target != child:
                    edges[child].add(target)
    return edges


def test_no_two_modules_import_each_other_round_a_circle(graph: grimp.ImportGraph) -> None:
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    assert circles(edges) == []


def test_no_package_has_children_that_import_round_a_circle(graph: grimp.ImportGraph) -> None:
    packages = [m for m in graph.modules if graph.find_children(m)]
    found = {p: c for p in sorted(packages) if (c := circles(package_edges(graph, p)))}
    assert found == {}


def test_setuptools_packages_every_package_the_contracts_name() -> None:
    assert sorted(SETUPTOOLS_INCLUDE) == sorted(f"{p}*" for p in PACKAGES)


def test_the_check_finds_a_circle() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []

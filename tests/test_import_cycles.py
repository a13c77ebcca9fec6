"""No import cycles among the project's modules, counting imports made only for type checking
and imports inside functions: a reader can follow each module's imports down to the bottom."""

from __future__ import annotations

import functools

import grimp

PACKAGES = ("advisor", "planner", "runners")


@functools.cache
def project_graph() -> grimp.ImportGraph:
    """The import graph of the three packages; `if TYPE_CHECKING:` imports included."""
    return grimp.build_graph(*PACKAGES, include_external_packages=False)


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """One shortest cycle through each import that has a way back to its importer."""
    cycles: dict[frozenset[str], list[str]] = {}
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                cycles.setdefault(frozenset(back), [importer, *back])
    return list(cycles.values())


def test_the_graph_counts_type_checking_imports():
    """grimp's default keeps `if TYPE_CHECKING:` imports, so they cannot hide a cycle."""
    assert project_graph().direct_import_exists(
        importer="advisor.decision.rules", imported="advisor.decision.compute_check"
    )  # made only for type checking


def test_no_import_cycles():
    cycles = import_cycles(project_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)

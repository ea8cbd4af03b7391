"""The import graph of the three packages (tests/import_graph.py draws it): no cycle inside any of them, and no import
that points back up: the engine and the layers import neither the harness nor each other, and inside the harness
the command line and the factory (agentcache.wiring) are imported only from above them."""

from __future__ import annotations

import pytest

from tests.import_graph import PACKAGES, cycle, drawing, files, graph, imported, rooms

ABOVE_WIRING = ("agentcache.cli.", "agentcache.serve.")  # the commands and the server, which build through it


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_inside_a_package(package):
    found = cycle(graph(package))
    assert found is None, " -> ".join(found)


@pytest.mark.parametrize("package, allowed", [("engine", set()), ("layers", set()),
                                              ("agentcache", {"engine", "layers"})])
def test_the_packages_import_one_another_one_way(package, allowed):
    outside = {m.split(".")[0] for path in files(package).values() for m in imported(path)} & set(PACKAGES)
    assert outside - {package} <= allowed


def test_only_the_commands_import_the_command_line():
    edges = graph("agentcache")
    importers = {name for name, deps in edges.items() if any(d.startswith("agentcache.cli") for d in deps)}
    assert importers and all(name.startswith("agentcache.cli") for name in importers)


def test_only_what_sits_above_the_factory_imports_it():
    edges = graph("agentcache")
    importers = {name for name, deps in edges.items() if "agentcache.wiring" in deps}
    assert importers and all(name.startswith(ABOVE_WIRING) for name in importers), sorted(importers)
    assert not any(d.startswith(ABOVE_WIRING) for d in edges["agentcache.wiring"])


def test_the_checks_see_what_they_check():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
    # an import made only for the type checker is not an edge: tools.base names the Workspace type that way
    assert "agentcache.tools.workspace" not in graph("agentcache")["agentcache.tools.base"]
    assert "agentcache.tools.base" in graph("agentcache")["agentcache.tools.workspace"]
    assert {"engine.kv", "engine.gguf"} <= rooms("engine")["engine"]
    assert "engine/ imports no other package" in drawing()

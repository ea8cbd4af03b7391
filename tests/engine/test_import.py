"""The engine's import boundary: it speaks tokens and never imports the harness or the layers, and its own modules
import one another one way (no cycle, so nothing below calls back up)."""

import subprocess
import sys

from tests.import_graph import ROOT, cycle, graph, imported

ENGINE = ROOT / "engine"
OUTSIDE = ("agentcache", "layers")


def test_running_the_engine_pulls_in_no_harness_or_layers():
    code = (
        "import sys, engine\n"
        "e = engine.Engine(engine.load_model('random-tiny'), page_size=4, capacity_bytes=1 << 20)\n"
        "e.generate(engine.Request([[5, 6, 7, 8, 9]], max_tokens=2))\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {OUTSIDE!r}]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def engine_graph() -> dict[str, set[str]]:
    """Engine module -> the engine modules it imports (its rooms kv/ and gguf/ included)."""
    return graph("engine")


def test_no_engine_file_imports_the_harness_or_the_layers():
    bad = {str(p.relative_to(ENGINE)): sorted(m for m in imported(p) if m.split(".")[0] in OUTSIDE)
           for p in ENGINE.rglob("*.py")}
    assert {name: mods for name, mods in bad.items() if mods} == {}


def test_the_cache_root_policy_is_not_the_engines():
    """Where things are kept is the harness's choice (agentcache/cache_dir.py); the engine is handed paths."""
    for path in ENGINE.rglob("*.py"):
        text = path.read_text()
        assert "AGENTCACHE_CACHE_DIR" not in text and "platformdirs" not in text, path.name


def test_engine_modules_import_one_another_without_a_cycle():
    graph = engine_graph()
    assert "engine.scheduler" in graph["engine.engine"] and "engine.engine" not in graph["engine.scheduler"]
    assert cycle(graph) is None, " -> ".join(cycle(graph))
    assert not any("engine" in deps for name, deps in graph.items() if name != "engine")  # no module needs the package
    assert "engine.kv.store" in graph["engine.kv.manager"] and "engine.gguf.blocks" in graph["engine.decode_step"]


def test_the_cycle_check_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
    assert imported(ENGINE / "__init__.py") >= {"engine.engine", "engine.errors"}

"""The engine's import boundary: it speaks tokens and never imports the harness or the layers, and its own modules
import one another one way (no cycle, so nothing below calls back up)."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
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


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module an engine file imports, at the top or inside a function (`from engine import X` names the
    submodule engine.X when there is one, else the package)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path.name}: relative import"
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                names.add(sub if (ROOT / Path(*sub.split("."))).with_suffix(".py").is_file() else node.module)
    return names


def engine_graph() -> dict[str, set[str]]:
    """Engine module -> the engine modules it imports."""
    modules = {module_name(p): p for p in sorted(ENGINE.glob("*.py"))}
    return {name: {m for m in imported(path) if m in modules and m != name} for name, path in modules.items()}


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of modules, or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        for nxt in sorted(graph[node]):
            found = visit(nxt, path + [node])
            if found:
                return found
        done.add(node)
        return None

    return next((c for c in (visit(n, []) for n in sorted(graph)) if c), None)


def test_no_engine_file_imports_the_harness_or_the_layers():
    bad = {p.name: sorted(m for m in imported(p) if m.split(".")[0] in OUTSIDE) for p in ENGINE.glob("*.py")}
    assert {name: mods for name, mods in bad.items() if mods} == {}


def test_the_cache_root_policy_is_not_the_engines():
    """Where things are kept is the harness's choice (agentcache/cache_dir.py); the engine is handed paths."""
    for path in ENGINE.glob("*.py"):
        text = path.read_text()
        assert "AGENTCACHE_CACHE_DIR" not in text and "platformdirs" not in text, path.name


def test_engine_modules_import_one_another_without_a_cycle():
    graph = engine_graph()
    assert "engine.scheduler" in graph["engine.engine"] and "engine.engine" not in graph["engine.scheduler"]
    assert cycle(graph) is None, " -> ".join(cycle(graph))
    assert not any("engine" in deps for name, deps in graph.items() if name != "engine")  # no submodule needs the package


def test_the_cycle_check_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
    assert imported(ENGINE / "__init__.py") >= {"engine.engine", "engine.errors"}

"""The project's import graph, read from the source with `ast` (imports at the top and inside functions alike), and
the check that finds a cycle in it. `python -m tests.import_graph` draws it by room: each folder of engine/ and
agentcache/, and the rooms it imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agentcache", "layers", "engine")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module a file imports at run time (`from engine import X` names the submodule engine.X when there is one,
    else the package)."""
    names: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and ast.unparse(block.test)
                   in ("TYPE_CHECKING", "typing.TYPE_CHECKING") for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in typing_only:  # for the type checker only: never imported at run time
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import"
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                base = ROOT / Path(*sub.split("."))
                names.add(sub if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()
                          else node.module)
    return names


def files(package: str) -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}


def graph(package: str) -> dict[str, set[str]]:
    """Module of `package` -> the modules of `package` it imports."""
    modules = files(package)
    return {name: {m for m in imported(path) if m in modules and m != name} for name, path in modules.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of modules, or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        for nxt in sorted(edges.get(node, ())):
            found = visit(nxt, path + [node])
            if found:
                return found
        done.add(node)
        return None

    return next((c for c in (visit(n, []) for n in sorted(edges)) if c), None)


def room(module: str) -> str:
    """The folder a module lives in: engine.kv.store -> engine.kv; a package's own __init__ is its room."""
    path = ROOT / Path(*module.split("."))
    return module if path.is_dir() else module.rpartition(".")[0]


def rooms(package: str) -> dict[str, set[str]]:
    """Room -> the other rooms of `package` its modules import."""
    out: dict[str, set[str]] = {}
    for name, deps in graph(package).items():
        out.setdefault(room(name), set()).update(room(d) for d in deps)
    return {r: deps - {r} for r, deps in out.items()}


def drawing() -> str:
    lines = []
    for package in PACKAGES:
        outside = sorted({m.split(".")[0] for p in files(package).values() for m in imported(p)}
                         & set(PACKAGES) - {package})
        lines.append(f"{package}/ imports {', '.join(outside) or 'no other package'}")
        for name, deps in sorted(rooms(package).items()):
            lines.append(f"  {name:<22} -> {', '.join(sorted(deps)) or '-'}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(drawing())

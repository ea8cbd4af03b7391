"""The repo map: per-file outlines for L2, ranked by the repository's own reference graph, and a name lookup.

The map never depends on the task: files are ranked by PageRank over "file A mentions a name that file B
defines", then the best-ranked whole outlines that fit `map_tokens` are kept and emitted in path order (files
dirty in git last), one L2 "map" block per file. `lookup` is the task-side half: names in a task text that the
outlines define, as one note for L3.
"""
from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from layers.block import Block, Layer
from layers.canonical import normalize_text
from layers.outline import Symbol, is_supported, outline
from layers.repo import list_files, open_repo, read_text
from layers.tokens import TokenCounter

IDENTIFIER = re.compile(r"\b[A-Za-z_]\w*\b")
ATTRIBUTE = re.compile(r"\.\s*([A-Za-z_]\w*)")
TASK_TOKEN = re.compile(r"[A-Za-z_][\w-]*(?:[./][\w-]+)*")
MAP_TOKENS = 2048  # the default budget of the map: twice Aider's --map-tokens, since it is cached (tomli's parser
# module alone is ~1,200)
MIN_NAME = 3
CODE_SHAPE = re.compile(r"[_./\d]|.[A-Z]")
MAX_DEFINING_FILES = 5
DAMPING = 0.85
ITERATIONS = 20
MAX_DOC = 120


@dataclass(frozen=True, slots=True)
class FileOutline:
    path: str
    text: str
    symbols: list[Symbol]


def source_paths(paths: Iterable[str]) -> list[str]:
    """Supported source files, sorted; a .pyi stub beside its .py is left to the .py."""
    listed = set(paths)
    return sorted(p for p in listed if is_supported(p) and not (p.endswith(".pyi") and p[:-1] in listed))


def file_outlines(root: Path, paths: list[str]) -> list[FileOutline]:
    """Outlines of the listed supported files that read as text and parse; in path order."""
    listed = set(paths)
    found = []
    for path in source_paths(paths):
        text = read_text(root, path, listed)
        symbols = outline(path, text) if text is not None else None
        if symbols is not None:
            found.append(FileOutline(path, text, symbols))
    return found


def is_shown(symbol: Symbol) -> bool:
    """The map shows a file's surface: no dunder methods but __init__, no private members (top-level private
    functions and classes stay: a private module holds little else)."""
    members = symbol.name.split(".")[1:]
    return not any(m.startswith("_") and m != "__init__" for m in members) and not (
        symbol.name.startswith("__") and symbol.name.endswith("__"))


def outline_text(symbols: list[Symbol], every: bool = False) -> str:
    """One line per shown symbol (every symbol with `every`): line number, signature indented by nesting, docstring
    first line."""
    lines = []
    for symbol in symbols if every else filter(is_shown, symbols):
        doc = symbol.doc if len(symbol.doc) <= MAX_DOC else symbol.doc[: MAX_DOC - 3] + "..."
        indent = "    " * symbol.name.count(".")
        lines.append(f"{symbol.line:>4} {indent}{symbol.signature}" + (f"  # {doc}" if doc else ""))
    return normalize_text("\n".join(lines))


def _definitions(file: FileOutline) -> dict[str, bool]:
    """Name -> whether it is only ever a member (method, nested class, class constant) in this file."""
    members: dict[str, bool] = {}
    for symbol in file.symbols:
        name = symbol.name.rsplit(".", 1)[-1]
        if len(name) >= MIN_NAME and not (name.startswith("__") and name.endswith("__")):
            members[name] = members.get(name, True) and "." in symbol.name
    return members


def _mentions(text: str) -> tuple[set[str], set[str]]:
    """The identifiers a text mentions, and those it mentions as attributes (after a dot)."""
    return set(IDENTIFIER.findall(text)), set(ATTRIBUTE.findall(text))


def name_weight(name: str) -> float:
    """Long snake_case or camelCase names say more than short ones; private names say less (as Aider weighs)."""
    specific = len(name) >= 8 and ("_" in name.strip("_") or name[1:] != name[1:].lower())
    return (10.0 if specific else 1.0) * (0.1 if name.startswith("_") else 1.0)


def reference_graph(files: list[FileOutline]) -> dict[str, dict[str, float]]:
    """Edge weights A -> B: for each name that B defines and A mentions (a member only as an attribute) without
    defining it itself, name_weight shared among the name's definers; names defined in many files are skipped."""
    defined = {file.path: _definitions(file) for file in files}
    definers: dict[str, list[str]] = defaultdict(list)
    for path, names in defined.items():
        for name in names:
            definers[name].append(path)
    graph: dict[str, dict[str, float]] = {file.path: {} for file in files}
    for file in files:
        bare, attributes = _mentions(file.text)
        edges = graph[file.path]
        for name in sorted(bare):
            targets = definers.get(name, [])
            if name in defined[file.path] or not 0 < len(targets) <= MAX_DEFINING_FILES:
                continue
            for target in targets:
                if name in attributes or not defined[target][name]:
                    edges[target] = edges.get(target, 0.0) + name_weight(name) / len(targets)
    return graph


def pagerank(graph: dict[str, dict[str, float]]) -> dict[str, float]:
    """Plain power iteration; a file with no outgoing edge spreads its rank evenly."""
    nodes = sorted(graph)
    if not nodes:
        return {}
    rank = {n: 1.0 / len(nodes) for n in nodes}
    for _ in range(ITERATIONS):
        dangling = sum(rank[n] for n in nodes if not graph[n])
        base = (1.0 - DAMPING) / len(nodes) + DAMPING * dangling / len(nodes)
        new = dict.fromkeys(nodes, base)
        for source in nodes:
            total = sum(graph[source].values())
            for target, weight in sorted(graph[source].items()):
                new[target] += DAMPING * rank[source] * weight / total
        rank = new
    return rank


def ranked_paths(files: list[FileOutline]) -> list[str]:
    """File paths, best-ranked first; ties by path."""
    rank = pagerank(reference_graph(files))
    return sorted(rank, key=lambda p: (-rank[p], p))


def map_blocks(root: Path, paths: list[str], dirty: set[str], budget: int, counter: TokenCounter) -> list[Block]:
    """The best-ranked whole file outlines within `budget` tokens, in path order, dirty files last."""
    if budget <= 0:
        return []
    files = file_outlines(root, paths)
    texts = {f.path: outline_text(f.symbols) for f in files if any(map(is_shown, f.symbols))}
    kept, used = [], 0
    for path in (p for p in ranked_paths(files) if p in texts):
        tokens = counter.count(texts[path])
        if used + tokens <= budget:
            kept.append(path)
            used += tokens
    ordered = sorted(kept, key=lambda p: (p in dirty, p))
    return [Block(Layer.L2, "map", p, texts[p].encode("utf-8")) for p in ordered]


def lookup(root: Path | str, task: str, limit: int = 8) -> str | None:
    """Lines "path:line  signature" (a member adds "(in Class)"; a file is "path  (N definitions)") for the names
    and files a task mentions that the repo's outlines define, in the task's order, at most `limit`; None when
    nothing matched. A method name defined in several classes keeps only the classes the task names, if any."""
    base = open_repo(root)
    files = file_outlines(base, list_files(base))
    tokens = sorted(dict.fromkeys(TASK_TOKEN.findall(task)), key=lambda token: not _code_like(token, task))
    mentioned = {part for token in tokens for part in re.split(r"[./]", token)}
    lines: list[str] = []
    for token in tokens:
        for line in _hits(files, token, mentioned):
            if line not in lines and len(lines) < limit:
                lines.append(line)
    return "\n".join(lines) if lines else None


def _code_like(token: str, task: str) -> bool:
    """A name written as code (in backticks, or with _ . / digits or inner capitals), not a plain word such as
    "decorator": its definitions come first in the note."""
    return f"`{token}`" in task or bool(CODE_SHAPE.search(token))


def _hits(files: list[FileOutline], token: str, mentioned: set[str]) -> list[str]:
    if "." in token or "/" in token:
        found = _symbol_hits(files, token, mentioned) or _file_hits(files, token)
        if found:
            return found
        return [hit for part in re.split(r"[./]", token) for hit in _symbol_hits(files, part, mentioned)]
    return _symbol_hits(files, token, mentioned)


def _symbol_hits(files: list[FileOutline], name: str, mentioned: set[str]) -> list[str]:
    if len(name.rsplit(".", 1)[-1]) < MIN_NAME:
        return []
    found = [(f.path, s) for f in files for s in f.symbols if s.name == name or s.name.endswith("." + name)]
    named_owner = [(p, s) for p, s in found if _owner(s) in mentioned]
    return [_hit_line(p, s) for p, s in named_owner or found]


def _owner(symbol: Symbol) -> str:
    return symbol.name.rsplit(".", 1)[0] if "." in symbol.name else ""


def _hit_line(path: str, symbol: Symbol) -> str:
    owner = _owner(symbol)
    return f"{path}:{symbol.line}  {symbol.signature}" + (f"  (in {owner})" if owner else "")


def _file_hits(files: list[FileOutline], token: str) -> list[str]:
    return [f"{f.path}  ({len(f.symbols)} definitions)" for f in files
            if f.path == token or f.path.endswith("/" + token) or PurePosixPath(f.path).name == token]

"""Code a reply writes as prose, taken as the edit it is: a fenced block that names a file of the repository.

Small models, asked to change code, often answer with "Here's the updated code:" and a ```python block holding the
file (or the part they changed), its path on the block's first line as a comment (`# pkg/mod.py`) or just before it
(`pkg/mod.py:`, "the updated `pkg/mod.py`"). That is Aider's "whole" edit format. In edit and full modes the agent
applies such a block to the file it names, by definition, so what the model left out is kept:

- each class, function, method or constant the block defines replaces the one of the same name in the file;
  a class the block gives only some methods of has just those replaced (and its new ones added at its end);
- a definition the file lacks is added at the end of the file (a method, at the end of its class);
- an import the block has and the file lacks is added after the file's imports (Python).

What the block holds besides (a module docstring, other statements) is left out. The result must parse and keep
every definition the file had, or nothing is written; the change is recorded with what it replaced, as a write's is.
A block naming no existing file, one whose fence names another language than the file's (```bash, ```console: a
command, not the file), or a reply with none, is left alone: it stays an answer.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from agentcache.tools.base import Change, ToolError, ToolOutcome
from agentcache.tools.files import MAX_EDIT_BYTES, check_keeps, check_text, previous_text, replace_content
from agentcache.tools.workspace import Workspace
from layers.outline import Symbol, language_of, outline, parse_python, syntax_error
from layers.repo import list_files
from layers.repomap import file_outlines

FENCED = re.compile(r"^```([A-Za-z0-9_+.#-]*)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
SUFFIX_OF_INFO = {"python": ".py", "py": ".py", "python3": ".py", "py3": ".py", "javascript": ".js", "js": ".js",
                  "typescript": ".ts", "ts": ".ts", "go": ".go", "rust": ".rs", "rs": ".rs", "java": ".java", "c": ".c",
                  "cpp": ".cpp", "c++": ".cpp"}
PATH = r"[\w.-]+(?:/[\w.-]+)*\.\w+"
PATH_COMMENT = re.compile(rf"^\s*(?:#|//|--|/\*)\s*(?:file(?:name)?\s*:\s*)?`?({PATH})`?\s*(?:\*/)?\s*$", re.I)
PATH_BEFORE = re.compile(rf"`({PATH})`|(?<![\w/.-])({PATH})(?![\w/-])")
LOOK_BEHIND = 300  # characters before a block searched for the path it belongs to


@dataclass(frozen=True, slots=True)
class CodeBlock:
    path: str
    code: str


def code_blocks(text: str, ws: Workspace) -> list[CodeBlock]:
    """The fenced blocks of a reply that name an existing file of the repository, in order: by a path comment on
    the block's first line (taken off the code), else by the last path written in the text just before it, else
    by what it defines: the one file of its language that defines the most of its names."""
    found, start = [], 0
    for match in FENCED.finditer(text):
        info, code = match.group(1).lower(), match.group(2)
        first, _, rest = code.partition("\n")
        named = PATH_COMMENT.match(first)
        if named and is_file(ws, named.group(1)) and written_in(info, named.group(1)):
            found.append(CodeBlock(named.group(1), rest))
        elif not info or info in SUFFIX_OF_INFO:  # a ```bash or ```console block is a command, not a file's code
            before = text[max(start, match.start() - LOOK_BEHIND):match.start()]
            paths = [a or b for a, b in PATH_BEFORE.findall(before)]
            path = next((p for p in reversed(paths) if is_file(ws, p) and written_in(info, p)), None) or \
                defining_file(ws, code, info)
            if path is not None:
                found.append(CodeBlock(path, code))
        start = match.end()
    return found


def written_in(info: str, path: str) -> bool:
    """Whether a block whose fence says `info` may hold code of `path`: no language said, or the path's."""
    return not info or language_of(f"block{SUFFIX_OF_INFO.get(info, '.' + info)}") == language_of(path)


def defining_file(ws: Workspace, code: str, info: str) -> str | None:
    """The file of the block's language (its fence's info string) that defines the most of the block's top-level
    names, when one file does so alone."""
    suffix = SUFFIX_OF_INFO.get(info)
    symbols = outline(f"block{suffix}", code) if suffix else None
    names = {s.name for s in symbols or [] if "." not in s.name}
    if not names:
        return None
    counts = {f.path: len(names & {s.name for s in f.symbols})
              for f in file_outlines(ws.root, list_files(ws.root)) if f.path.endswith(suffix)}
    ranked = sorted(counts.items(), key=lambda item: -item[1])
    if not ranked or ranked[0][1] == 0 or (len(ranked) > 1 and ranked[1][1] == ranked[0][1]):
        return None
    return ranked[0][0]


def is_file(ws: Workspace, path: str) -> bool:
    try:
        return language_of(path) is not None and ws.resolve(path).is_file() and ws.name_of(path) is not None
    except ToolError:
        return False


def apply_block(ws: Workspace, block: CodeBlock) -> ToolOutcome:
    """Merge the block into its file by definition (see the module's docstring); refused, with the file unchanged,
    when the block or the result does not parse or the result would drop a definition."""
    path = block.path
    handle = ws.edit_handle(path)
    with handle:
        check_text(path, handle.read(MAX_EDIT_BYTES + 1))
        before = previous_text(path, handle)
        problem = syntax_error(path, block.code)
        if problem is not None:
            raise ToolError(f"the code block for {path} does not parse ({problem}); {path} is unchanged")
        old, new = outline(path, before), outline(path, block.code)
        if old is None:
            raise ToolError(f"{path} does not parse as it is, so a code block cannot be merged into it by "
                            "definition; use edit_file")
        if not new:
            raise ToolError(f"the code block for {path} defines nothing to replace or add; {path} is unchanged")
        after, done = merge(path, before, old, block.code, new)
        if after == before:
            return ToolOutcome(f"the code block matches {path}; nothing changed")
        problem = syntax_error(path, after)
        if problem is not None:
            raise ToolError(f"{path} would no longer parse after the code block ({problem}); {path} is unchanged")
        check_keeps(path, before, after)
        replace_content(handle, after.encode("utf-8"))
    return ToolOutcome(f"applied the code block to {path}: {'; '.join(done)}", change=Change(path, 1, before, after))


def merge(path: str, text: str, old: list[Symbol], code: str, new: list[Symbol]) -> tuple[str, list[str]]:
    """`text` with `code`'s definitions merged in, and what was done, in words."""
    lines, block = text.splitlines(keepends=True), code.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    have = {s.name: s for s in old}
    edits: list[tuple[int, int, list[str]]] = []  # (first line, last line, new lines); last < first: an insertion
    appended: list[str] = []
    done: list[str] = []

    def place(symbol: Symbol) -> None:
        source, mine = span(block, symbol), have.get(symbol.name)
        owner = symbol.name.rpartition(".")[0]
        if mine is not None:
            first = decorated_start(lines, mine.line)
            replacement = reindent(source, indent_of(lines, mine.line))
            if replacement != lines[first - 1:mine.end_line]:
                edits.append((first, mine.end_line, replacement))
                done.append(f"replaced `{symbol.name}` (lines {first}-{mine.end_line})")
        elif owner:  # a new member of a class the file has: at the end of that class
            end = have[owner].end_line
            edits.append((end + 1, end, ["\n", *reindent(source, indent_of(lines, have[owner].line) + "    ")]))
            done.append(f"added `{symbol.name}`")
        else:
            appended.extend(["\n\n" if language_of(path) == "python" else "\n", *source])
            done.append(f"added `{symbol.name}`")

    for symbol in (s for s in new if "." not in s.name):
        members = [s for s in new if s.name.rpartition(".")[0] == symbol.name]
        if symbol.kind == "class" and symbol.name in have and partial_class(symbol.name, members, old):
            for member in members:
                place(member)
        else:
            place(symbol)
    imports = new_imports(path, text, code)
    if imports:
        at = import_end(text)
        edits.append((at + 1, at, imports))
        done.append(f"added {len(imports)} import{'s' if len(imports) > 1 else ''}")
    for first, last, replacement in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        lines[first - 1:last] = replacement
    return "".join(lines) + "".join(appended), done


def partial_class(name: str, members: list[Symbol], old: list[Symbol]) -> bool:
    """Whether the block's class leaves out a method the file's class has: then only its members are merged."""
    given = {s.name for s in members if s.kind == "method"}
    had = {s.name for s in old if s.kind == "method" and s.name.rpartition(".")[0] == name}
    return bool(had - given)


def span(lines: list[str], symbol: Symbol) -> list[str]:
    out = lines[decorated_start(lines, symbol.line) - 1:symbol.end_line]
    if out and not out[-1].endswith("\n"):
        out[-1] += "\n"
    return out


def decorated_start(lines: list[str], line: int) -> int:
    """The first line of a definition with the decorators just above it."""
    while line > 1 and lines[line - 2].lstrip().startswith("@"):
        line -= 1
    return line


def indent_of(lines: list[str], line: int) -> str:
    text = lines[line - 1]
    return text[: len(text) - len(text.lstrip())]


def reindent(source: list[str], indent: str) -> list[str]:
    """`source` moved to `indent` (its first line's indentation replaced, the rest shifted alike)."""
    first = next((line for line in source if line.strip()), "")
    current = first[: len(first) - len(first.lstrip())]
    if current == indent:
        return source
    return [indent + line[len(current):] if line.startswith(current) and line.strip() else line for line in source]


def new_imports(path: str, text: str, code: str) -> list[str]:
    """Python: the top-level import lines of `code` the file does not have, word for word."""
    if language_of(path) != "python":
        return []
    try:
        tree = parse_python(code)
    except SyntaxError:
        return []
    present = {" ".join(line.split()) for line in text.splitlines()}
    out = []
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            line = ast.get_source_segment(code, node) or ""
            if " ".join(line.split()) not in present and not (isinstance(node, ast.ImportFrom) and
                                                              node.module == "__future__"):
                out.append(line + "\n")
    return out


def import_end(text: str) -> int:
    """The line after which new imports go: the last top-level import, else the module docstring, else 0."""
    try:
        tree = parse_python(text)
    except SyntaxError:
        return 0
    last = 0
    for index, node in enumerate(tree.body):
        if isinstance(node, ast.Import | ast.ImportFrom):
            last = node.end_lineno or node.lineno
        elif index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            last = node.end_lineno or node.lineno
    return last

"""Outlines of source files: the classes, functions, methods and constants a file defines, with lines and signatures.

Python is read with the stdlib ast; JavaScript/TypeScript, Go, Rust, Java and C/C++ with tree-sitter
grammars. A file whose language is not one of these, or whose text does not parse, has no outline.
"""
from __future__ import annotations

import ast
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import cache
from pathlib import PurePosixPath
from typing import Any

MAX_VALUE = 60
MAX_SIGNATURE = 300
CONSTANT_NAME = re.compile(r"_*[A-Z][A-Z0-9_]*\Z")


@dataclass(frozen=True, slots=True)
class Symbol:
    kind: str
    name: str
    line: int
    end_line: int
    signature: str
    doc: str


def outline(path: str, text: str) -> list[Symbol] | None:
    """Symbols in source order; None when the language is not supported or the text does not parse."""
    language = language_of(path)
    if language == "python":
        tree = _python_tree(text)
        return None if tree is None else list(_python_symbols(tree.body, "", text))
    root = _ts_root(language, path, text) if language else None
    if root is None or root.has_error:
        return None
    return list(_TreeWalk(language, root.text, path.lower().endswith(HEADERS)).symbols(root, ""))


def syntax_error(path: str, text: str) -> str | None:
    """None when the text parses (or the language is unsupported), else "line N: message"."""
    language = language_of(path)
    if language == "python":
        return _python_error(text)
    root = _ts_root(language, path, text) if language else None
    return _ts_error(root) if root is not None and root.has_error else None


def defined_names(path: str, text: str) -> set[str] | None:
    """Qualified names of the top-level and class-level definitions; None if unsupported or unparsable."""
    symbols = outline(path, text)
    return None if symbols is None else {s.name for s in symbols}


def enclosing(symbols: list[Symbol], line: int) -> list[Symbol]:
    """The class/function symbols whose [line, end_line] holds `line`, outermost first."""
    chain = [s for s in symbols if s.kind != "constant" and s.line <= line <= s.end_line]
    return sorted(chain, key=lambda s: (s.line, -s.end_line))


# ---- languages --------------------------------------------------------------------------------

EXTENSIONS = {
    ".py": "python", ".pyi": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx",
    ".go": "go", ".rs": "rust", ".java": "java",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hh": "cpp", ".hpp": "cpp", ".hxx": "cpp",
}
HEADERS = (".h", ".hh", ".hpp", ".hxx")


def language_of(path: str) -> str | None:
    return EXTENSIONS.get(PurePosixPath(path).suffix.lower())


def is_supported(path: str) -> bool:
    return language_of(path) is not None


# ---- Python -----------------------------------------------------------------------------------


PARSE_LOCK = threading.Lock()  # CPython 3.11's ast.parse keeps its recursion depth in interpreter-wide state:
# two threads parsing at once (the sessions of one process) can fail with "AST constructor recursion depth mismatch"


def parse_python(text: str) -> ast.Module:
    """`ast.parse(text)`, one thread at a time."""
    with PARSE_LOCK:
        return ast.parse(text)


def _python_tree(text: str) -> ast.Module | None:
    try:
        return parse_python(text.removeprefix("\ufeff"))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _python_error(text: str) -> str | None:
    try:
        parse_python(text.removeprefix("\ufeff"))
    except SyntaxError as error:
        return f"line {error.lineno or 1}: {error.msg}"
    except (ValueError, RecursionError, MemoryError) as error:
        return f"line 1: {error}"
    return None


def _python_symbols(body: list[ast.stmt], owner: str, text: str) -> Iterator[Symbol]:
    for node in body:
        if isinstance(node, ast.ClassDef):
            yield _python_symbol(node, "class", owner)
            yield from _python_symbols(node.body, f"{owner}{node.name}.", text)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield _python_symbol(node, "method" if owner else "function", owner)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            yield from _python_constants(node, owner, text)
        elif isinstance(node, ast.If | ast.Try):
            for part in (node.body, getattr(node, "handlers", []), node.orelse, getattr(node, "finalbody", [])):
                yield from _python_symbols(_flat(part), owner, text)


def _flat(part: list[Any]) -> list[ast.stmt]:
    return [s for item in part for s in (item.body if isinstance(item, ast.ExceptHandler) else [item])]


def _python_symbol(node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef, kind: str, owner: str) -> Symbol:
    doc = (ast.get_docstring(node) or "").strip().splitlines()
    return Symbol(kind, owner + node.name, node.lineno, node.end_lineno or node.lineno,
                  _one_line(_python_signature(node)), doc[0].strip() if doc else "")


def _python_signature(node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    if isinstance(node, ast.ClassDef):
        bases = [ast.unparse(b) for b in node.bases] + [ast.unparse(k) for k in node.keywords]
        return f"class {node.name}" + (f"({', '.join(bases)})" if bases else "")
    prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
    returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
    return f"{prefix} {node.name}({ast.unparse(node.args)}){returns}"


def _python_constants(node: ast.Assign | ast.AnnAssign, owner: str, text: str) -> Iterator[Symbol]:
    """A constant's value as its source writes it (`r"[aeiouy]+"` stays a raw string), when short."""
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    source = None if node.value is None else ast.get_source_segment(text, node.value)
    value = "..." if node.value is None else _short(source if source is not None else ast.unparse(node.value))
    for target in targets:
        if isinstance(target, ast.Name) and CONSTANT_NAME.match(target.id):
            end = node.end_lineno or node.lineno
            yield Symbol("constant", owner + target.id, node.lineno, end, f"{target.id} = {value}", "")


def _short(value: str) -> str:
    value = _one_line(value)
    return value if len(value) <= MAX_VALUE else "..."


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_SIGNATURE else text[: MAX_SIGNATURE - 3] + "..."


# ---- tree-sitter ------------------------------------------------------------------------------


def _grammar_loaders() -> dict[str, Callable[[], Any]]:
    import tree_sitter_c
    import tree_sitter_cpp
    import tree_sitter_go
    import tree_sitter_java
    import tree_sitter_javascript
    import tree_sitter_rust
    import tree_sitter_typescript

    return {
        "javascript": tree_sitter_javascript.language, "typescript": tree_sitter_typescript.language_typescript,
        "tsx": tree_sitter_typescript.language_tsx, "go": tree_sitter_go.language, "rust": tree_sitter_rust.language,
        "java": tree_sitter_java.language, "c": tree_sitter_c.language, "cpp": tree_sitter_cpp.language,
    }


@cache
def _parser(language: str) -> Any | None:
    try:
        import tree_sitter

        return tree_sitter.Parser(tree_sitter.Language(_grammar_loaders()[language]()))
    except (ImportError, KeyError, ValueError):
        return None


def _ts_root(language: str, path: str, text: str) -> Any | None:
    parser = _parser(language)
    if parser is None:
        return None
    root = parser.parse(text.encode("utf-8")).root_node
    if root.has_error and language == "c" and path.lower().endswith(HEADERS) and _parser("cpp") is not None:
        cpp = _parser("cpp").parse(text.encode("utf-8")).root_node
        return cpp if not cpp.has_error else root
    return root


def _ts_error(root: Any) -> str:
    node = _first_error(root) or root
    line = node.start_point.row + 1
    if node.is_missing:
        return f"line {line}: missing {node.type!r}"
    token = " ".join(node.text.decode("utf-8", "replace").split("\n", 1)[0].split())[:30]
    return f"line {line}: syntax error near {token!r}" if token else f"line {line}: syntax error"


def _first_error(node: Any) -> Any | None:
    if node.type == "ERROR" or node.is_missing:
        return node
    for child in node.children:
        if child.has_error or child.is_missing:
            found = _first_error(child)
            if found is not None:
                return found
    return None


CLASSES = frozenset({
    "class_declaration", "abstract_class_declaration", "interface_declaration", "enum_declaration",
    "record_declaration", "annotation_type_declaration", "type_spec", "struct_item", "enum_item",
    "union_item", "trait_item", "class_specifier", "struct_specifier", "union_specifier", "enum_specifier",
})
FUNCTIONS = frozenset({
    "function_declaration", "generator_function_declaration", "function_signature", "method_definition",
    "method_signature", "abstract_method_signature", "method_declaration", "method_elem",
    "constructor_declaration", "compact_constructor_declaration", "function_item", "function_signature_item",
    "function_definition",
})
SCOPES = frozenset({
    "export_statement", "type_declaration", "mod_item", "declaration_list", "preproc_ifdef", "preproc_if",
    "preproc_else", "preproc_elif", "linkage_specification", "namespace_definition", "template_declaration",
    "enum_body_declarations", "ambient_declaration",
})
CLASS_BODIES = frozenset({"class_body", "interface_body", "enum_body", "field_declaration_list", "declaration_list"})
DECORATIONS = frozenset({"decorator", "annotation", "marker_annotation", "attribute_item", "comment", "line_comment", "block_comment"})
WRAPPERS = frozenset({"export_statement", "template_declaration", "ambient_declaration", "type_declaration"})
COMMENTS = frozenset({"comment", "line_comment", "block_comment"})
NAME_TYPES = frozenset({
    "identifier", "field_identifier", "type_identifier", "property_identifier", "private_property_identifier",
    "qualified_identifier", "destructor_name", "operator_name", "namespace_identifier",
})
FUNCTION_VALUES = frozenset({"arrow_function", "function_expression", "function", "generator_function"})


class _TreeWalk:
    """One pass over a tree-sitter tree, yielding Symbols in source order."""

    def __init__(self, language: str, source: bytes, is_header: bool) -> None:
        self.language = language
        self.source = source
        self.is_header = is_header

    def symbols(self, node: Any, owner: str) -> Iterator[Symbol]:
        for child in node.named_children:
            yield from self.symbol(child, owner)

    def symbol(self, node: Any, owner: str) -> Iterator[Symbol]:
        kind = node.type
        if kind in SCOPES and not (kind == "mod_item" and node.child_by_field_name("body") is None):
            yield from self.symbols(node.child_by_field_name("body") or node, owner)
        elif kind == "impl_item":
            yield from self.symbols(node.child_by_field_name("body"), _last_segment(self.text(node.child_by_field_name("type"))) + ".")
        elif kind in CLASSES:
            yield from self.class_symbols(node, owner)
        elif kind in FUNCTIONS:
            yield from self.function_symbol(node, owner)
        elif kind in ("declaration", "field_declaration", "type_definition"):
            yield from self.declaration_symbols(node, owner)
        elif kind in ("lexical_declaration", "variable_declaration", "const_declaration", "const_item", "static_item", "preproc_def"):
            yield from self.constant_symbols(node, owner)

    def class_symbols(self, node: Any, owner: str, name: str | None = None) -> Iterator[Symbol]:
        name = name or self.name(node)
        body = self.class_body(node)
        if name is None or (node.type.endswith("_specifier") and body is None):
            return
        yield self.make("class", owner + name, node, None if node.type == "type_spec" else body)
        if body is not None:
            yield from self.symbols(body, f"{owner}{name}.")

    def class_body(self, node: Any) -> Any | None:
        body = node.child_by_field_name("body")
        if body is None and node.type == "type_spec":
            inner = node.child_by_field_name("type")
            if inner is not None and inner.type == "interface_type":
                return inner
            body = inner.named_children[0] if inner is not None and inner.type == "struct_type" else None
        return body if body is not None and body.type in CLASS_BODIES | {"interface_type", "enum_variant_list"} else None

    def function_symbol(self, node: Any, owner: str) -> Iterator[Symbol]:
        name = self.name(node)
        if name is None:
            return
        if node.type == "method_declaration" and self.language == "go":
            owner = self.receiver(node) + "."
        name = name.replace("::", ".")
        kind = "method" if owner or "." in name else "function"
        yield self.make(kind, owner + name, node, node.child_by_field_name("body"))

    def declaration_symbols(self, node: Any, owner: str) -> Iterator[Symbol]:
        inner = node.child_by_field_name("type")
        if inner is not None and inner.type in CLASSES and self.class_body(inner) is not None:
            typedef = self.text(node.child_by_field_name("declarator")) if node.type == "type_definition" else ""
            symbols = list(self.class_symbols(inner, owner, self.name(inner) or typedef or None))
            if typedef and symbols:
                symbols[0] = replace(symbols[0], signature=f"typedef {symbols[0].signature} {typedef}")
            yield from symbols
            return
        if self.language == "java":
            yield from self.constant_symbols(node, owner)
            return
        declarator = node.child_by_field_name("declarator")
        header = owner or self.language not in ("c", "cpp") or self.is_header
        while declarator is not None and declarator.type in ("pointer_declarator", "reference_declarator"):
            declarator = declarator.child_by_field_name("declarator") or declarator.named_children[-1]
        if header and declarator is not None and declarator.type == "function_declarator" and node.type != "type_definition":
            yield from self.function_symbol(node, owner)

    def constant_symbols(self, node: Any, owner: str) -> Iterator[Symbol]:
        specs = [c for c in node.named_children if c.type in ("variable_declarator", "const_spec")] or [node]
        for spec in specs:
            name_node = spec.child_by_field_name("name")
            value = spec.child_by_field_name("value")
            name = self.text(name_node)
            if value is not None and value.type in FUNCTION_VALUES:
                yield self.make("method" if owner else "function", owner + name, node, value.child_by_field_name("body"))
            elif name and (value is not None or node.type != "preproc_def") and (CONSTANT_NAME.match(name) or node.type in ("const_declaration", "const_item")):
                shown = "..." if value is None else _short(self.text(value))
                line = spec.start_point.row + 1
                yield Symbol("constant", owner + name, line, _end_line(spec), f"{name} = {shown}", self.doc(node))

    def name(self, node: Any) -> str | None:
        found = node.child_by_field_name("name")
        if found is None:
            found = node.child_by_field_name("declarator")
            while found is not None and found.type not in NAME_TYPES:
                found = found.child_by_field_name("declarator") or (found.named_children[-1] if found.named_children else None)
        return self.text(found) or None

    def receiver(self, node: Any) -> str:
        receiver = node.child_by_field_name("receiver")
        stack = [receiver] if receiver is not None else []
        while stack:
            current = stack.pop(0)
            if current.type == "type_identifier":
                return self.text(current)
            stack.extend(current.named_children)
        return ""

    def make(self, kind: str, name: str, node: Any, body: Any | None) -> Symbol:
        start = self.signature_start(node)
        end = body.start_byte if body is not None and body.start_byte > start else node.end_byte
        signature = self.source[start:end].decode("utf-8", "replace")
        if body is None and kind == "class":
            signature = signature.split("{", 1)[0]
        signature = ("type " if node.type == "type_spec" else "") + signature.strip().rstrip("{;=").strip()
        signature = re.sub(r",?\s+\)", ")", re.sub(r"\(\s+", "(", " ".join(signature.split())))
        line = self.source.count(b"\n", 0, start) + 1
        return Symbol(kind, name, line, _end_line(node), _one_line(signature), self.doc(node))

    def signature_start(self, node: Any) -> int:
        start = node.start_byte
        for child in node.children:
            leading = child.named_children if child.type == "modifiers" else [child]
            decorations = [c for c in leading if c.type in DECORATIONS]
            if child.type not in DECORATIONS and not (child.type == "modifiers" and decorations):
                break
            start = max(start, decorations[-1].end_byte if decorations else child.end_byte)
            if child.type == "modifiers" and len(decorations) < len(leading):
                break
        while start < node.end_byte and self.source[start:start + 1].isspace():
            start += 1
        return start

    def doc(self, node: Any) -> str:
        anchor = node
        while anchor.parent is not None and anchor.parent.type in WRAPPERS:
            anchor = anchor.parent
        comments, row = [], anchor.start_point.row
        sibling = anchor.prev_sibling
        while sibling is not None and sibling.type in DECORATIONS and _end_line(sibling) >= row:
            if sibling.type in COMMENTS:
                comments.append(sibling)
            row, sibling = sibling.start_point.row, sibling.prev_sibling
        return _comment_line(self.text(comments[-1])) if comments else ""

    def text(self, node: Any | None) -> str:
        return "" if node is None else self.source[node.start_byte:node.end_byte].decode("utf-8", "replace")


def _end_line(node: Any) -> int:
    """1-based last line; a node ending just after a newline ends on the line before."""
    row, column = node.end_point
    return row if column == 0 and row > node.start_point.row else row + 1


def _last_segment(type_text: str) -> str:
    return re.sub(r"<.*", "", type_text, flags=re.S).split("::")[-1].strip()


def _comment_line(comment: str) -> str:
    for line in comment.splitlines():
        line = re.sub(r"^\s*(/\*\*?|\*/|\*|///?!?|//!)", "", line).removesuffix("*/").strip()
        if line:
            return line
    return ""

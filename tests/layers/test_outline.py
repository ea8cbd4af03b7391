from pathlib import Path

import pytest

from layers.outline import Symbol, defined_names, enclosing, outline, syntax_error

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "repo"

PYTHON = '''"""Module docstring."""
import functools

MAX = 10
LONG = "x" * 100 + "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
name = "a variable, not a constant"


@functools.cache
def f(x: int = 1, *args, key: str = "a", **kw) -> str:
    """Do f.

    More text.
    """
    def inner():
        pass
    return ""


class LRUCache(Cache, metaclass=Meta):
    """Least recently used."""
    SIZE = 3

    @property
    async def popitem(self):
        """Remove and return the least recently used pair."""

    class Node:
        def link(self, other: "Node") -> None: ...
'''


def test_python_symbols_in_source_order():
    assert outline("m.py", PYTHON) == [
        Symbol("constant", "MAX", 4, 4, "MAX = 10", ""),
        Symbol("constant", "LONG", 5, 5, "LONG = ...", ""),
        Symbol("function", "f", 10, 17, "def f(x: int=1, *args, key: str='a', **kw) -> str", "Do f."),
        Symbol("class", "LRUCache", 20, 29, "class LRUCache(Cache, metaclass=Meta)", "Least recently used."),
        Symbol("constant", "LRUCache.SIZE", 22, 22, "SIZE = 3", ""),
        Symbol("method", "LRUCache.popitem", 25, 26, "async def popitem(self)",
               "Remove and return the least recently used pair."),
        Symbol("class", "LRUCache.Node", 28, 29, "class Node", ""),
        Symbol("method", "LRUCache.Node.link", 29, 29, "def link(self, other: 'Node') -> None", ""),
    ]


def test_python_line_is_the_def_not_the_decorator():
    lines = PYTHON.splitlines()
    for symbol in outline("m.py", PYTHON) or []:
        assert lines[symbol.line - 1].lstrip().startswith(("def", "async def", "class", symbol.name.split(".")[-1]))


def test_definitions_under_if_and_try_are_kept():
    text = "try:\n    import fast\nexcept ImportError:\n    def fast(): ...\nif X:\n    class A: ...\n"
    assert [(s.name, s.line) for s in outline("m.py", text) or []] == [("fast", 4), ("A", 6)]


def test_example_repo_outline_matches_the_file():
    text = (EXAMPLE / "textstats" / "words.py").read_text(encoding="utf-8")
    symbols = {s.name: s for s in outline("textstats/words.py", text) or []}
    line = next(i for i, l in enumerate(text.splitlines(), 1) if l.startswith("def split_sentences("))
    assert symbols["split_sentences"].line == line
    assert symbols["split_sentences"].signature == "def split_sentences(text: str) -> list[str]"


def test_syntax_error_names_the_line():
    assert syntax_error("m.py", PYTHON) is None
    assert syntax_error("m.py", "x = 1\n\ndef f(:\n    pass\n") == "line 3: invalid syntax"
    assert outline("m.py", "def f(:\n") is None
    assert defined_names("m.py", "def f(:\n") is None


def test_unsupported_language_is_none():
    for path in ("notes.md", "data.json", "Makefile", "script.rb"):
        assert outline(path, "def f(): pass\n") is None
        assert syntax_error(path, "def f(:\n") is None
        assert defined_names(path, "x") is None


def test_defined_names_are_top_and_class_level():
    assert defined_names("m.py", PYTHON) == {
        "MAX", "LONG", "f", "LRUCache", "LRUCache.SIZE", "LRUCache.popitem", "LRUCache.Node", "LRUCache.Node.link",
    }


def test_enclosing_chain_outermost_first():
    symbols = outline("m.py", PYTHON) or []
    assert [s.name for s in enclosing(symbols, 29)] == ["LRUCache", "LRUCache.Node", "LRUCache.Node.link"]
    assert [s.name for s in enclosing(symbols, 15)] == ["f"]
    assert enclosing(symbols, 4) == []


TYPESCRIPT = """/** Adds two numbers. */
export function add(a: number, b = 2): number { return a + b; }
export const MAX = 10;
const mul = (a: number) => a * 2;
@Component({})
export class Cache<K> extends Base {
  // Gets a value.
  get(key: K): V | undefined { return undefined; }
  async *items() {}
}
interface Shape { area(): number }
"""

GO = """package cache

// MaxSize is the limit.
const MaxSize = 10

// Cache holds items.
type Cache struct {
\titems map[string]int
}

// Get returns it.
func (c *Cache) Get(key string) (int, bool) {
\treturn 0, false
}

func New(
\tsize int,
) *Cache {
\treturn nil
}
"""

RUST = """/// A cache.
/// More.
#[derive(Debug)]
pub struct Cache { items: Vec<u8> }
pub const MAX: usize = 10;
impl Cache {
    /// Makes one.
    pub fn new() -> Self { Cache { items: vec![] } }
}
pub trait Get { fn get(&self, k: &str) -> Option<i32>; }
async fn run() {}
"""

JAVA = """package a;
/** A cache. */
@Deprecated
public class Cache<K> extends Base {
    public static final int MAX_SIZE = 10;
    @Override
    public String toString() { return ""; }
    interface Getter { int get(String k); }
}
"""

CPP = """#ifndef CACHE_H
#define CACHE_H
#define MAX_SIZE 64
namespace ns {
/* A cache. */
class Cache : public Base {
 public:
  Cache(int n);
  int get(const char* key) const;
};
}
typedef struct { int x; } Point;
static int *
add(int a, int b) { return 0; }
#endif
"""

C = """#include <stdio.h>
// Sums two ints.
int sum(int a, int b) {
    return a + b;
}
struct node { int v; };
"""


def rows(path: str, text: str) -> list[tuple[str, str, int, str, str]]:
    return [(s.kind, s.name, s.line, s.signature, s.doc) for s in outline(path, text) or []]


def test_typescript():
    assert rows("src/a.ts", TYPESCRIPT) == [
        ("function", "add", 2, "function add(a: number, b = 2): number", "Adds two numbers."),
        ("constant", "MAX", 3, "MAX = 10", ""),
        ("function", "mul", 4, "const mul = (a: number) =>", ""),
        ("class", "Cache", 6, "class Cache<K> extends Base", ""),
        ("method", "Cache.get", 8, "get(key: K): V | undefined", "Gets a value."),
        ("method", "Cache.items", 9, "async *items()", ""),
        ("class", "Shape", 11, "interface Shape", ""),
        ("method", "Shape.area", 11, "area(): number", ""),
    ]


def test_javascript_parses_plain_js():
    text = "class A {\n  m(x) { return x; }\n}\nfunction f() {}\n"
    assert [(k, n, line) for k, n, line, _, _ in rows("a.js", text)] == [
        ("class", "A", 1), ("method", "A.m", 2), ("function", "f", 4),
    ]


def test_go():
    assert rows("cache.go", GO) == [
        ("constant", "MaxSize", 4, "MaxSize = 10", "MaxSize is the limit."),
        ("class", "Cache", 7, "type Cache struct", "Cache holds items."),
        ("method", "Cache.Get", 12, "func (c *Cache) Get(key string) (int, bool)", "Get returns it."),
        ("function", "New", 16, "func New(size int) *Cache", ""),
    ]


def test_rust():
    assert rows("lib.rs", RUST) == [
        ("class", "Cache", 4, "pub struct Cache", "A cache."),
        ("constant", "MAX", 5, "MAX = 10", ""),
        ("method", "Cache.new", 8, "pub fn new() -> Self", "Makes one."),
        ("class", "Get", 10, "pub trait Get", ""),
        ("method", "Get.get", 10, "fn get(&self, k: &str) -> Option<i32>", ""),
        ("function", "run", 11, "async fn run()", ""),
    ]


def test_java_annotations_are_not_the_signature():
    assert rows("Cache.java", JAVA) == [
        ("class", "Cache", 4, "public class Cache<K> extends Base", "A cache."),
        ("constant", "Cache.MAX_SIZE", 5, "MAX_SIZE = 10", ""),
        ("method", "Cache.toString", 7, "public String toString()", ""),
        ("class", "Cache.Getter", 8, "interface Getter", ""),
        ("method", "Cache.Getter.get", 8, "int get(String k)", ""),
    ]


def test_cpp_header():
    assert rows("cache.hpp", CPP) == [
        ("constant", "MAX_SIZE", 3, "MAX_SIZE = 64", ""),
        ("class", "Cache", 6, "class Cache : public Base", "A cache."),
        ("method", "Cache.Cache", 8, "Cache(int n)", ""),
        ("method", "Cache.get", 9, "int get(const char* key) const", ""),
        ("class", "Point", 12, "typedef struct Point", ""),
        ("function", "add", 13, "static int * add(int a, int b)", ""),
    ]


def test_c():
    assert rows("sum.c", C) == [
        ("function", "sum", 3, "int sum(int a, int b)", "Sums two ints."),
        ("class", "node", 6, "struct node", ""),
    ]


def test_end_lines_cover_the_body():
    symbols = {s.name: s for s in outline("cache.go", GO) or []}
    assert (symbols["Cache.Get"].line, symbols["Cache.Get"].end_line) == (12, 14)
    assert [s.name for s in enclosing(list(symbols.values()), 13)] == ["Cache.Get"]


@pytest.mark.parametrize("path,text,line", [
    ("a.js", "function f() {}\nfunction g( {\n  return 1;\n}\n", 2),
    ("a.go", "package x\n\nfunc f() int {\n\treturn 1 +\n}\n", 4),
    ("a.c", "int f() {\n  return 1\n}\n", 2),
    ("a.rs", "fn f() {\n    let x = ;\n}\n", 2),
    ("A.java", "class A {\n  void f() {\n    int x = ;\n  }\n}\n", 3),
])
def test_tree_sitter_syntax_errors_name_the_line(path, text, line):
    error = syntax_error(path, text)
    assert error is not None and error.startswith(f"line {line}: ")
    assert outline(path, text) is None
    assert defined_names(path, text) is None


@pytest.mark.parametrize("path,text", [("a.ts", TYPESCRIPT), ("a.go", GO), ("a.rs", RUST), ("A.java", JAVA),
                                       ("a.hpp", CPP), ("a.c", C)])
def test_clean_sources_have_no_syntax_error(path, text):
    assert syntax_error(path, text) is None


def test_a_constant_shows_its_value_as_the_source_writes_it():
    text = 'import re\nVOWELS = re.compile(r"[aeiouy]+")\nSEP: str = "\\n"\nQUOTED = \'x\'\n'
    values = [s.signature for s in outline("m.py", text)]
    assert values == ['VOWELS = re.compile(r"[aeiouy]+")', 'SEP = "\\n"', "QUOTED = 'x'"]
    assert all(value.split(" = ", 1)[1] in text for value in values)  # each is a slice of the file

"""write_file and edit_file lose nothing silently: a write that drops definitions or most lines, or an edit that
breaks a file's syntax, is refused with what it would lose and the file left byte-identical; what a change
replaced comes back in the outcome."""
from __future__ import annotations

from pathlib import Path

import pytest

from agentcache.tools import ToolBox
from agentcache.tools.base import Change
from agentcache.tools.files import MAX_EDIT_BYTES, MAX_NAMED, MIN_GUARDED_LINES, WHOLE_FILE_LINES
from layers.outline import defined_names

LRU = (Path(__file__).parent / "data" / "lru.py").read_text()
LRU_NAMES = ["CacheError", "DEFAULT_SIZE", "LRUCache", "LRUCache.__getitem__", "LRUCache.__init__",
             "LRUCache.__len__", "LRUCache.__setitem__", "LRUCache.clear", "LRUCache.popitem", "cached"]
NEW_FUNCTION = 'def peek(cache, key):\n    """The value of key without refreshing it."""\n    return cache.data[key]\n'
KEEP_HINT = "use edit_file to change part of the file, or write the whole file with them kept"


@pytest.fixture
def lru(repo: Path) -> Path:
    (repo / "lru.py").write_text(LRU)
    return repo / "lru.py"


def test_the_54_line_module_is_not_replaced_by_its_one_new_function(box: ToolBox, lru: Path) -> None:
    assert len(LRU.splitlines()) == 54 and sorted(defined_names("lru.py", LRU)) == LRU_NAMES
    before = lru.read_bytes()
    outcome = box.run("write_file", {"path": "lru.py", "content": NEW_FUNCTION})
    assert outcome.is_error and outcome.change is None
    assert outcome.output == (f"write_file: the new content drops 10 of the names lru.py defines: "
                              f"{', '.join(LRU_NAMES)}; {KEEP_HINT}. lru.py is unchanged")
    assert lru.read_bytes() == before


def test_a_write_keeping_every_name_and_adding_one_is_accepted(box: ToolBox, lru: Path) -> None:
    content = LRU.replace("DEFAULT_SIZE = 128", "DEFAULT_SIZE = 256") + "\n\n" + NEW_FUNCTION
    outcome = box.run("write_file", {"path": "lru.py", "content": content})
    assert not outcome.is_error and outcome.output == f"replaced lru.py ({len(content.encode())} bytes)"
    assert lru.read_text() == content
    assert outcome.change == Change("lru.py", 1, LRU, content)


def test_a_rename_counts_as_dropping_the_old_name(box: ToolBox, lru: Path) -> None:
    outcome = box.run("write_file", {"path": "lru.py", "content": LRU.replace("def clear(", "def reset(")})
    assert outcome.is_error and "drops 1 of the names lru.py defines: LRUCache.clear;" in outcome.output
    assert lru.read_text() == LRU


def test_a_long_list_of_dropped_names_is_capped(repo: Path, box: ToolBox) -> None:
    names = [f"f{i:02d}" for i in range(MAX_NAMED + 5)]
    (repo / "many.py").write_text("".join(f"def {name}():\n    pass\n" for name in names))
    outcome = box.run("write_file", {"path": "many.py", "content": "x = 1\n"})
    assert f"drops {len(names)} of the names many.py defines: {', '.join(names[:MAX_NAMED])} and 5 more;" \
        in outcome.output


def test_creating_a_file_is_not_guarded_by_what_is_not_there(box: ToolBox, repo: Path) -> None:
    outcome = box.run("write_file", {"path": "pkg/new.py", "content": NEW_FUNCTION})
    assert outcome.output == f"created pkg/new.py ({len(NEW_FUNCTION)} bytes)"
    assert outcome.change == Change("pkg/new.py", 1, None, NEW_FUNCTION)


def text_lines(count: int) -> str:
    return "".join(f"note {i}: something worth keeping\n\n" for i in range(1, count + 1))


def test_a_file_without_an_outline_keeps_at_least_half_its_lines(repo: Path, box: ToolBox) -> None:
    (repo / "notes.txt").write_text(text_lines(20))
    kept_half = "".join(f"note {i}: something worth keeping\n" for i in range(11, 21)) + "a new line\n"
    assert not box.run("write_file", {"path": "notes.txt", "content": kept_half}).is_error
    (repo / "notes.txt").write_text(text_lines(20))
    outcome = box.run("write_file", {"path": "notes.txt", "content": "note 1: something worth keeping\nnew\n"})
    assert outcome.output == (f"write_file: the new content drops 19 of the 20 non-blank lines notes.txt has "
                              f"(lines 3, 5, 7, 9, 11, 13, 15, 17, 19, 21 and 9 more); {KEEP_HINT}. "
                              "notes.txt is unchanged")
    assert (repo / "notes.txt").read_text() == text_lines(20)


def test_the_line_rule_names_ranges_and_counts_repeated_lines_once_each(repo: Path, box: ToolBox) -> None:
    (repo / "data.txt").write_text("same\n" * 12)
    outcome = box.run("write_file", {"path": "data.txt", "content": "same\n" * 5})
    assert "drops 7 of the 12 non-blank lines data.txt has (lines 6-12);" in outcome.output


def test_a_short_file_without_an_outline_may_be_rewritten_whole(repo: Path, box: ToolBox) -> None:
    (repo / "short.md").write_text(text_lines(MIN_GUARDED_LINES - 1))
    assert not box.run("write_file", {"path": "short.md", "content": "all new\n"}).is_error


def test_a_python_file_with_no_definitions_is_judged_by_its_lines(repo: Path, box: ToolBox) -> None:
    script = "".join(f"print({i})\n" for i in range(12))
    (repo / "script.py").write_text(script)
    outcome = box.run("write_file", {"path": "script.py", "content": "print('done')\n"})
    assert outcome.is_error and "drops 12 of the 12 non-blank lines script.py has (lines 1-12)" in outcome.output
    assert (repo / "script.py").read_text() == script


def test_a_huge_file_is_not_replaced_whole(repo: Path, box: ToolBox) -> None:
    (repo / "big.txt").write_text("z" * (MAX_EDIT_BYTES + 1))
    outcome = box.run("write_file", {"path": "big.txt", "content": "small\n"})
    assert outcome.is_error and "will not replace a huge file whole" in outcome.output
    assert (repo / "big.txt").stat().st_size == MAX_EDIT_BYTES + 1


def test_a_write_that_breaks_python_syntax_is_refused(box: ToolBox, lru: Path) -> None:
    broken = LRU.replace("def clear(self) -> None:", "def clear(self) -> None")
    outcome = box.run("write_file", {"path": "lru.py", "content": broken})
    assert outcome.output == "write_file: lru.py would no longer parse (line 40: expected ':'); lru.py is unchanged"
    assert lru.read_text() == LRU


def test_a_new_python_file_that_does_not_parse_is_not_created(repo: Path, box: ToolBox) -> None:
    outcome = box.run("write_file", {"path": "pkg/bad.py", "content": "def f(:\n    pass\n"})
    assert outcome.is_error and outcome.output.startswith("write_file: the content for pkg/bad.py does not parse "
                                                          "(line 1: ")
    assert outcome.output.endswith("; the file was not created")
    assert not (repo / "pkg").exists()


def test_a_file_that_did_not_parse_may_be_rewritten_broken(repo: Path, box: ToolBox) -> None:
    (repo / "wip.py").write_text("def f(:\n    pass\n")
    outcome = box.run("write_file", {"path": "wip.py", "content": "def f(x:\n    pass\n"})
    assert not outcome.is_error and (repo / "wip.py").read_text() == "def f(x:\n    pass\n"


def test_an_edit_that_breaks_python_syntax_is_refused_with_the_line(box: ToolBox, lru: Path) -> None:
    outcome = box.run("edit_file", {"path": "lru.py", "old": "        self.data.clear()\n",
                                    "new": "        self.data.clear(\n"})
    assert outcome.is_error and outcome.output.startswith("edit_file: lru.py would no longer parse (line 41: ")
    assert outcome.output.endswith("; lru.py is unchanged")
    assert lru.read_text() == LRU


def test_an_edit_of_a_file_that_did_not_parse_is_let_through(repo: Path, box: ToolBox) -> None:
    (repo / "wip.py").write_text("def f(:\n    return 1\n")
    assert not box.run("edit_file", {"path": "wip.py", "old": "return 1", "new": "return 2"}).is_error
    assert not box.run("edit_file", {"path": "wip.py", "old": "def f(:", "new": "def f():"}).is_error
    assert (repo / "wip.py").read_text() == "def f():\n    return 2\n"


def test_an_edit_returns_what_it_replaced(box: ToolBox, lru: Path) -> None:
    outcome = box.run("edit_file", {"path": "lru.py", "old": "DEFAULT_SIZE = 128", "new": "DEFAULT_SIZE = 64"})
    assert outcome.change == Change("lru.py", 6, "DEFAULT_SIZE = 128", "DEFAULT_SIZE = 64")


JS = "function add(a, b) {\n  return a + b;\n}\n\nfunction sub(a, b) {\n  return a - b;\n}\n"


def test_javascript_is_guarded_through_tree_sitter(repo: Path, box: ToolBox) -> None:
    (repo / "math.js").write_text(JS)
    outcome = box.run("edit_file", {"path": "math.js", "old": "return a + b;", "new": "return (a + b;"})
    assert outcome.is_error and outcome.output.startswith("edit_file: math.js would no longer parse (line 2: ")
    outcome = box.run("write_file", {"path": "math.js", "content": "function mul(a, b) {\n  return a * b;\n}\n"})
    assert outcome.is_error and "drops 2 of the names math.js defines: add, sub;" in outcome.output
    assert (repo / "math.js").read_text() == JS


def test_a_file_over_the_whole_file_limit_is_changed_by_edit_file_not_rewritten(box: ToolBox, repo: Path) -> None:
    long = "".join(f"X{n} = {n}\n" for n in range(WHOLE_FILE_LINES + 1))
    (repo / "consts.py").write_text(long)
    outcome = box.run("write_file", {"path": "consts.py", "content": long + "Y = 1\n"})
    assert outcome.is_error and outcome.change is None
    assert outcome.output == (f"write_file: consts.py has {WHOLE_FILE_LINES + 1} lines; write_file rewrites only "
                              f"files of up to {WHOLE_FILE_LINES} lines: use edit_file with the exact old lines and "
                              "the new ones. consts.py is unchanged")
    assert (repo / "consts.py").read_text() == long
    edited = box.run("edit_file", {"path": "consts.py", "old": f"X{WHOLE_FILE_LINES} = {WHOLE_FILE_LINES}\n",
                                   "new": f"X{WHOLE_FILE_LINES} = {WHOLE_FILE_LINES}\nY = 1\n"})
    assert not edited.is_error and (repo / "consts.py").read_text() == long + "Y = 1\n"
    at_limit = long[: long.index(f"X{WHOLE_FILE_LINES} =")]
    (repo / "short.py").write_text(at_limit)
    assert not box.run("write_file", {"path": "short.py", "content": at_limit + "Y = 1\n"}).is_error

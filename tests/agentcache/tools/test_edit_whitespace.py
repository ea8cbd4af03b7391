"""edit_file's second try: when `old` is not in the file exactly, a unique whole-line match that ignores trailing
whitespace and the block's common indentation, with `new` re-indented by the same offset; exact always first."""
from __future__ import annotations

from pathlib import Path

from agentcache.tools import ToolBox

SOURCE = """class Greeter:
    def greet(self, name):
        if name:
            return f"hello {name}"
        return "hello"

    def part(self):
        return "bye"
"""


def test_a_block_copied_without_its_indentation_is_matched_and_new_reindented(repo: Path, box: ToolBox) -> None:
    (repo / "greet.py").write_text(SOURCE)
    old = 'if name:\n    return f"hello {name}"\n'
    new = 'if name:\n    return f"hi {name}"\nif name == "":\n    return "nobody"\n'
    outcome = box.run("edit_file", {"path": "greet.py", "old": old, "new": new})
    assert outcome.output == ("edited greet.py: replaced 1 occurrence at line 3 "
                              "(matched ignoring whitespace at line 3; new re-indented by +8)")
    assert (repo / "greet.py").read_text() == SOURCE.replace(
        '        if name:\n            return f"hello {name}"\n',
        '        if name:\n            return f"hi {name}"\n        if name == "":\n            return "nobody"\n')
    assert outcome.change.before == '        if name:\n            return f"hello {name}"\n'


def test_trailing_whitespace_is_ignored_on_either_side(repo: Path, box: ToolBox) -> None:
    (repo / "t.txt").write_text("alpha  \nbeta\t\ngamma\n")
    outcome = box.run("edit_file", {"path": "t.txt", "old": "alpha\nbeta  ", "new": "ALPHA\nBETA"})
    assert outcome.output == "edited t.txt: replaced 1 occurrence at line 1 (matched ignoring whitespace at line 1)"
    assert (repo / "t.txt").read_text() == "ALPHA\nBETA\ngamma\n"


def test_an_over_indented_old_is_shifted_back(repo: Path, box: ToolBox) -> None:
    (repo / "greet.py").write_text(SOURCE)
    outcome = box.run("edit_file", {"path": "greet.py", "old": "            return \"hello\"\n",
                                    "new": "            return \"hello, stranger\"\n"})
    assert outcome.output.endswith("(matched ignoring whitespace at line 5; new re-indented by -4)")
    assert (repo / "greet.py").read_text() == SOURCE.replace('return "hello"\n', 'return "hello, stranger"\n')


def test_an_ambiguous_whitespace_match_is_refused(repo: Path, box: ToolBox) -> None:
    text = "def a():\n    return 1\n\ndef b():\n        return 1\n"
    (repo / "two.py").write_text(text)
    outcome = box.run("edit_file", {"path": "two.py", "old": "return 1 ", "new": "return 2"})
    assert outcome.output == ("edit_file: old text is not in two.py exactly, and ignoring whitespace it matches 2 "
                              "places (lines 2, 5); include more context so it occurs once")
    assert (repo / "two.py").read_text() == text


def test_the_exact_match_wins_over_a_whitespace_match(repo: Path, box: ToolBox) -> None:
    (repo / "x.txt").write_text("  value\nvalue  \n")
    outcome = box.run("edit_file", {"path": "x.txt", "old": "value  ", "new": "v"})
    assert outcome.output == "edited x.txt: replaced 1 occurrence at line 2"
    assert (repo / "x.txt").read_text() == "  value\nv\n"


def test_inner_whitespace_and_relative_indentation_still_count(repo: Path, box: ToolBox) -> None:
    (repo / "greet.py").write_text(SOURCE)
    for old in ['return  "bye"', 'if name:\nreturn f"hello {name}"', "   \n\n"]:
        outcome = box.run("edit_file", {"path": "greet.py", "old": old, "new": "x"})
        assert outcome.is_error and "old text not found in greet.py" in outcome.output, old
    assert (repo / "greet.py").read_text() == SOURCE


def test_a_whitespace_match_still_passes_the_syntax_gate(repo: Path, box: ToolBox) -> None:
    (repo / "greet.py").write_text(SOURCE)
    outcome = box.run("edit_file", {"path": "greet.py", "old": 'def part(self):\n    return "bye"',
                                    "new": 'def part(self):\nreturn "bye"'})
    assert outcome.output.startswith("edit_file: greet.py would no longer parse (line 8: ")
    assert (repo / "greet.py").read_text() == SOURCE


def test_old_text_written_from_memory_gets_the_closest_lines_to_copy(repo: Path, box: ToolBox) -> None:
    (repo / "greet.py").write_text(SOURCE)
    outcome = box.run("edit_file", {"path": "greet.py", "old": "def greet(self, who):\n    if who:\n", "new": "x"})
    assert outcome.is_error and outcome.output == (
        "edit_file: old text not found in greet.py; the closest text is at line 2; copy the old text exactly from "
        "it (or read the file):\n```\n    def greet(self, name):\n        if name:\n            return f\"hello "
        "{name}\"\n```")
    unlike = box.run("edit_file", {"path": "greet.py", "old": "import numpy as np\n", "new": "x"})
    assert unlike.output == "edit_file: old text not found in greet.py; read the file and copy the text exactly"
    assert (repo / "greet.py").read_text() == SOURCE


def test_a_path_with_a_line_after_it_edits_that_file(repo: Path, box: ToolBox) -> None:
    (repo / "greet.py").write_text(SOURCE)
    outcome = box.run("edit_file", {"path": "greet.py:7", "old": "def part(self):", "new": "def part(self, x=0):"})
    assert outcome.output == "edited greet.py: replaced 1 occurrence at line 7"
    assert (repo / "greet.py").read_text() == SOURCE.replace("def part(self):", "def part(self, x=0):")
    missing = box.run("edit_file", {"path": "gone.py:7", "old": "a", "new": "b"})
    assert missing.output == "edit_file: file not found: gone.py"

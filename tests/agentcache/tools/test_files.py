"""list_files, read_file, write_file and edit_file: happy paths, limits, binary and huge files."""
from __future__ import annotations

from pathlib import Path

from agentcache.tools import ToolBox
from agentcache.tools.files import MAX_EDIT_BYTES, MAX_LINES, READ_WINDOW


def test_list_files_is_sorted_and_safe(box: ToolBox) -> None:
    outcome = box.run("list_files", {})
    assert not outcome.is_error
    assert outcome.output.splitlines() == [".gitignore", "README.md", "src/app.py", "src/util.py"]


def test_list_files_of_a_directory(box: ToolBox) -> None:
    assert box.run("list_files", {"path": "src"}).output.splitlines() == ["src/app.py", "src/util.py"]
    assert box.run("list_files", {"path": "src/"}).output.splitlines() == ["src/app.py", "src/util.py"]


def test_list_files_of_a_file_or_missing_dir_is_an_error(box: ToolBox) -> None:
    assert box.run("list_files", {"path": "README.md"}).is_error
    outcome = box.run("list_files", {"path": "nope"})
    assert outcome.is_error and "not a directory: nope" in outcome.output


def test_read_file_numbers_lines(box: ToolBox) -> None:
    outcome = box.run("read_file", {"path": "src/app.py"})
    assert not outcome.is_error
    assert outcome.output == "     1\tdef main():\n     2\t    return 42"


def test_read_file_range(repo: Path, box: ToolBox) -> None:
    (repo / "ten.txt").write_text("".join(f"line {i}\n" for i in range(1, 11)))
    outcome = box.run("read_file", {"path": "ten.txt", "start_line": 3, "end_line": 4})
    assert outcome.output == "     3\tline 3\n     4\tline 4"
    assert box.run("read_file", {"path": "ten.txt", "start_line": 10}).output == "    10\tline 10"


def test_read_file_bad_ranges(repo: Path, box: ToolBox) -> None:
    outcome = box.run("read_file", {"path": "README.md", "start_line": 5})
    assert outcome.is_error and "past the end" in outcome.output and "2 lines" in outcome.output
    outcome = box.run("read_file", {"path": "README.md", "start_line": 2, "end_line": 1})
    assert outcome.is_error and "before start_line" in outcome.output


def test_read_empty_and_missing_file(repo: Path, box: ToolBox) -> None:
    (repo / "empty.txt").write_text("")
    assert box.run("read_file", {"path": "empty.txt"}).output == "(empty.txt is empty)"
    outcome = box.run("read_file", {"path": "missing.txt"})
    assert outcome.is_error and "file not found: missing.txt" in outcome.output


def test_read_binary_is_refused(repo: Path, box: ToolBox) -> None:
    (repo / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(256)))
    outcome = box.run("read_file", {"path": "image.png"})
    assert outcome.is_error and "binary file" in outcome.output


def test_read_non_utf8_is_refused(repo: Path, box: ToolBox) -> None:
    (repo / "latin1.txt").write_bytes("ok\ncaf\xe9\n".encode("latin-1"))
    outcome = box.run("read_file", {"path": "latin1.txt"})
    assert outcome.is_error and "not UTF-8" in outcome.output and "line 2" in outcome.output


def test_read_private_key_content_is_refused(repo: Path, box: ToolBox) -> None:
    (repo / "notes.txt").write_text("-----BEGIN RSA PRIVATE KEY-----\nabc\n")
    outcome = box.run("read_file", {"path": "notes.txt"})
    assert outcome.is_error and "private key" in outcome.output


def test_huge_file_is_truncated_with_marker(repo: Path, box: ToolBox) -> None:
    count = 60_000
    (repo / "huge.txt").write_text("".join(f"row {i:08d} {'x' * 20}\n" for i in range(1, count + 1)))
    assert (repo / "huge.txt").stat().st_size > MAX_EDIT_BYTES
    lines = box.run("read_file", {"path": "huge.txt"}).output.splitlines()
    assert len(lines) == READ_WINDOW + 1
    assert lines[-2].endswith(f"row {READ_WINDOW:08d} {'x' * 20}")
    assert lines[-1] == f"[truncated: {count - READ_WINDOW} more lines; continue with start_line={READ_WINDOW + 1}]"
    ranged = box.run("read_file", {"path": "huge.txt", "start_line": 1, "end_line": count}).output.splitlines()
    assert len(ranged) == MAX_LINES + 1 and ranged[-2].endswith(f"row {MAX_LINES:08d} {'x' * 20}")
    assert ranged[-1] == f"[truncated: {count - MAX_LINES} more lines; continue with start_line={MAX_LINES + 1}]"
    tail = box.run("read_file", {"path": "huge.txt", "start_line": count - 1}).output.splitlines()
    assert len(tail) == 2 and tail[-1].endswith(f"row {count:08d} {'x' * 20}")


def test_listing_a_file_says_to_read_it(repo: Path, box: ToolBox) -> None:
    outcome = box.run("list_files", {"path": "src/app.py"})
    assert outcome.is_error and outcome.output == "list_files: src/app.py is a file, not a directory: read it with read_file"
    assert box.run("list_files", {"path": "nowhere"}).output == "list_files: not a directory: nowhere"


def long_module(functions: int) -> str:
    """A module of `functions` ten-line functions, function k starting at line 10 * k + 1."""
    return "".join(f"def f{k}(a, b={k}):\n    \"\"\"Function {k}.\"\"\"\n" + "    a += 1\n" * 7 + "    return a\n"
                   for k in range(functions))


def test_a_long_file_read_with_no_range_is_its_outline(repo: Path, box: ToolBox) -> None:
    (repo / "long.py").write_text(long_module(40))
    shown = box.run("read_file", {"path": "long.py"}).output.splitlines()
    assert shown[0].startswith("[long.py has 400 lines; its outline follows.")
    assert shown[1:] == [f"{10 * k + 1:>4} def f{k}(a, b={k})  # Function {k}." for k in range(40)]
    window = box.run("read_file", {"path": "long.py", "start_line": 2}).output.splitlines()
    assert len(window) == READ_WINDOW + 1 and window[-1] == "[truncated: 99 more lines; continue with start_line=302]"
    (repo / "short.py").write_text(long_module(READ_WINDOW // 10))
    assert len(box.run("read_file", {"path": "short.py"}).output.splitlines()) == READ_WINDOW


def test_a_read_from_a_definitions_line_ends_with_it(repo: Path, box: ToolBox) -> None:
    (repo / "long.py").write_text(long_module(40))
    shown = box.run("read_file", {"path": "long.py", "start_line": 121}).output.splitlines()
    assert shown[0] == "   121\tdef f12(a, b=12):" and shown[-2] == "   130\t    return a"
    assert shown[-1] == "[shown to line 130, the end of `f12`, which starts in the lines asked for]"
    assert box.run("read_file", {"path": "long.py:121"}).output.splitlines() == shown
    inside = box.run("read_file", {"path": "long.py", "start_line": 362}).output.splitlines()
    assert len(inside) == 39 and inside[0] == '   362\t    """Function 36."""' and inside[-1].endswith("return a")


def test_long_lines_are_cut_by_the_output_cap(repo: Path, box: ToolBox) -> None:
    (repo / "wide.txt").write_text(("y" * 1500 + "\n") * 400)
    lines = box.run("read_file", {"path": "wide.txt"}).output.splitlines()
    shown = len(lines) - 1
    assert 100 < shown < 400
    assert lines[-1] == f"[truncated: {400 - shown} more lines; continue with start_line={shown + 1}]"


def test_write_file_creates_parents_and_overwrites(repo: Path, box: ToolBox) -> None:
    outcome = box.run("write_file", {"path": "new/deep/file.txt", "content": "héllo\n"})
    assert not outcome.is_error and outcome.output == "created new/deep/file.txt (7 bytes)"
    assert (repo / "new" / "deep" / "file.txt").read_text() == "héllo\n"
    outcome = box.run("write_file", {"path": "README.md", "content": "replaced"})
    assert outcome.output == "replaced README.md (8 bytes)"
    assert (repo / "README.md").read_text() == "replaced"


def test_write_file_onto_a_directory_is_an_error(box: ToolBox) -> None:
    outcome = box.run("write_file", {"path": "src", "content": "x"})
    assert outcome.is_error and "not a regular file" in outcome.output


def test_edit_file_replaces_one_occurrence(repo: Path, box: ToolBox) -> None:
    outcome = box.run("edit_file", {"path": "src/app.py", "old": "return 42", "new": "return 43"})
    assert not outcome.is_error and outcome.output == "edited src/app.py: replaced 1 occurrence at line 2"
    assert (repo / "src" / "app.py").read_text() == "def main():\n    return 43\n"


def test_edit_file_absent_text(repo: Path, box: ToolBox) -> None:
    outcome = box.run("edit_file", {"path": "src/app.py", "old": "return 99", "new": "x"})
    assert outcome.is_error and "not found in src/app.py" in outcome.output
    assert (repo / "src" / "app.py").read_text() == "def main():\n    return 42\n"


def test_edit_file_ambiguous_text_says_how_many(repo: Path, box: ToolBox) -> None:
    (repo / "dup.txt").write_text("a = 1\nb = 1\nc = 1\n")
    outcome = box.run("edit_file", {"path": "dup.txt", "old": " = 1", "new": " = 2"})
    assert outcome.is_error and "occurs 3 times" in outcome.output
    assert (repo / "dup.txt").read_text() == "a = 1\nb = 1\nc = 1\n"


def test_edit_file_empty_old_and_huge_file_are_refused(repo: Path, box: ToolBox) -> None:
    empty = box.run("edit_file", {"path": "README.md", "old": "", "new": "x"}).output
    assert "'old' is empty" in empty and "to add code, old is the exact lines it goes after" in empty
    (repo / "big.txt").write_text("z" * (MAX_EDIT_BYTES + 1))
    outcome = box.run("edit_file", {"path": "big.txt", "old": "zz", "new": "y"})
    assert outcome.is_error and "huge" in outcome.output


def test_write_file_never_overwrites_a_private_key(repo: Path, box: ToolBox) -> None:
    key = b"-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n"
    (repo / "deploy.txt").write_bytes(key)
    outcome = box.run("write_file", {"path": "deploy.txt", "content": "gone\n"})
    assert outcome.is_error and "private key" in outcome.output
    assert (repo / "deploy.txt").read_bytes() == key

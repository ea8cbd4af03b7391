"""read_file takes a definition's address as search, the repo map and the lookup write it (`path:line`): a path
that names no file, where the part before `:line` does, is read from that line."""

from pathlib import Path

from agentcache.tools.toolbox import ToolBox


def test_path_colon_line_reads_from_that_line(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("".join(f"line {n}\n" for n in range(1, 21)))
    box = ToolBox(tmp_path)
    out = box.run("read_file", {"path": "pkg/mod.py:15"})
    assert not out.is_error and out.output.splitlines()[0] == "    15\tline 15" and len(out.output.splitlines()) == 6
    assert box.run("read_file", {"path": "pkg/mod.py:15:4", "end_line": 16}).output.splitlines() == \
        ["    15\tline 15", "    16\tline 16"]
    assert box.run("read_file", {"path": "pkg/mod.py:15", "start_line": 2}).output.splitlines()[0] == "     2\tline 2"
    assert "past the end" in box.run("read_file", {"path": "pkg/mod.py:99"}).output


def test_a_file_whose_name_has_a_colon_is_read_as_it_is(tmp_path):
    (tmp_path / "notes.txt:3").write_text("a\n")
    (tmp_path / "notes.txt").write_text("x\ny\nz\nw\n")
    assert ToolBox(tmp_path).run("read_file", {"path": "notes.txt:3"}).output == "     1\ta"


def test_the_address_does_not_reach_outside_or_into_secrets(tmp_path):
    (tmp_path / ".env").write_text("KEY=1\nB=2\n")
    box = ToolBox(tmp_path)
    assert "secret file" in box.run("read_file", {"path": ".env:2"}).output
    assert "outside the repository" in box.run("read_file", {"path": "../x.py:2"}).output


MODULE = (Path(__file__).parent / "data" / "count.py").read_text()  # Counter: lines 11-21, add: 19-21


def test_a_read_of_a_definitions_first_line_shows_the_whole_definition(tmp_path):
    (tmp_path / "count.py").write_text(MODULE)
    box = ToolBox(tmp_path)
    one_line = box.run("read_file", {"path": "count.py", "start_line": 11, "end_line": 11}).output.splitlines()
    assert [line.split("\t")[0].strip() for line in one_line[:-1]] == [str(n) for n in range(11, 22)]
    assert one_line[-1] == "[shown to line 21, the end of `Counter`, which starts in the lines asked for]"
    method = box.run("read_file", {"path": "count.py:19", "end_line": 19}).output.splitlines()
    assert method[0] == "    19\t    def add(self, k):" and method[2] == "    21\t        return self.n"
    assert "the end of `Counter.add`" in method[-1]


def test_a_range_inside_or_around_definitions_is_read_as_asked(tmp_path):
    (tmp_path / "count.py").write_text(MODULE)
    (tmp_path / "notes.txt").write_text(MODULE)
    box = ToolBox(tmp_path)
    assert len(box.run("read_file", {"path": "count.py", "start_line": 12, "end_line": 13}).output.splitlines()) == 2
    assert len(box.run("read_file", {"path": "count.py", "start_line": 5, "end_line": 6}).output.splitlines()) == 2
    assert len(box.run("read_file", {"path": "count.py", "start_line": 4, "end_line": 4}).output.splitlines()) == 1
    assert len(box.run("read_file", {"path": "notes.txt", "start_line": 11, "end_line": 11}).output.splitlines()) == 1

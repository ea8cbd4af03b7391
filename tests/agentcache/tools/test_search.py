"""search: the count of matching lines, then regex matches grouped by file (the path, then `N: text`), glob
filtering, caps and invalid patterns."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from agentcache.tools import ToolBox
from agentcache.tools.search import MAX_FILE_MATCHES, MAX_MATCHES


def test_search_finds_matches_in_order(box: ToolBox) -> None:
    outcome = box.run("search", {"pattern": r"def \w+\(\)"})
    assert not outcome.is_error
    assert outcome.output == "[2 matching lines]\nsrc/app.py\n  1: def main():\nsrc/util.py\n  1: def helper():"


def test_search_no_matches(box: ToolBox) -> None:
    outcome = box.run("search", {"pattern": "zebra"})
    assert not outcome.is_error and outcome.output.startswith("(no matches in 4 files)")


@pytest.mark.parametrize(("glob", "expected"), [
    ("*.py", ["src/app.py", "src/util.py"]),
    ("src/**/*.py", ["src/app.py", "src/util.py"]),
    ("src", ["src/app.py", "src/deep/inner.txt", "src/util.py"]),
    ("src/a*.py", ["src/app.py"]),
    ("src/[u]til.py", ["src/util.py"]),
    ("*.md", ["README.md"]),
    ("docs/*", []),
])
def test_search_glob_filters_files(repo: Path, box: ToolBox, glob: str, expected: list[str]) -> None:
    (repo / "src" / "deep").mkdir()
    (repo / "src" / "deep" / "inner.txt").write_text("e\n")
    output = box.run("search", {"pattern": "e", "path": glob}).output
    files = sorted(line for line in output.splitlines() if not line.startswith(("(", " ", "[")))
    assert files == expected


def test_search_glob_double_star_reaches_nested_files(repo: Path, box: ToolBox) -> None:
    (repo / "src" / "deep").mkdir()
    (repo / "src" / "deep" / "inner.py").write_text("needle = 1\n")
    outcome = box.run("search", {"pattern": "needle", "path": "src/**/*.py"})
    assert outcome.output == "[1 matching line]\nsrc/deep/inner.py\n  1: needle = 1"
    assert box.run("search", {"pattern": "needle", "path": "src/*.py"}).output.startswith("(no matches")


def test_search_glob_outside_root_is_an_error(box: ToolBox) -> None:
    assert "outside the repository root" in box.run("search", {"pattern": "x", "path": "../*"}).output


def test_invalid_regex_is_a_clear_error(box: ToolBox) -> None:
    outcome = box.run("search", {"pattern": "def ("})
    assert outcome.is_error and "invalid regular expression 'def ('" in outcome.output
    assert "\n" not in outcome.output


def test_search_skips_binary_and_ignored(repo: Path, box: ToolBox) -> None:
    (repo / "blob.bin").write_bytes(b"needle\0\1\2")
    (repo / "build" / "gen.txt").write_text("needle\n")
    (repo / "plain.txt").write_text("a needle here\n")
    assert box.run("search", {"pattern": "needle"}).output == "[1 matching line]\nplain.txt\n  1: a needle here"


def test_search_is_capped_with_marker(repo: Path, box: ToolBox) -> None:
    files = MAX_MATCHES // MAX_FILE_MATCHES + 2
    for i in range(files):
        (repo / f"many{i:02d}.txt").write_text("hit\n" * MAX_FILE_MATCHES)
    lines = box.run("search", {"pattern": "^hit$"}).output.splitlines()
    hits = [line for line in lines if line.startswith("  ")]
    assert len(hits) == MAX_MATCHES and all(line.endswith(": hit") for line in hits)
    assert lines[:3] == [f"[{files * MAX_FILE_MATCHES} matching lines]", "many00.txt", "  1: hit"]
    assert lines[-1] == f"[truncated: {2 * MAX_FILE_MATCHES} more matches]"


def test_search_caps_the_hits_of_one_file(repo: Path, box: ToolBox) -> None:
    (repo / "many.txt").write_text("hit\n" * (MAX_FILE_MATCHES + 37))
    lines = box.run("search", {"pattern": "^hit$"}).output.splitlines()
    assert lines == [f"[{MAX_FILE_MATCHES + 37} matching lines]", "many.txt", *[f"  {n}: hit" for n in range(1, MAX_FILE_MATCHES + 1)], "  [37 more in this file]"]


def test_the_count_line_agrees_with_a_plain_text_count_of_the_example_repo() -> None:
    repo = Path(__file__).resolve().parents[3] / "examples" / "repo"
    sources = [p for p in repo.rglob("*.py")]
    lines = sum(len(re.findall(r"^\s*def test_", p.read_text(), re.MULTILINE)) for p in sources)
    files = sum(bool(re.search(r"^\s*def test_", p.read_text(), re.MULTILINE)) for p in sources)
    output = ToolBox(repo).run("search", {"pattern": r"^\s*def test_"}).output
    assert output.splitlines()[0] == f"[{lines} matching lines]" and lines > files > 1

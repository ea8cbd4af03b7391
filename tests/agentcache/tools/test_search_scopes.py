"""search shows where a hit lives: above each hit, the header lines of the classes and functions that hold it
(`N- text`), from the file's outline, when they are not hits themselves; files without an outline show hits alone."""
from __future__ import annotations

from pathlib import Path

import pytest

from agentcache.tools import ToolBox
from agentcache.tools import search as search_module
from layers.outline import outline

EXC = '''"""Exceptions."""


class BadSignature(Exception):
    """Raised if a signature does not match."""


class SignatureExpired(BadSignature):
    """Raised if a signature timestamp is older than max_age."""

    def __init__(self, message, date_signed=None):
        super().__init__(message)
        self.date_signed = date_signed

    def age(self, now):
        def seconds(delta):
            return delta.total_seconds()
        return seconds(now - self.date_signed)
'''


@pytest.fixture
def exc(repo: Path) -> Path:
    (repo / "exc.py").write_text(EXC)
    return repo / "exc.py"


def test_the_class_line_is_shown_above_a_docstring_hit(box: ToolBox, exc: Path) -> None:
    assert box.run("search", {"pattern": "older than"}).output == (
        "[1 matching line]\n"
        "exc.py\n"
        "  8- class SignatureExpired(BadSignature):\n"
        '  9:     """Raised if a signature timestamp is older than max_age."""')


def test_nested_scopes_are_shown_outermost_first_and_only_once(box: ToolBox, exc: Path) -> None:
    # the outline holds top-level and class-level definitions: `seconds`, inside a method, is not a scope
    assert box.run("search", {"pattern": "total_seconds|self.date_signed"}).output.splitlines() == [
        "[3 matching lines]",
        "exc.py",
        "  8- class SignatureExpired(BadSignature):",
        "  11-     def __init__(self, message, date_signed=None):",
        "  13:         self.date_signed = date_signed",
        "  15-     def age(self, now):",
        "  17:             return delta.total_seconds()",
        "  18:         return seconds(now - self.date_signed)",
    ]


def test_a_header_that_is_a_hit_is_shown_once_as_a_hit(box: ToolBox, exc: Path) -> None:
    assert box.run("search", {"pattern": "Signature"}).output.splitlines() == [
        "[2 matching lines]",
        "exc.py",
        "  4: class BadSignature(Exception):",
        "  8: class SignatureExpired(BadSignature):",
    ]


def test_files_without_an_outline_show_hits_alone_grouped_by_path(repo: Path, box: ToolBox, exc: Path) -> None:
    (repo / "notes.txt").write_text("older than\n  older than that\n")
    (repo / "broken.py").write_text("class X:\n    older than = (\n")
    assert box.run("search", {"pattern": "older than"}).output.splitlines() == [
        "[4 matching lines]",
        "broken.py", "  2:     older than = (",
        "exc.py", "  8- class SignatureExpired(BadSignature):",
        '  9:     """Raised if a signature timestamp is older than max_age."""',
        "notes.txt", "  1: older than", "  2:   older than that",
    ]


def test_a_file_is_outlined_once_and_only_when_it_has_a_hit(repo: Path, box: ToolBox, exc: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (repo / "other.py").write_text("def other():\n    return 'no match here'\n")
    outlined = []
    monkeypatch.setattr(search_module, "outline",
                        lambda path, text: outlined.append(path) or outline(path, text))
    box.run("search", {"pattern": "date_signed|Raised"})
    assert outlined == ["exc.py"]


def test_a_file_over_the_outline_cap_shows_hits_alone(box: ToolBox, exc: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_module, "MAX_OUTLINE_BYTES", len(EXC) - 1)
    assert box.run("search", {"pattern": "older than"}).output == (
        '[1 matching line]\nexc.py\n  9:     """Raised if a signature timestamp is older than max_age."""')

"""ToolBox: names match the specs, finish, argument checks, unknown and disabled tools, errors never raise."""
from __future__ import annotations

from pathlib import Path

import pytest

from agentcache import PROMPTS_DIR
from agentcache.tools import ToolBox, ToolError
from layers import ToolRegistry


def test_names_are_the_spec_names(repo: Path) -> None:
    specs = ToolRegistry.from_dir(PROMPTS_DIR / "tools").names()
    assert ToolBox(repo, allow_shell=True).names() == specs
    assert ToolBox(repo).names() == [n for n in specs if n != "run_command"]


def test_finish(box: ToolBox) -> None:
    outcome = box.run("finish", {"answer": "done: fixed it"})
    assert outcome.finished and outcome.answer == "done: fixed it" and not outcome.is_error
    assert not box.run("read_file", {"path": "README.md"}).finished


@pytest.mark.parametrize(("name", "args", "message"), [
    ("read_file", {}, "missing required argument 'path'"),
    ("edit_file", {"path": "README.md", "old": "a"}, "missing required argument 'new'"),
    ("read_file", {"path": 3}, "argument 'path' must be a string, got integer"),
    ("read_file", {"path": "README.md", "start_line": "2"}, "argument 'start_line' must be an integer, got string"),
    ("read_file", {"path": "README.md", "start_line": True}, "argument 'start_line' must be an integer, got boolean"),
    ("read_file", {"path": "README.md", "start_line": 0}, "argument 'start_line' must be >= 1, got 0"),
    ("read_file", {"path": "README.md", "limit": 5}, "unexpected argument 'limit'"),
    ("finish", {"answer": None}, "argument 'answer' must be a string, got null"),
    ("list_files", ["src"], "arguments must be a JSON object, got array"),
])
def test_bad_arguments_name_the_key(box: ToolBox, name: str, args: object, message: str) -> None:
    outcome = box.run(name, args)
    assert outcome.is_error and not outcome.finished
    assert outcome.output.startswith(f"{name}: ") and message in outcome.output
    assert "\n" not in outcome.output


def test_unknown_tool(box: ToolBox) -> None:
    outcome = box.run("delete_everything", {})
    assert outcome.is_error and outcome.output.startswith("delete_everything: unknown tool")


def test_disabled_tool_is_refused(repo: Path) -> None:
    box = ToolBox(repo, enabled={"read_file", "finish"})
    assert box.names() == ["finish", "read_file"]
    outcome = box.run("write_file", {"path": "x.txt", "content": "x"})
    assert outcome.is_error and "disabled" in outcome.output
    assert not (repo / "x.txt").exists()
    assert not box.run("read_file", {"path": "README.md"}).is_error


def test_enabling_an_unknown_tool_raises(repo: Path) -> None:
    with pytest.raises(ToolError, match="unknown tools: teleport"):
        ToolBox(repo, enabled={"teleport"})


def test_root_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="not a directory"):
        ToolBox(tmp_path / "missing")


def test_os_errors_become_outcomes(box: ToolBox) -> None:
    outcome = box.run("write_file", {"path": "README.md/inside.txt", "content": "x"})
    assert outcome.is_error and outcome.output.startswith("write_file: ") and "\n" not in outcome.output


def test_unencodable_text_and_nul_paths_become_outcomes(repo: Path, box: ToolBox) -> None:
    outcome = box.run("write_file", {"path": "s.txt", "content": "lone \ud800 surrogate"})
    assert outcome.is_error and "not valid UTF-8" in outcome.output
    assert box.run("edit_file", {"path": "README.md", "old": "hello", "new": "\udfff"}).is_error
    assert (repo / "README.md").read_text() == "# demo\nhello world\n"
    outcome = box.run("read_file", {"path": "a\x00b"})
    assert outcome.is_error and "cannot resolve path" in outcome.output


def test_custom_tools_dir_must_cover_every_tool(repo: Path, tmp_path: Path) -> None:
    tools_dir = tmp_path / "tools"
    tools_dir.mkdir()
    for spec in sorted((PROMPTS_DIR / "tools").glob("*.yaml")):
        if spec.stem != "search":
            (tools_dir / spec.name).write_text(spec.read_text())
    with pytest.raises(ToolError, match="no spec for tools: search"):
        ToolBox(repo, tools_dir=tools_dir)

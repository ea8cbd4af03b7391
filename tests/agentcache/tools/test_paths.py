"""Path safety: escapes, absolute paths, symlinks out of the root, secrets, ignored files, .git and .agentcache/
are refused, judged by the name and by what it resolves to (symlinks, hard links)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from agentcache.tools import ToolBox

ESCAPES = ["../outside.txt", "src/../../outside.txt", "/etc/passwd"]


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    (tmp_path / "outside.txt").write_text("outside secret\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "data.txt").write_text("elsewhere data\n")
    return tmp_path


@pytest.mark.parametrize("path", ESCAPES)
def test_escapes_are_refused_for_read(box: ToolBox, outside: Path, path: str) -> None:
    outcome = box.run("read_file", {"path": path})
    assert outcome.is_error and "outside the repository root" in outcome.output
    assert "secret" not in outcome.output.replace(path, "")


@pytest.mark.parametrize("path", ESCAPES)
def test_escapes_are_refused_for_write(box: ToolBox, outside: Path, path: str) -> None:
    outcome = box.run("write_file", {"path": path, "content": "pwned"})
    assert outcome.is_error and "outside the repository root" in outcome.output
    assert (outside / "outside.txt").read_text() == "outside secret\n"


def test_absolute_path_of_the_outside_file_is_refused(box: ToolBox, outside: Path) -> None:
    outcome = box.run("edit_file", {"path": str(outside / "outside.txt"), "old": "outside", "new": "x"})
    assert outcome.is_error and "outside the repository root" in outcome.output
    assert (outside / "outside.txt").read_text() == "outside secret\n"


def test_absolute_path_inside_the_root_is_allowed(repo: Path, box: ToolBox) -> None:
    assert box.run("read_file", {"path": str(repo / "README.md")}).output.startswith("     1\t# demo")


def test_symlink_to_an_outside_directory(repo: Path, box: ToolBox, outside: Path) -> None:
    (repo / "linkdir").symlink_to(outside / "elsewhere", target_is_directory=True)
    for name, args in [("read_file", {"path": "linkdir/data.txt"}), ("list_files", {"path": "linkdir"}),
                       ("write_file", {"path": "linkdir/new.txt", "content": "x"})]:
        outcome = box.run(name, args)
        assert outcome.is_error and "outside the repository root" in outcome.output, name
    assert not (outside / "elsewhere" / "new.txt").exists()
    assert "elsewhere" not in box.run("search", {"pattern": "elsewhere"}).output


def test_symlink_to_an_outside_file(repo: Path, box: ToolBox, outside: Path) -> None:
    (repo / "link.txt").symlink_to(outside / "outside.txt")
    assert "outside the repository root" in box.run("read_file", {"path": "link.txt"}).output
    assert box.run("write_file", {"path": "link.txt", "content": "x"}).is_error
    assert box.run("edit_file", {"path": "link.txt", "old": "outside", "new": "x"}).is_error
    assert (outside / "outside.txt").read_text() == "outside secret\n"
    assert "link.txt" not in box.run("list_files", {}).output


def test_symlink_inside_the_root_is_followed(repo: Path, box: ToolBox) -> None:
    (repo / "alias.py").symlink_to(repo / "src" / "app.py")
    assert box.run("read_file", {"path": "alias.py"}).output.endswith("return 42")


def test_symlink_to_a_secret_inside_the_root_is_refused(repo: Path, box: ToolBox) -> None:
    (repo / "innocent.txt").symlink_to(repo / ".env")
    assert "secret" in box.run("read_file", {"path": "innocent.txt"}).output
    assert "hunter2" not in box.run("search", {"pattern": "TOKEN"}).output


@pytest.mark.parametrize("path", [".env", ".env.local", "server.key", "config/id_rsa", "sub/../.env"])
def test_secrets_cannot_be_read_or_written(repo: Path, box: ToolBox, path: str) -> None:
    (repo / ".env.local").write_text("A=1\n")
    for name, args in [("read_file", {"path": path}), ("write_file", {"path": path, "content": "x"}),
                       ("edit_file", {"path": path, "old": "A", "new": "B"})]:
        outcome = box.run(name, args)
        assert outcome.is_error and "secret" in outcome.output, (name, outcome.output)
    assert (repo / ".env").read_text() == "TOKEN=hunter2\n"
    assert not (repo / "config").exists()


def test_secrets_never_show_in_listing_or_search(box: ToolBox) -> None:
    assert box.run("list_files", {}).output.splitlines() == [".gitignore", "README.md", "src/app.py", "src/util.py"]
    assert box.run("search", {"pattern": "hunter2|not really"}).output.startswith("(no matches")


@pytest.mark.parametrize("path", ["debug.log", "build/out.txt", "build/new.txt"])
def test_gitignored_files_are_refused_without_git(box: ToolBox, path: str) -> None:
    assert "ignored by .gitignore" in box.run("read_file", {"path": path}).output
    assert "ignored by .gitignore" in box.run("write_file", {"path": path, "content": "x"}).output


def test_gitignored_files_are_refused_in_a_git_worktree(repo: Path) -> None:
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / "src" / ".gitignore").write_text("generated_*.py\n")
    (repo / "src" / "generated_a.py").write_text("x = 1\n")
    box = ToolBox(repo)
    for path in ["debug.log", "build/out.txt", "src/generated_a.py"]:
        assert "ignored by .gitignore" in box.run("read_file", {"path": path}).output, path
    assert not box.run("read_file", {"path": "src/app.py"}).is_error
    assert "generated_a" not in box.run("list_files", {}).output
    assert box.run("write_file", {"path": ".git/config", "content": "x"}).is_error


def test_empty_path_is_an_error(box: ToolBox) -> None:
    outcome = box.run("read_file", {"path": "  "})
    assert outcome.is_error and "path is empty" in outcome.output


@pytest.mark.parametrize("use_git", [True, False])
def test_symlink_to_an_ignored_file_is_absent_from_search_and_listing(repo: Path, use_git: bool) -> None:
    if use_git:
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / "build" / "notes.txt").write_text("TOPSECRET build notes\n")
    (repo / "notes_link").symlink_to("build/notes.txt")
    box = ToolBox(repo)
    assert box.run("search", {"pattern": "TOPSECRET"}).output.startswith("(no matches")
    assert "notes_link" not in box.run("list_files", {}).output
    assert "ignored by .gitignore" in box.run("read_file", {"path": "notes_link"}).output


def test_a_name_in_an_ignored_folder_is_refused_wherever_it_points(repo: Path, box: ToolBox) -> None:
    (repo / "build" / "app_link.py").symlink_to(repo / "src" / "app.py")
    outcome = box.run("read_file", {"path": "build/app_link.py"})
    assert outcome.is_error and "ignored by .gitignore" in outcome.output
    assert box.run("read_file", {"path": "src/app.py"}).output.startswith("     1\tdef main")


@pytest.mark.parametrize("use_git", [True, False])
def test_the_harness_directory_is_off_limits_to_every_tool(repo: Path, use_git: bool) -> None:
    if use_git:
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    sessions = repo / ".agentcache" / "sessions"
    sessions.mkdir(parents=True)
    (sessions / "20260101-000000-000000-abcdef.jsonl").write_text('{"type": "user", "text": "other session"}\n')
    (repo / "state").symlink_to(".agentcache", target_is_directory=True)
    box = ToolBox(repo)
    forged = ".agentcache/sessions/99999999-000000-000000-forged.jsonl"
    for name, args in [("read_file", {"path": ".agentcache/sessions/20260101-000000-000000-abcdef.jsonl"}),
                       ("write_file", {"path": forged, "content": "{}\n"}),
                       ("write_file", {"path": "state/sessions/99999999-x.jsonl", "content": "{}\n"}),
                       ("edit_file", {"path": "state/sessions/20260101-000000-000000-abcdef.jsonl",
                                      "old": "other", "new": "forged"}),
                       ("list_files", {"path": ".agentcache"}), ("list_files", {"path": "state"})]:
        outcome = box.run(name, args)
        assert outcome.is_error and "harness's own state (.agentcache/)" in outcome.output, (name, args)
    assert sorted(p.name for p in sessions.iterdir()) == ["20260101-000000-000000-abcdef.jsonl"]
    assert box.run("search", {"pattern": "other session"}).output.startswith("(no matches")
    assert ".agentcache" not in box.run("list_files", {}).output


def test_a_hard_link_to_a_secret_is_refused_and_unlisted(repo: Path, box: ToolBox) -> None:
    os.link(repo / ".env", repo / "notes.txt")
    os.link(repo / "src" / "app.py", repo / "src" / "app_copy.py")
    for name, args in [("read_file", {"path": "notes.txt"}), ("write_file", {"path": "notes.txt", "content": "x"}),
                       ("edit_file", {"path": "notes.txt", "old": "TOKEN", "new": "x"})]:
        outcome = box.run(name, args)
        assert outcome.is_error and "hard link" in outcome.output, name
    assert (repo / ".env").read_text() == "TOKEN=hunter2\n"
    assert box.run("search", {"pattern": "hunter2"}).output.startswith("(no matches")
    listed = box.run("list_files", {}).output.splitlines()
    assert "notes.txt" not in listed and "src/app_copy.py" in listed
    assert box.run("read_file", {"path": "src/app_copy.py"}).output.endswith("return 42")


def test_the_ignore_rules_cannot_be_rewritten_by_a_tool(repo: Path, box: ToolBox) -> None:
    for name, args in [("write_file", {"path": ".gitignore", "content": ""}),
                       ("edit_file", {"path": ".gitignore", "old": "build/", "new": ""}),
                       ("write_file", {"path": "src/.gitignore", "content": "!x\n"})]:
        outcome = box.run(name, args)
        assert outcome.is_error and "ignore rules" in outcome.output, name
    assert (repo / ".gitignore").read_text() == "build/\n*.log\n"
    assert not (repo / "src" / ".gitignore").exists()
    assert "ignored by .gitignore" in box.run("read_file", {"path": "build/out.txt"}).output

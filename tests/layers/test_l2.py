import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from layers import Context, L2Config, Layer, RepoError, build_l1, build_l2, render_tree
from layers.l2 import doc_paths
from layers.repo import list_files
from tests.layers.conftest import PROMPTS_DIR, git, write_files

PATHS = ["b/z.py", "a.py", "B.md", "b/a/x.txt", "é.md", "a/b.py", ".env", "keys/id_rsa", "c.pem", "z"]


def summary(blocks):
    return [(b.kind, b.key) for b in blocks]


@given(st.permutations(PATHS))
def test_tree_ignores_listing_order(paths):
    assert render_tree(paths, 100) == render_tree(PATHS, 100)


def test_tree_is_sorted_by_path_string_without_secrets_and_capped():
    assert render_tree(PATHS, 100) == "B.md\na.py\na/b.py\nb/a/x.txt\nb/z.py\nz\né.md\n"
    assert render_tree(PATHS, 3) == "B.md\na.py\na/b.py\n... 4 more\n"


def test_chunk_order_and_keys(git_repo):
    blocks = build_l2(git_repo)
    assert all(b.layer is Layer.L2 for b in blocks)
    assert summary(blocks) == [
        ("tree", "."), ("doc", "AGENTS.md"), ("doc", "README.md"), ("skill", "skills/a.md"), ("skill", "skills/b.md"),
    ]
    assert blocks[0].text == "AGENTS.md\nREADME.md\nskills/a.md\nskills/b.md\nsrc/app.py\n"
    assert blocks[1].text == "# Agents\nRun `pytest -q`.\n"


def test_git_and_plain_repos_give_the_same_blocks(git_repo, plain_repo):
    assert build_l2(git_repo) == build_l2(plain_repo)


def test_doc_priority_and_readme_variants():
    paths = ["readme.rst", "README.md", "CLAUDE.md", "SPEC.md", "AGENTS.md", "docs/README.md", "NOTES.md"]
    assert doc_paths(paths) == ["AGENTS.md", "SPEC.md", "CLAUDE.md", "README.md", "readme.rst"]


def test_skills_dir_is_configurable(git_repo):
    write_files(git_repo, {".claude/skills/deploy.md": "# Deploy\n"})
    git(git_repo, "add", "-f", ".claude/skills/deploy.md")
    blocks = build_l2(git_repo, L2Config(skills_dir=".claude/skills"))
    assert [k for kind, k in summary(blocks) if kind == "skill"] == [".claude/skills/deploy.md"]


def test_touching_mtimes_changes_nothing(git_repo):
    before = build_l2(git_repo)
    for i, path in enumerate(sorted(p for p in git_repo.rglob("*") if ".git" not in p.parts)):
        os.utime(path, (1_000_000 + i * 7919, 2_000_000_000 - i * 104729))
    assert build_l2(git_repo) == before


def test_dirty_files_go_after_clean_ones(git_repo):
    (git_repo / "AGENTS.md").write_text("# Agents\nchanged\n", encoding="utf-8")
    write_files(git_repo, {"skills/0-new.md": "new skill\n"})
    assert summary(build_l2(git_repo))[1:] == [
        ("doc", "README.md"), ("doc", "AGENTS.md"),
        ("skill", "skills/a.md"), ("skill", "skills/b.md"), ("skill", "skills/0-new.md"),
    ]


@pytest.mark.parametrize("edited", ["README.md", "skills/a.md"])
def test_editing_one_file_invalidates_that_chunk_and_what_follows_only(git_repo, edited):
    l1 = build_l1("coder", PROMPTS_DIR)
    old = Context([*l1, *build_l2(git_repo)])
    (git_repo / edited).write_text("# edited\n", encoding="utf-8")
    new = Context([*l1, *build_l2(git_repo)])
    assert new.layer_hashes()["L1"] == old.layer_hashes()["L1"]
    assert new.context_id != old.context_id
    old_by_key = {b.key: b for b in old.layer(Layer.L2)}
    new_l2 = list(new.layer(Layer.L2))
    position = [b.key for b in new_l2].index(edited)
    assert new_l2[position].hash != old_by_key[edited].hash
    for block in new_l2[:position]:
        assert block.hash == old_by_key[block.key].hash

    git(git_repo, "commit", "-qam", "edit")
    committed = Context([*l1, *build_l2(git_repo)])
    position = [b.key for b in committed.blocks].index(edited)
    assert committed.blocks[:position] == old.blocks[:position]
    assert committed.blocks[position].hash != old.blocks[position].hash


TOKEN = "SUPERSECRET-7f3a9c"


@pytest.mark.parametrize("use_git", [True, False])
def test_secrets_never_enter_a_block(tmp_path, use_git):
    root = tmp_path / "repo"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "notes.md").write_text(f"outside {TOKEN}\n", encoding="utf-8")
    write_files(root, {
        "README.md": "# Project\n",
        ".gitignore": "local.cfg\nprivate/\n",
        ".env": f"API_KEY={TOKEN}\n",
        ".env.production": f"API_KEY={TOKEN}\n",
        "id_rsa": f"{TOKEN}\n",
        "skills/id_ed25519.pub": f"{TOKEN}\n",
        "skills/x.pem": f"{TOKEN}\n",
        "skills/server.key": f"{TOKEN}\n",
        "skills/key.md": f"-----BEGIN OPENSSH PRIVATE KEY-----\n{TOKEN}\n-----END OPENSSH PRIVATE KEY-----\n",
        "skills/binary.md": b"\x00\x01" + TOKEN.encode(),
        "skills/latin1.md": b"caf\xe9 " + TOKEN.encode(),
        "skills/ok.md": "fine\n",
        "local.cfg": f"{TOKEN}\n",
        "private/notes.md": f"{TOKEN}\n",
    })
    (root / "skills" / "link.md").symlink_to(outside / "notes.md")
    (root / "AGENTS.md").symlink_to(outside / "notes.md")
    (root / "skills" / "outdir").symlink_to(outside, target_is_directory=True)
    if use_git:
        git(root, "init", "-q")
        git(root, "add", ".")
        git(root, "add", "-f", ".env", "id_rsa")
        git(root, "commit", "-qm", "init")
    blocks = build_l2(root)
    for block in blocks:
        assert TOKEN.encode() not in block.content
        assert b"outside" not in block.content
    assert summary(blocks) == [("tree", "."), ("doc", "README.md"), ("skill", "skills/ok.md")]
    assert blocks[0].text == (
        ".gitignore\nREADME.md\nskills/binary.md\nskills/key.md\nskills/latin1.md\nskills/ok.md\n"
    )


def test_symlink_inside_the_repo_is_followed(plain_repo):
    (plain_repo / "CLAUDE.md").symlink_to(plain_repo / "AGENTS.md")
    blocks = build_l2(plain_repo)
    assert ("doc", "CLAUDE.md") in summary(blocks)


def test_walk_applies_gitignore_patterns(plain_repo):
    write_files(plain_repo, {
        ".gitignore": "*.log\n/build/\n!keep.log\ndocs/*.tmp\n",
        "debug.log": "x", "keep.log": "x", "src/deep/trace.log": "x",
        "build/out.txt": "x", "src/build/kept.txt": "x", "docs/a.tmp": "x",
        "src/.gitignore": "generated.py\n", "src/generated.py": "x", "generated.py": "x",
    })
    tree = build_l2(plain_repo)[0].text.splitlines()
    assert tree == [
        ".gitignore", "AGENTS.md", "README.md", "generated.py", "keep.log", "skills/a.md", "skills/b.md",
        "src/.gitignore", "src/app.py", "src/build/kept.txt",
    ]


def test_nested_repo_inside_a_git_worktree(git_repo):
    write_files(git_repo, {"sub/AGENTS.md": "# sub agents\n", "sub/x.py": "x\n"})
    git(git_repo, "add", "sub/AGENTS.md")
    git(git_repo, "commit", "-qm", "sub")
    (git_repo / "sub" / "AGENTS.md").write_text("# sub agents, edited\n", encoding="utf-8")
    blocks = build_l2(git_repo / "sub")
    assert summary(blocks) == [("tree", "."), ("doc", "AGENTS.md")]
    assert blocks[0].text == "AGENTS.md\nx.py\n"


def test_bad_repo_paths(tmp_path):
    with pytest.raises(RepoError, match="does not exist"):
        build_l2(tmp_path / "absent")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(RepoError, match="not a directory"):
        build_l2(tmp_path / "file.txt")


def test_unreadable_file_is_a_one_line_error(plain_repo, monkeypatch):
    real = os.open

    def refusing_open(path, *args, **kwargs):  # root reads any file whatever its mode: the refusal is planted
        if path == "README.md":
            raise PermissionError(13, "Permission denied")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    with pytest.raises(RepoError, match=r"^cannot open README.md: Permission denied$"):
        build_l2(plain_repo)


def test_blocks_do_not_depend_on_the_repo_location(tmp_path, plain_repo):
    moved = tmp_path / "somewhere" / "else"
    shutil.copytree(plain_repo, moved)
    assert build_l2(moved) == build_l2(plain_repo)


def test_session_logs_never_enter_l2(tmp_path):
    from layers import build_l2

    (tmp_path / "main.py").write_text("print('hi')\n")
    before = [b.hash for b in build_l2(tmp_path)]
    sessions = tmp_path / ".agentcache" / "sessions"
    sessions.mkdir(parents=True)
    (sessions / "20260101-000000-abcdef.jsonl").write_text('{"type": "user"}\n')
    assert [b.hash for b in build_l2(tmp_path)] == before


@pytest.mark.parametrize("use_git", [True, False])
def test_hard_links_to_hidden_files_are_omitted(tmp_path, use_git):
    root = tmp_path / "repo"
    write_files(root, {"README.md": "# Project\n", ".gitignore": "private/\n", ".env": f"KEY={TOKEN}\n",
                       "private/notes.txt": f"{TOKEN}\n", "src/a.py": "a = 1\n"})
    os.link(root / ".env", root / "notes.md")
    os.link(root / "private" / "notes.txt", root / "CLAUDE.md")
    os.link(root / "src" / "a.py", root / "src" / "b.py")
    if use_git:
        git(root, "init", "-q")
        git(root, "add", ".")
        git(root, "commit", "-qm", "init")
    blocks = build_l2(root)
    assert all(TOKEN.encode() not in b.content for b in blocks)
    assert summary(blocks) == [("tree", "."), ("doc", "README.md")]
    assert blocks[0].text == ".gitignore\nREADME.md\nsrc/a.py\nsrc/b.py\n"


@pytest.mark.parametrize("use_git", [True, False])
def test_names_a_layer_cannot_show_are_omitted(plain_repo, use_git):
    with open(os.path.join(os.fsencode(plain_repo), b"caf\xe9.md"), "wb") as f:
        f.write(b"latin-1 name\n")
    write_files(plain_repo, {"x\n.env": "forged tree line\n", "bell\x07.md": "x\n"})
    if use_git:
        git(plain_repo, "init", "-q")
    assert build_l2(plain_repo)[0].text == "AGENTS.md\nREADME.md\nskills/a.md\nskills/b.md\nsrc/app.py\n"


def test_listing_with_many_symlinks_runs_a_fixed_number_of_git_commands(git_repo, monkeypatch):
    write_files(git_repo, {".gitignore": "private/\n", "private/notes.txt": f"{TOKEN}\n"})
    write_files(git_repo, {f"src/m{i}.py": f"x = {i}\n" for i in range(2000)})
    for i in range(300):
        (git_repo / "src" / f"link{i}.py").symlink_to(f"m{i}.py")
        (git_repo / "src" / f"hidden{i}.md").symlink_to("../private/notes.txt")
    real_run, commands = subprocess.run, []

    def counting_run(args, *rest, **kwargs):
        commands.append(args)
        return real_run(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "run", counting_run)
    listed = list_files(git_repo)
    assert len(commands) <= 6, commands  # each git command after the one that reads the repo's config
    assert not any("hidden" in p for p in listed)
    assert sum("/link" in p for p in listed) == 300 and len(listed) == 2000 + 300 + 6

"""0 secret markers in any layer, inspect report, tool result or session file, on a generated hostile repo
(planted symlinks, a hard link, ignored files, .env, harness state), with and without git."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentcache import PROMPTS_DIR
from agentcache.tools import ToolBox
from layers import Layer, build_prefix
from tests.hostile.repo_factory import SESSION, HostileRepo, make_hostile_repo

ROOT = Path(__file__).resolve().parents[2]
LISTED = [".gitignore", "AGENTS.md", "README.md", "assets/blob.bin", "data/huge.txt", "data/one_long_line.txt",
          "docs/guide.md", "keys/deploy.txt", "skills/latin1.md", "skills/ok.md", "src/app.py", "src/latin1.txt"]
FORGED = ".agentcache/sessions/99999999-999999-999999-forged.jsonl"
KEY_FILE = "keys/deploy.txt"


@pytest.fixture(params=[True, False], ids=["git", "plain"])
def hostile(request, tmp_path) -> HostileRepo:
    return make_hostile_repo(tmp_path, use_git=request.param)


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "agentcache.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def marked_bytes(hostile: HostileRepo) -> dict[str, bytes]:
    return {rel: (hostile.root / rel).read_bytes() for rel in hostile.marked}


def test_no_layer_block_holds_a_marker_or_names_a_planted_path(hostile):
    context = build_prefix(hostile.root, PROMPTS_DIR)
    for block in context:
        assert hostile.marker.encode() not in block.content, (block.kind, block.key)
    l2 = list(context.layer(Layer.L2))
    assert [(b.kind, b.key) for b in l2] == [("tree", "."), ("doc", "AGENTS.md"), ("doc", "README.md"),
                                             ("skill", "skills/ok.md"), ("map", "src/app.py")]
    assert l2[0].text.splitlines() == LISTED


def test_inspect_layers_json_holds_no_marker(hostile):
    result = cli("inspect", "--layers", "--json", "--repo", str(hostile.root))
    assert result.returncode == 0, result.stderr
    assert hostile.marker not in result.stdout + result.stderr
    keys = {row["key"] for row in json.loads(result.stdout)["blocks"]}
    assert keys.isdisjoint(hostile.planted + hostile.marked)


def planted_paths(hostile: HostileRepo) -> list[str]:
    return [*hostile.planted, *hostile.marked, "state/sessions", "private", ".agentcache", FORGED,
            "state/" + SESSION.removeprefix(".agentcache/"), "src/../.env", "skills/../private/notes.txt"]


def tool_calls(hostile: HostileRepo) -> list[tuple[str, dict]]:
    calls: list[tuple[str, dict]] = [("list_files", {}), ("search", {"pattern": "TOPSECRET"}),
                                     ("search", {"pattern": hostile.marker}), ("search", {"pattern": "."}),
                                     ("search", {"pattern": "sk-fake|password|private"})]
    for path in planted_paths(hostile):
        calls += [("read_file", {"path": path}), ("list_files", {"path": path}),
                  ("search", {"pattern": ".", "path": path}),
                  ("edit_file", {"path": path, "old": "TOPSECRET", "new": "leaked"})]
        if path != KEY_FILE:  # a private key is refused by content to read and edit; writing over it leaks nothing
            calls.append(("write_file", {"path": path, "content": '{"type": "request"}\n'}))
    return calls


def test_no_tool_result_holds_a_marker_and_nothing_planted_is_touched(hostile):
    before = marked_bytes(hostile)
    box = ToolBox(hostile.root)
    for name, args in tool_calls(hostile):
        outcome = box.run(name, args)
        assert hostile.marker not in outcome.output, (name, args)
        if name in ("read_file", "write_file", "edit_file"):
            assert outcome.is_error and "\n" not in outcome.output, (name, args, outcome.output)
    assert box.run("list_files", {}).output.splitlines() == LISTED
    assert marked_bytes(hostile) == before
    assert not (hostile.root / FORGED).exists()
    assert sorted(p.name for p in (hostile.root / ".agentcache" / "sessions").iterdir()) == [Path(SESSION).name]


@pytest.mark.parametrize(("path", "reason"), [
    ("skills/env.md", "secret"), ("CLAUDE.md", "secret"), ("notes_link", "ignored"), ("SPEC.md", "ignored"),
    ("skills/notes.md", "ignored"), ("config_link.txt", "ignored"), ("session_link.jsonl", "harness"),
    ("state/sessions", "harness"), ("docs/env_hard.txt", "hard link"), ("skills/hard.md", "hard link"),
])
def test_each_planted_path_is_refused_with_its_reason_and_shown_nowhere(hostile, path, reason):
    box = ToolBox(hostile.root)
    outcome = box.run("read_file", {"path": path})
    assert outcome.is_error and reason in outcome.output
    assert path not in box.run("list_files", {}).output.splitlines()
    assert box.run("search", {"pattern": ".", "path": path}).output.startswith("(no matches in 0 files)")
    assert path not in build_prefix(hostile.root, PROMPTS_DIR).layer(Layer.L2)[0].text.splitlines()


def test_the_agent_cannot_forge_a_session(hostile):
    box = ToolBox(hostile.root)
    for path in [FORGED, "state/sessions/99999999-x.jsonl", "./.agentcache/sessions/x.jsonl", SESSION]:
        outcome = box.run("write_file", {"path": path, "content": "{}\n"})
        assert outcome.is_error and "harness's own state" in outcome.output, path
    assert box.run("edit_file", {"path": ".gitignore", "old": "private/", "new": ""}).is_error
    assert box.run("write_file", {"path": ".gitignore", "content": ""}).is_error
    assert "ignored" in box.run("read_file", {"path": "notes_link"}).output


@pytest.mark.slow
def test_a_real_run_on_the_hostile_repo_keeps_every_marker_out_of_the_session(tmp_path):
    hostile = make_hostile_repo(tmp_path, use_git=True)
    task = "Read notes_link, skills/env.md and CLAUDE.md, then search for TOPSECRET and list every file."
    result = cli("run", task, "--repo", str(hostile.root), "--max-turns", "2", "--max-tokens", "48",
                 "--tools", "list_files,read_file,search", "--json", timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert hostile.marker not in result.stdout + result.stderr
    summary = json.loads(result.stdout)
    session = hostile.root / ".agentcache" / "sessions" / f"{summary['session_id']}.jsonl"
    text = session.read_text(encoding="utf-8")
    assert hostile.marker not in text
    blocks = [json.loads(line) for line in text.splitlines()]
    assert any(r.get("type") == "block" and r["text"].startswith(".gitignore\nAGENTS.md\n") for r in blocks)

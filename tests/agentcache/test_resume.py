"""Verified resume on the real embedded model: `run --resume` in a new process checks the rebuilt request against
the session's last one before sending; its first request reuses what a continuation in the same process would;
a change is named by the block that caused it, with the tokens that will be prefilled again."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentcache.agent import Agent
from agentcache.cache_dir import models_dir
from agentcache.config import RunConfig
from agentcache.session import Session
from agentcache.wiring import build_backend
from benchmarks.resume import git_copy

MODEL = "smollm2-135m"
SETTINGS = ["--max-turns", "1", "--max-tokens", "24"]


def git_repo(path: Path) -> Path:
    """The example repo with a SPEC.md, committed: docs go AGENTS.md, SPEC.md, README.md while all are clean."""
    return git_copy(path, {"SPEC.md": "# Spec\n\nCount words, sentences and syllables of a text.\n"})


@pytest.fixture()
def env(tmp_path):
    """A cache root of the test's own (a fresh disk tier) that shares the converted models."""
    root = tmp_path / "cache"
    root.mkdir()
    (root / "models").symlink_to(models_dir(), target_is_directory=True)
    return {**os.environ, "AGENTCACHE_CACHE_DIR": str(root), "AGENTCACHE_MODEL": MODEL, "PYTHONUNBUFFERED": "1"}


def run_cli(repo: Path, env: dict, *args: str) -> tuple[list[str], dict]:
    """`agentcache run ... --json` in its own process: its stderr lines and its JSON summary."""
    done = subprocess.run([sys.executable, "-m", "agentcache.cli", "run", *args, "--repo", str(repo), "--json",
                           *SETTINGS], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stderr.splitlines(), json.loads(done.stdout)


def records(repo: Path) -> list[dict]:
    path = next((repo / ".agentcache" / "sessions").glob("*.jsonl"))
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_resume_in_a_new_process_reuses_what_the_same_process_would(tmp_path, env):
    repo = git_repo(tmp_path / "a")
    _, before = run_cli(repo, env, "Where are words counted?")
    lines, resumed = run_cli(repo, env, "And sentences?", "--resume", "latest")
    first = resumed["requests"][len(before["requests"])]  # the summary lists the whole session's requests
    assert any(line.startswith("resume: verified against the last request") for line in lines), lines
    assert first["usage"]["disk_tokens"] > 0  # served from the disk tier: a new process has an empty pool

    same = git_repo(tmp_path / "b")
    config = RunConfig(model=MODEL, max_turns=1, max_tokens=24, disk_cache=False)
    backend = build_backend(config, None)  # as `run` builds it (dtype and quant auto): the same numerics, so the
    # same greedy replies on a near-tie
    session = Session.create(same)
    agent = Agent(same, backend, config, session)
    agent.run("Where are words counted?")
    agent.run("And sentences?")
    continued = [r for r in session.records() if r["type"] == "request"][-1]["usage"]
    assert continued["prompt_tokens"] == first["usage"]["prompt_tokens"]  # the same request, so comparable
    assert abs(continued["cached_tokens"] - first["cached_tokens"]) <= backend.engine.page_size
    check = next(r for r in records(repo) if r["type"] == "resume")
    last = [r for r in records(repo) if r["type"] == "request"][len(before["requests"]) - 1]
    assert check["problems"] == [] and check["matched_blocks"] == check["blocks"] == len(last["blocks"])
    assert check["reusable_tokens"] == sum(last["segment_tokens"][:len(last["blocks"])]) // 16 * 16


def test_an_uncommitted_agents_md_edit_is_named_as_changed_and_moved(tmp_path, env):
    repo = git_repo(tmp_path / "a")
    run_cli(repo, env, "Where are words counted?")
    last = [r for r in records(repo) if r["type"] == "request"][-1]
    keys = [b["key"] for b in last["blocks"]]
    before = keys.index("AGENTS.md")
    assert keys[before + 1] == "SPEC.md"
    with (repo / "AGENTS.md").open("a") as file:
        file.write("\nAnswer in one sentence.\n")
    lines, resumed = run_cli(repo, env, "And sentences?", "--resume", "latest")
    warning = next(line for line in lines if line.startswith("warning: resume:"))
    first = next(r for r in resumed["requests"] if r["turn"] > last["turn"])
    after = before + 2  # SPEC.md and README.md are clean: the edited AGENTS.md now comes after them
    assert (f"L2 doc AGENTS.md changed and moved from block {before + 1} to block {after + 1}" in warning
            and f"the prefix diverges at block {before + 1} (L2 doc SPEC.md)" in warning)
    recompute = last["usage"]["prompt_tokens"] - sum(last["segment_tokens"][:before]) // 16 * 16
    assert f": {recompute} of the last request's {last['usage']['prompt_tokens']} prompt tokens" in warning
    assert "s of prefill at this session's rate" in warning
    cached, promised = first["cached_tokens"], sum(last["segment_tokens"][:before]) // 16 * 16
    assert promised <= cached <= promised + 16  # what was promised was reused; the tokens that open a doc block
    # (its header) match too, and can carry the reuse across one more page boundary

    done = subprocess.run([sys.executable, "-m", "agentcache.cli", "inspect", "--explain", "--json", "--repo",
                           str(repo)], env=env, capture_output=True, text=True, timeout=600)
    view = json.loads(done.stdout)
    miss = view["requests"][1]["miss"]
    assert miss["ledger"] == "prefix_edit" and miss["key"] == "SPEC.md"  # where it diverged ...
    assert miss["change"].startswith("L2 doc AGENTS.md changed and moved")  # ... and why
    assert view["ledger"]["unexplained"] == 0 and view["ledger"]["causes"]["prefix_edit"]["misses"] == 1


def test_another_role_another_model_and_a_planted_token_count_are_named(tmp_path, env):
    repo = git_repo(tmp_path / "a")
    run_cli(repo, env, "Where are words counted?")
    lines, _ = run_cli(repo, env, "And sentences?", "--resume", "latest", "--role", "reviewer")
    warning = next(line for line in lines if line.startswith("warning: resume:"))
    assert ("L1 role roles/reviewer.md added at block 2; L1 role roles/coder.md removed from block 2; the prefix "
            "diverges at block 2 (L1 role roles/reviewer.md)") in warning
    lines, _ = run_cli(repo, env, "And sentences?", "--resume", "latest", "--model", "random-tiny-chat",
                       "--role", "reviewer")
    warning = next(line for line in lines if line.startswith("warning: resume:"))
    assert f"the model changed ({MODEL} -> random-tiny-chat)" in warning
    path = next((repo / ".agentcache" / "sessions").glob("*.jsonl"))
    rows = records(repo)
    last = max(i for i, r in enumerate(rows) if r["type"] == "request" and r["model"] == MODEL)
    rows = rows[:last + 1]  # back to the last smollm2 request, written by a tokenizer one token longer at block 2
    rows[last]["segment_tokens"][1] += 1
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines, resumed = run_cli(repo, env, "And sentences?", "--resume", "latest", "--role", "reviewer")
    warning = next(line for line in lines if line.startswith("warning: resume:"))
    counts = rows[last]["segment_tokens"]
    assert f"block 2 (L1 role roles/reviewer.md) is {counts[1] - 1} tokens now, {counts[1]} in the last request" in warning
    assert f": {rows[last]['usage']['prompt_tokens'] - counts[0] // 16 * 16} of the last request's" in warning

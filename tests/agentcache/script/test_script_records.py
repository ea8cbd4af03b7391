"""A script agent's requests are recorded as a run's are: the same task through `agentcache run` and through a
one-agent `agentcache script`, on the local backend with a real Qwen model, gives request records with the same
model, fingerprint, layout and tool format (native: Qwen's template has tool calls). The script's request numbering
wraps the backend without hiding any of it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.agentcache.test_cli import run_cli

ROOT = Path(__file__).resolve().parents[3]
MODEL = "qwen2.5-coder-0.5b"
TASK = "In which file is the function split_sentences defined? Answer with its path."
SCRIPT = f"""\
agents:
  - {{name: asker, role: ask, mode: read-only, max_turns: 1, max_tokens: 48}}
steps:
  - run: asker
    task: "{TASK}"
"""
FIELDS = ("backend", "model", "fingerprint", "layout", "tool_format")


def first_request(repo: Path) -> dict:
    sessions = sorted((repo / ".agentcache" / "sessions").glob("*.jsonl"))
    assert len(sessions) == 1
    records = [json.loads(line) for line in sessions[0].read_text().splitlines()]
    return next(r for r in records if r["type"] == "request")


def test_a_script_agent_records_what_a_run_records(tmp_path: Path) -> None:
    ran, scripted = tmp_path / "ran", tmp_path / "scripted"
    for repo in (ran, scripted):
        shutil.copytree(ROOT / "examples" / "repo", repo, ignore=shutil.ignore_patterns("__pycache__"))
    run = run_cli("run", TASK, "--repo", str(ran), "--model", MODEL, "--mode", "read-only", "--max-turns", "1",
                  "--max-tokens", "48", "--no-disk-cache", "--json")
    assert run.returncode == 0, run.stderr
    (tmp_path / "one.yaml").write_text(SCRIPT)
    (scripted / "agentcache.yaml").write_text("disk_cache: false\n")
    script = run_cli("script", str(tmp_path / "one.yaml"), "--repo", str(scripted), "--model", MODEL, "--json")
    assert script.returncode == 0, script.stderr
    a, b = first_request(ran), first_request(scripted)
    assert {name: a.get(name) for name in FIELDS} == {name: b.get(name) for name in FIELDS}
    assert a["model"] == MODEL and a["tool_format"] == "native" and a["fingerprint"] and a["layout"]
    assert b["trace"]["script_seq"] == 0 and "script_seq" not in a["trace"]

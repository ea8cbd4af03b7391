"""Every edit is reversible from the session: a write or edit's request record keeps what it replaced (never L3),
end to end over loopback HTTP with fixed replies; putting `before` back restores the file byte for byte."""

import json
import os
import subprocess
import sys

from tests.agentcache.http_helpers import RecordingServer


def completion(content, *blocks):
    """A reply: the call's JSON, then a ``` block per raw argument (lines, each with its newline)."""
    text = json.dumps(content) + "".join(f"\n```\n{block}```" for block in blocks)
    return (200, {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                               "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}})


def test_write_and_edit_records_keep_what_they_replaced(repo):
    original = (repo / "README.md").read_text()
    line = original.splitlines()[0]
    edit = completion({"name": "edit_file", "arguments": {"path": "README.md"}}, f"{line}\n", "# Changed\n")
    write = completion({"name": "write_file", "arguments": {"path": "NOTES.md"}}, "new notes\n")
    script = [(200, {"object": "list", "data": []}), (404, {"error": {"message": "Not Found"}}), edit, write,
              completion({"answer": "done"})]
    with RecordingServer(script, repeat_last=True) as server:
        proc = subprocess.run(
            [sys.executable, "-m", "agentcache.cli", "run", "Retitle the README.", "--repo", str(repo),
             "--backend", "openai", "--base-url", server.url + "/v1", "--model", "m", "--max-turns", "4", "--json"],
            capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    session = repo / ".agentcache" / "sessions" / f"{summary['session_id']}.jsonl"
    requests = [r for r in map(json.loads, session.read_text().splitlines()) if r["type"] == "request"]
    edited, created = requests[0]["tool_result"]["change"], requests[1]["tool_result"]["change"]
    assert edited == {"path": "README.md", "line": 1, "before": f"{line}\n", "after": "# Changed\n"}
    assert created == {"path": "NOTES.md", "line": 1, "before": None, "after": "new notes\n"}
    assert all("before" not in e["text"] for r in requests for e in r["appended"] if e["kind"] == "tool_result")
    changed = (repo / "README.md").read_text()
    assert changed != original and changed.replace(edited["after"], edited["before"], 1) == original

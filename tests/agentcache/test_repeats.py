"""The repetition guard, end to end: `agentcache run` on the openai backend against a loopback server whose replies
are fixed. The same failing call a second time is told it repeats; a third ends the run as `stuck`."""

import json
import os
import subprocess
import sys

from tests.agentcache.http_helpers import RecordingServer

NO_MODEL_CARDS = (200, {"object": "list", "data": []})
NO_CONTEXTS = (404, {"error": {"message": "Not Found"}})


def completion(call, *blocks):
    """A reply: the call's JSON, then a ``` block per raw argument (lines, each with its newline)."""
    content = json.dumps(call) + "".join(f"\n```\n{block}```" for block in blocks)
    return (200, {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                               "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}})


def edit(old):
    return completion({"name": "edit_file", "arguments": {"path": "README.md"}}, f"{old}\n", "changed\n")


def run_against(repo, replies):
    """`run --json` with the replies in order; the summary, the stderr turn lines and the session's requests."""
    with RecordingServer([NO_MODEL_CARDS, NO_CONTEXTS, *replies], repeat_last=True) as server:
        proc = subprocess.run(
            [sys.executable, "-m", "agentcache.cli", "run", "Which exception is raised?", "--repo", str(repo),
             "--backend", "openai", "--base-url", server.url + "/v1", "--model", "m", "--max-turns", "8", "--json"],
            capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    session = repo / ".agentcache" / "sessions" / f"{summary['session_id']}.jsonl"
    records = [json.loads(line) for line in session.read_text().splitlines()]
    return summary, proc.stderr, [r for r in records if r["type"] == "request"]


def test_the_same_failing_call_is_told_it_repeats_then_ends_the_run_as_stuck(repo):
    readme = (repo / "README.md").read_text()
    summary, stderr, requests = run_against(repo, [edit("text that is not there")])
    outputs = [r["tool_result"]["output"] for r in requests]
    assert summary["reason"] == "stuck" and summary["turns"] == 3 and len(requests) == 3
    assert all(r["tool_result"]["is_error"] for r in requests)
    assert "old text not found" in outputs[0] and "failed before" not in outputs[0]
    assert outputs[1].startswith("edit_file: this exact call failed before (same arguments)")
    assert "old text not found" in outputs[1]
    assert [r.get("stopped") for r in requests] == [None, None, "stuck"]
    assert "turn 3:" in stderr and "[stuck]" in stderr.split("turn 3:")[1]
    assert (repo / "README.md").read_text() == readme


def test_a_different_failing_call_is_not_a_repeat(repo):
    answer = completion({"answer": "ValueError"})
    summary, _, requests = run_against(repo, [edit("first"), edit("second"), edit("first"), edit("second"), answer])
    outputs = [r["tool_result"]["output"] for r in requests[:4]]
    assert summary["reason"] == "answered" and summary["turns"] == 5
    assert ["failed before" in output for output in outputs] == [False, False, True, True]
    assert all(r.get("stopped") is None for r in requests)


def read(path):
    return completion({"name": "read_file", "arguments": {"path": path}})


def test_the_same_call_with_the_same_result_is_told_it_repeats_then_ends_the_run_as_stuck(repo):
    summary, _, requests = run_against(repo, [read("README.md")])
    outputs = [r["tool_result"]["output"] for r in requests]
    assert summary["reason"] == "stuck" and summary["turns"] == 3
    first_line = (repo / "README.md").read_text().splitlines()[0]
    assert not requests[0]["tool_result"]["is_error"] and first_line in outputs[0]
    assert outputs[1].startswith("read_file: this exact call was made before and gave the same result")
    assert requests[1]["tool_result"]["is_error"]
    assert [r.get("stopped") for r in requests] == [None, None, "stuck"]


def test_the_same_call_whose_result_changed_is_not_a_repeat(repo):
    write = completion({"name": "write_file", "arguments": {"path": "notes.md"}}, "second\n")
    first = completion({"name": "write_file", "arguments": {"path": "notes.md"}}, "first\n")
    answer = completion({"answer": "done"})
    summary, _, requests = run_against(repo, [first, read("notes.md"), write, read("notes.md"), answer])
    outputs = [r["tool_result"]["output"] for r in requests[:4]]
    assert summary["reason"] == "answered" and summary["turns"] == 5
    assert not any("made before" in output for output in outputs)
    assert "first" in outputs[1] and "second" in outputs[3]

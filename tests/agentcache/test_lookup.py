"""The lookup before the first turn, end to end over loopback HTTP: a task naming a function gets one L3 note after
it with the function's path, line and signature (the line found here by scanning the file), the prefix is the same
with and without the note, and --no-lookup leaves it out."""

import json
import os
import subprocess
import sys

from tests.agentcache.http_helpers import RecordingServer

TASK = "In which file is the function split_sentences defined?"


def answer(text):
    return (200, {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": json.dumps({"answer": text})},
                               "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}})


def first_request(repo, *flags):
    """What the server was sent first, and the session's first request record."""
    script = [(200, {"object": "list", "data": []}), (404, {"error": {"message": "Not Found"}}),
              answer("textstats/words.py")]
    with RecordingServer(script, repeat_last=True) as server:
        proc = subprocess.run(
            [sys.executable, "-m", "agentcache.cli", "run", TASK, "--repo", str(repo), "--backend", "openai",
             "--base-url", server.url + "/v1", "--model", "m", "--mode", "read-only", "--json", *flags],
            capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
        sent = next(body for _, path, body in server.requests if path.endswith("/chat/completions"))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    session = repo / ".agentcache" / "sessions" / f"{summary['session_id']}.jsonl"
    record = next(r for r in map(json.loads, session.read_text().splitlines()) if r["type"] == "request")
    return sent, record


def test_a_named_function_gets_its_definition_in_an_l3_note_after_the_task(repo):
    lines = (repo / "textstats" / "words.py").read_text().splitlines()
    number = next(i for i, line in enumerate(lines, 1) if line.startswith("def split_sentences("))
    sent, record = first_request(repo)
    users = [m["content"] for m in sent["messages"] if m["role"] == "user"]
    assert users[0] == TASK and len(users) == 2
    assert f"textstats/words.py:{number}  def split_sentences(" in users[1]
    l3 = [(b["layer"], b["kind"], b["key"]) for b in record["blocks"] if b["layer"] == "L3"]
    assert l3 == [("L3", "user", "user"), ("L3", "user", "lookup")]

    bare_sent, bare = first_request(repo, "--no-lookup")
    assert [m["content"] for m in bare_sent["messages"] if m["role"] == "user"] == [TASK]
    assert bare["context_id"] == record["context_id"]  # the note never touches the prefix
    assert [b for b in bare["blocks"] if b["layer"] != "L3"] == [b for b in record["blocks"] if b["layer"] != "L3"]

"""The repetition guard, end to end: `agentcache run` on the openai backend against a loopback server whose replies
are fixed. The same failing call a second time is told it repeats; a third ends the run as `stuck`."""

from tests.agentcache.http_helpers import chat_reply, run_scripted


def edit(old):
    return chat_reply({"name": "edit_file", "arguments": {"path": "README.md"}}, f"{old}\n", "changed\n")


def run_against(repo, replies):
    """`run --json` with the replies in order; the summary, the stderr turn lines and the session's requests."""
    run = run_scripted(repo, "Which exception is raised?", replies, "--max-turns", "8")
    return run.summary, run.stderr, run.requests


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
    answer = chat_reply({"answer": "ValueError"})
    summary, _, requests = run_against(repo, [edit("first"), edit("second"), edit("first"), edit("second"), answer])
    outputs = [r["tool_result"]["output"] for r in requests[:4]]
    assert summary["reason"] == "answered" and summary["turns"] == 5
    assert ["failed before" in output for output in outputs] == [False, False, True, True]
    assert all(r.get("stopped") is None for r in requests)


def read(path):
    return chat_reply({"name": "read_file", "arguments": {"path": path}})


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
    write = chat_reply({"name": "write_file", "arguments": {"path": "notes.md"}}, "second\n")
    first = chat_reply({"name": "write_file", "arguments": {"path": "notes.md"}}, "first\n")
    answer = chat_reply({"answer": "done"})
    summary, _, requests = run_against(repo, [first, read("notes.md"), write, read("notes.md"), answer])
    outputs = [r["tool_result"]["output"] for r in requests[:4]]
    assert summary["reason"] == "answered" and summary["turns"] == 5
    assert not any("made before" in output for output in outputs)
    assert "first" in outputs[1] and "second" in outputs[3]

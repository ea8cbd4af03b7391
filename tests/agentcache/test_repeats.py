"""The repetition guard, end to end: `agentcache run` on the openai backend against a loopback server whose replies
are fixed. The same failing call a second time is told it repeats; a third ends the run as `stuck`, or in read-only
mode asks for the answer with no tool enabled."""

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


def sent_alternatives(body):
    """What a request's reply schema allowed: tool names, and "answer" (with its pattern, if any)."""
    schema = body.get("response_format", {}).get("json_schema", {}).get("schema", {})
    return [s["properties"]["name"]["const"] if "name" in s["properties"] else
            f"answer{' on one line' if 'pattern' in s['properties']['answer'] else ''}" for s in schema.get("anyOf", [])]


def test_a_read_only_run_that_gets_stuck_is_asked_for_the_answer_with_no_tool_enabled(repo):
    run = run_scripted(repo, "Which exception is raised?", [read("README.md"), read("README.md"), read("README.md"),
                                                            chat_reply({"answer": "ValueError"})],
                       "--mode", "read-only", "--max-turns", "8")
    assert run.summary["reason"] == "answered" and run.summary["answer"] == "ValueError" and run.summary["turns"] == 4
    assert [r.get("stopped") for r in run.requests] == [None, None, None, None]
    assert "no tool is enabled for the next reply" in run.requests[2]["tool_result"]["output"]
    assert "read_file" in sent_alternatives(run.sent[2]) and sent_alternatives(run.sent[3]) == ["answer on one line"]
    assert [r["enabled_tools"] for r in run.requests][2:] == [["finish", "list_files", "read_file", "search"], []]


def test_a_read_only_runs_last_reply_is_its_answer_and_an_edit_runs_is_not(repo):
    run = run_scripted(repo, "Which exception is raised?", [read("README.md"), chat_reply({"answer": "ValueError"})],
                       "--mode", "read-only", "--max-turns", "2")
    assert run.summary["reason"] == "answered" and run.summary["answer"] == "ValueError"
    assert sent_alternatives(run.sent[1]) == ["answer on one line"] and run.requests[1]["enabled_tools"] == []
    edit_run = run_scripted(repo, "Which exception is raised?", [read("README.md"), read("notes.md")],
                            "--mode", "edit", "--max-turns", "2")
    assert edit_run.summary["reason"] == "max_turns" and edit_run.requests[1]["enabled_tools"]

"""Every edit is reversible from the session: a write or edit's request record keeps what it replaced (never L3),
end to end over loopback HTTP with fixed replies; putting `before` back restores the file byte for byte."""

from tests.agentcache.http_helpers import chat_reply, run_scripted


def test_write_and_edit_records_keep_what_they_replaced(repo):
    original = (repo / "README.md").read_text()
    line = original.splitlines()[0]
    edit = chat_reply({"name": "edit_file", "arguments": {"path": "README.md"}}, f"{line}\n", "# Changed\n")
    write = chat_reply({"name": "write_file", "arguments": {"path": "NOTES.md"}}, "new notes\n")
    requests = run_scripted(repo, "Retitle the README.", [edit, write, chat_reply({"answer": "done"})],
                            "--max-turns", "4").requests
    edited, created = requests[0]["tool_result"]["change"], requests[1]["tool_result"]["change"]
    assert edited == {"path": "README.md", "line": 1, "before": f"{line}\n", "after": "# Changed\n"}
    assert created == {"path": "NOTES.md", "line": 1, "before": None, "after": "new notes\n"}
    assert all(line not in e["text"] for r in requests for e in r["appended"] if e["kind"] == "tool_result")
    changed = (repo / "README.md").read_text()
    assert changed != original and changed.replace(edited["after"], edited["before"], 1) == original

"""The lookup before the first turn, end to end over loopback HTTP: a task naming a function gets one L3 note after
it with the function's path, line and signature (the line found here by scanning the file), the prefix is the same
with and without the note, and --no-lookup leaves it out."""

from tests.agentcache.http_helpers import chat_reply, run_scripted

TASK = "In which file is the function split_sentences defined?"


def first_request(repo, *flags):
    """What the server was sent first, and the session's first request record."""
    run = run_scripted(repo, TASK, [chat_reply({"answer": "textstats/words.py"})], "--mode", "read-only", *flags)
    return run.sent[0], run.requests[0]


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

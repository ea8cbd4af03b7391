"""Plans are not answers: the detector on the shapes small models write, and, end to end over loopback HTTP, a run
that sends a plan back with the retry hint and takes the answer that follows; read-only runs get the `ask` role."""

import pytest

from agentcache.answers import not_an_answer, stated_facts, unseen_facts
from agentcache.backends.constrain import ANSWER_LINE_CHARS, MAX_ANSWER_CHARS
from agentcache.config import RunConfig, role_of
from tests.agentcache.http_helpers import chat_reply, run_scripted

TOOLS = ["edit_file", "finish", "list_files", "read_file", "run_command", "search", "write_file"]
READ_ONLY = ["finish", "list_files", "read_file", "search"]

PLANS = [  # the shapes the task suite's stored answers and the issue show
    "To find the module, you can search for `split_sentences` in the repository.",
    "To verify the correctness of the change, I will run the project's tests.",
    "I need to search for the function first.",
    "you would need to add the following code to `textstats/readability.py`",
    "Let me read the file `textstats/words.py`.",
    "Let's look at the tests.",
    "We should check cli.py.",
    "To find where it is defined, I am going to read `textstats/words.py`.",
    "To answer this, you could read the tests.",
]
ANSWERS = [
    "textstats/words.py",
    "The function `split_sentences` is defined in `textstats/words.py`.",
    "ValueError",
    "It defaults to 3.",
    "The parameter `places` of `round_to` defaults to 2.",
    "I have added `is_valid` to `src/tomli/_parser.py`.",
    "To find the file where `split_sentences` is defined, I searched the repository: it is `textstats/words.py`.",
]


@pytest.mark.parametrize("text", PLANS)
def test_plans_are_not_answers(text):
    why = not_an_answer(text, TOOLS, READ_ONLY)
    assert why is not None and why.startswith("that reply is a plan")


@pytest.mark.parametrize("text", ANSWERS)
def test_answers_stand(text):
    assert not_an_answer(text, TOOLS, READ_ONLY) is None


def test_a_tool_named_is_not_an_answer_and_a_disabled_one_is_said_so():
    disabled = not_an_answer("Run `run_command` with pytest.", TOOLS, READ_ONLY)
    assert "names the tool run_command, which is not enabled here" in disabled
    assert "list_files, read_file, search" in disabled
    assert "instead of calling it" in not_an_answer("Use the `search` tool on words.py.", TOOLS, READ_ONLY)
    assert not_an_answer("The result of read_file shows 3.", TOOLS, READ_ONLY) is not None  # underscore: whole name


def test_a_tool_name_the_task_asks_about_is_its_subject():
    asked = "In which file is the function `search` defined?"
    assert not_an_answer("`search` is defined in agentcache/tools/search.py.", TOOLS, READ_ONLY, asked) is None
    assert not_an_answer("`search` is defined in agentcache/tools/search.py.", TOOLS, READ_ONLY) is not None


def test_a_copy_of_a_tool_error_is_not_an_answer_but_a_name_it_quotes_may_be():
    errors = ["search: this exact call was made before and gave the same result, shown above; use that result",
              "read_file: no such file: notes.txt"]
    echo = "search: this exact call was made before and gave  the same result"
    assert not_an_answer(echo, TOOLS, READ_ONLY, errors=errors).startswith("that reply copies a tool's error message")
    assert not_an_answer(echo, TOOLS, READ_ONLY) is None  # no error was returned: nothing to copy
    assert not_an_answer("notes.txt", TOOLS, READ_ONLY, errors=errors) is None  # shorter than a message
    assert not_an_answer("It is defined in textstats/words.py, line 15.", TOOLS, READ_ONLY, errors=errors) is None


def test_role_auto_follows_the_mode():
    assert role_of(RunConfig(mode="read-only")) == "ask"
    assert role_of(RunConfig(mode="edit")) == "coder"
    assert role_of(RunConfig(mode="full")) == "coder"
    assert role_of(RunConfig(mode="read-only", role="reviewer")) == "reviewer"


def run_read_only(repo, replies):
    return run_scripted(repo, "Where is split_sentences defined?", replies, "--mode", "read-only", "--max-turns", "4")


def test_a_plan_gets_the_retry_hint_and_the_answer_after_it_stands(repo):
    plan = chat_reply({"answer": "To find it, I will use the `run_command` function to grep the repository."})
    run = run_read_only(repo, [plan, chat_reply({"answer": "textstats/words.py"})])
    assert run.summary["reason"] == "answered" and run.summary["answer"] == "textstats/words.py"
    assert len(run.requests) == 2 and run.requests[0]["error"].startswith("that reply is a plan ('To find it, I will')")
    retry = run.sent[1]["messages"][-1]["content"]
    assert "that reply is a plan" in retry and "reply with one valid JSON object" in retry
    system = "\n".join(m["content"] for m in run.sent[0]["messages"] if m["role"] == "system")
    assert "Your role: ask." in system and "Your role: coder." not in system


def test_an_answer_copying_the_repeat_guard_goes_back_and_the_next_answer_stands(repo):
    look = chat_reply({"name": "search", "arguments": {"pattern": "def split_sentences"}})
    echo = chat_reply({"answer": "search: this exact call was made before and gave the same result, shown above"})
    run = run_read_only(repo, [look, look, echo, chat_reply({"answer": "textstats/words.py"})])
    assert run.summary["reason"] == "answered" and run.summary["answer"] == "textstats/words.py"
    assert [r.get("error") for r in run.requests][:2] == [None, None]
    assert run.requests[2]["error"].startswith("that reply copies a tool's error message")


def test_plans_until_the_retries_run_out_end_the_run_as_invalid_output(repo):
    run = run_read_only(repo, [chat_reply({"answer": "Let me search for split_sentences."})])
    assert run.summary["reason"] == "invalid_output" and run.summary["answer"] is None
    assert len(run.requests) == RunConfig().retries + 1


def answer_schema_sent(body):
    """The answer alternative of the reply schema a request sent (None when it sent none)."""
    schema = body.get("response_format", {}).get("json_schema", {}).get("schema", {})
    return next((s["properties"]["answer"] for s in schema.get("anyOf", []) if "answer" in s["properties"]), None)


def test_after_a_plan_a_read_only_run_asks_for_the_answer_on_one_line_and_takes_it(repo):
    look = chat_reply({"name": "list_files", "arguments": {}})
    plan = chat_reply({"answer": "To find it, you can search for `split_sentences` in the repository."})
    run = run_read_only(repo, [look, plan, chat_reply({"answer": "textstats/words.py"})])
    assert run.summary["reason"] == "answered" and run.summary["answer"] == "textstats/words.py"
    first, free, retry = (answer_schema_sent(body) for body in run.sent)
    assert first is None  # the first reply is a call (tool_choice "first")
    assert free == {"type": "string", "maxLength": MAX_ANSWER_CHARS}
    assert retry == {"type": "string", "maxLength": ANSWER_LINE_CHARS, "pattern": "^[^\\n]+$"}
    assert "otherwise reply with only what was asked, on one line" in run.sent[2]["messages"][-1]["content"]


def test_after_a_plan_an_edit_run_is_asked_for_the_answer_itself(repo):
    look = chat_reply({"name": "list_files", "arguments": {}})
    plan = chat_reply({"answer": "To find it, you can search for `split_sentences` in the repository."})
    run = run_scripted(repo, "Where is split_sentences defined?", [look, plan, chat_reply({"answer": "words.py"})],
                       "--mode", "edit", "--max-turns", "4")
    assert run.summary["answer"] == "words.py" and len(run.sent) == 3
    assert "otherwise reply with the answer itself" in run.sent[2]["messages"][-1]["content"]


SHOWN = ["  533 class TTLCache(_TimedCache)\n  557     def __init__(self, maxsize, ttl, timer=time.monotonic, getsizeof=None)",
         "    10\tdef words(text: str, lower: bool = True) -> list[str]:\n    11\t    found = WORD.findall(text)",
         "[11 matching lines]\ntests/test_cli.py\n  6: def test_json_output(tmp_path, capsys):"]


@pytest.mark.parametrize("answer, unseen", [
    ("1000", ["1000"]),  # a default from memory
    ("It uses SHA-256.", ["256"]),
    ("The default is 10.", ["10"]),  # 10 is only a line number in what was shown
    ("`_TimedCache.timer`", ["_TimedCache.timer"]),
    ("It has 5 fields: `hits`, `misses`.", ["5", "hits", "misses"]),
])
def test_an_answer_stating_what_nothing_shown_holds_is_unseen(answer, unseen):
    assert unseen_facts(answer, SHOWN) == unseen


@pytest.mark.parametrize("answer", [
    "time.monotonic",
    "`TTLCache` takes `timer=time.monotonic`.",  # both are in the outline
    "11",
    "It is defined in `tests/test_cli.py` at line 6.",  # a line number is not a stated fact
    "tests/test_cli.py:6",
    "The words function lowercases them.",  # plain words are not checked
])
def test_an_answer_from_what_was_shown_stands(answer):
    assert unseen_facts(answer, SHOWN) == []


def test_stated_facts_skip_line_numbers_and_plain_words():
    assert stated_facts("`split_sentences` is in textstats/words.py on line 15 (words.py:15), 2 of them") == [
        "2", "split_sentences", "textstats/words.py", "words.py"]


def test_an_unseen_answer_goes_back_once_and_the_next_answer_stands(repo):
    look = chat_reply({"name": "list_files", "arguments": {}})
    guess = chat_reply({"answer": "It defaults to 1000."})
    run = run_read_only(repo, [look, guess])
    assert run.summary["reason"] == "answered" and run.summary["answer"] == "It defaults to 1000."
    assert len(run.requests) == 3 and run.requests[1]["error"].startswith(
        "that answer states `1000`, which nothing the tools returned holds")
    assert "check it with a tool" in run.sent[2]["messages"][-1]["content"]
    assert answer_schema_sent(run.sent[2]) == {"type": "string", "maxLength": ANSWER_LINE_CHARS,
                                               "pattern": "^[^\\n]+$"}

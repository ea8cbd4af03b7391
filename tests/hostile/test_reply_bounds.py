"""Hostile model replies: huge integers, numbers that are not finite, deep nesting, lone surrogates and replies of
megabytes are each an invalid reply (a ToolCallError the agent retries with), never an exception or a hang, with the
real tool grammar; and end to end, `agentcache run` against a loopback server that sends them goes on to the answer."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agentcache import PROMPTS_DIR
from agentcache.backends.constrain import (INT_BOUND, MAX_DEPTH, MAX_REPLY_CHARS, Answer, ToolCall, ToolCallError,
                                           ToolCallGrammar, reply_json, text_ll_tokenizer)
from layers import ToolRegistry
from tests.agentcache.http_helpers import RecordingServer

ROOT = Path(__file__).resolve().parents[2]
SPECS = list(ToolRegistry.from_dir(PROMPTS_DIR / "tools"))
BOUND_S = 60  # far above what any of these takes; a parser that recurses, hangs or goes quadratic passes it


def read_call(start_line: str) -> str:
    return '{"name": "read_file", "arguments": {"path": "README.md", "start_line": ' + start_line + "}}"


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


MEGABYTES = 3 * (1 << 20)
HOSTILE = {
    "int of 5000 digits": read_call("1" * 5000),
    "negative int of 5000 digits": read_call("-" + "9" * 5000),
    "int of 100000 digits in an unknown key": '{"name": "finish", "arguments": {"n": ' + "7" * 100_000 + "}}",
    "int 2**31": read_call(str(2 ** 31)),
    "int -2**31": read_call(str(-2 ** 31)),
    "int 2**63 in an array": '{"name": "read_file", "arguments": {"path": [' + str(2 ** 63) + "]}}",
    "1e400": read_call("1e400"),
    "-1e400": read_call("-1e400"),
    "1E+999999999": read_call("1E+999999999"),
    "a float of 5000 digits": read_call("9" * 5000 + ".5"),
    "NaN": read_call("NaN"),
    "Infinity": read_call("Infinity"),
    "-Infinity": read_call("-Infinity"),
    "arrays 100000 deep": nested(100_000),
    "objects 100000 deep": '{"a": ' * 100_000 + "1" + "}" * 100_000,
    "arrays and objects mixed 50000 deep": '[{"a": ' * 50_000 + "1" + "}]" * 50_000,
    "arguments 33 deep": '{"name": "read_file", "arguments": {"path": ' + nested(MAX_DEPTH - 1, '"x"') + "}}",
    "arrays 100000 deep, unclosed": "[" * 100_000,
    "a lone surrogate escape in a path": '{"name": "read_file", "arguments": {"path": "a\\ud800b"}}',
    "a lone low surrogate escape in a key": '{"name": "read_file", "arguments": {"\\udc00": "x"}}',
    "a lone surrogate escape in an answer": '{"answer": "fine \\udbff"}',
    "a 3 MB answer": '{"answer": "' + "x" * MEGABYTES + '"}',
    "a 3 MB write_file": '{"name": "write_file", "arguments": {"path": "a", "content": "' + "y" * MEGABYTES + '"}}',
    "3 MB of white space": " " * MEGABYTES,
    "3 MB of open brackets": "[" * MEGABYTES,
    "3 MB of digits": "1" * MEGABYTES,
}


def within_bound(fn):
    """fn()'s result or exception, failing the test if it does not finish within BOUND_S (it is left running)."""
    done: dict = {}

    def target():
        try:
            done["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            done["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(BOUND_S)
    assert not thread.is_alive(), f"still parsing after {BOUND_S} s"
    return done


@pytest.fixture(scope="module")
def grammar():
    return ToolCallGrammar(text_ll_tokenizer(), SPECS, allow_answer=True)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_reply_is_an_invalid_reply(grammar, name):
    done = within_bound(lambda: grammar.parse(HOSTILE[name]))
    assert "value" not in done, f"accepted as {done.get('value')!r:.200}"
    assert isinstance(done["error"], ToolCallError), repr(done["error"])
    message = str(done["error"])
    assert len(message) < 400 and "\n" not in message, message  # one line, never the reply itself


@pytest.mark.parametrize("name", ["a 3 MB answer", "3 MB of open brackets"])
def test_a_hostile_reply_is_invalid_in_the_native_format_too(name):
    native = ToolCallGrammar(text_ll_tokenizer(), SPECS, allow_answer=True)
    native.tool_format = "native"  # the parser's branch; the text tokenizer has no <tool_call> token to compile
    done = within_bound(lambda: native.parse(HOSTILE[name]))
    assert isinstance(done.get("error"), ToolCallError), done


def test_the_messages_say_which_bound(grammar):
    cases = {"int of 5000 digits": "outside the range", "1e400": "finite", "NaN": "NaN",
             "arrays 100000 deep": f"more than {MAX_DEPTH} deep", "arguments 33 deep": f"more than {MAX_DEPTH} deep",
             "a lone surrogate escape in a path": "surrogate", "a 3 MB answer": f"more than the {MAX_REPLY_CHARS}",
             "arrays 100000 deep, unclosed": "deep"}
    for name, fragment in cases.items():
        with pytest.raises(ToolCallError, match=fragment):
            grammar.parse(HOSTILE[name])


def test_the_bounds_are_exact():
    assert reply_json(str(INT_BOUND - 1)) == INT_BOUND - 1
    assert reply_json(str(-(INT_BOUND - 1))) == -(INT_BOUND - 1)
    for number in (INT_BOUND, -INT_BOUND, 10 ** 10, 10 ** 11):
        with pytest.raises(ToolCallError, match="outside the range"):
            reply_json(str(number))
    assert reply_json(nested(MAX_DEPTH)) == json.loads(nested(MAX_DEPTH))  # MAX_DEPTH arrays, one in another
    with pytest.raises(ToolCallError, match="deep"):
        reply_json(nested(MAX_DEPTH + 1))
    assert reply_json("1.7976931348623157e308") == 1.7976931348623157e308  # the largest finite double
    with pytest.raises(ToolCallError, match="finite"):
        reply_json("1.8e308")
    assert reply_json('"\\ud83d\\ude00"') == "\U0001f600"  # a surrogate pair is one character, not lone ones


def test_replies_within_the_bounds_still_parse(grammar):
    assert grammar.parse(read_call("2")) == ToolCall("read_file", {"path": "README.md", "start_line": 2})
    assert grammar.parse('{"answer": "x"}') == Answer("x")
    content = "z" * 200_000 + "\n"  # one long line in a raw block: read by one regular expression, in linear time
    reply = json.dumps({"name": "write_file", "arguments": {"path": "a"}}) + f"\n```\n{content}```"
    done = within_bound(lambda: grammar.parse(reply))
    assert done.get("value") == ToolCall("write_file", {"path": "a", "content": content}, ("content",)), \
        done.get("error")
    long_string = json.dumps({"name": "read_file", "arguments": {"path": "z" * 200_000}})  # one long word in the
    # JSON: the grammar check tokenizes it greedily, in linear time
    done = within_bound(lambda: grammar.parse(long_string))
    assert done.get("value") == ToolCall("read_file", {"path": "z" * 200_000}), done.get("error")
    assert len(reply) < MAX_REPLY_CHARS
    with pytest.raises(ToolCallError, match="do not match its parameters"):  # the schema's own bound still holds
        grammar.parse(read_call("1000001"))


def test_the_local_models_tokenizer_checks_calls_the_same_way(models_dir):
    from engine.model import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m", cache_dir=models_dir)
    assert tokenizer is not None, "smollm2-135m is not installed"
    local = ToolCallGrammar(tokenizer, SPECS, allow_answer=True, tool_format="json")
    content = "word, " * 20_000 + "q" * 50_000 + "\n"
    reply = json.dumps({"name": "write_file", "arguments": {"path": "src/a b.py"}}) + f"\n```\n{content}```"
    assert within_bound(lambda: local.parse(reply)).get("value") == ToolCall(
        "write_file", {"path": "src/a b.py", "content": content}, ("content",))
    with pytest.raises(ToolCallError, match="do not match its parameters"):
        local.parse(read_call("0"))
    for name in ("int of 5000 digits", "arrays 100000 deep", "NaN", "a 3 MB answer"):
        with pytest.raises(ToolCallError):
            local.parse(HOSTILE[name])


# --- end to end: `agentcache run` on the openai backend, against a loopback server sending hostile replies ---------

NO_MODEL_CARDS = (200, {"object": "list", "data": []})
NO_CONTEXTS = (404, {"error": {"message": "Not Found"}})


def completion(content: str) -> tuple[int, dict]:
    return (200, {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                               "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}})


E2E = ["int of 5000 digits", "1e400", "NaN", "arguments 33 deep", "a lone surrogate escape in a path",
       "a 3 MB write_file"]


def test_run_turns_hostile_replies_into_retries_and_reaches_the_answer(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README.md").write_text("# demo\n")
    (repo / "agentcache.yaml").write_text("retries: 10\n")
    replies = [completion(HOSTILE[name]) for name in E2E]
    replies += [completion("\ud800 a raw lone surrogate in the content"), completion('{"answer": "done"}')]
    with RecordingServer([NO_MODEL_CARDS, NO_CONTEXTS, *replies], repeat_last=True) as server:
        proc = subprocess.run(
            [sys.executable, "-m", "agentcache.cli", "run", "Read the README.", "--repo", str(repo), "--backend",
             "openai", "--base-url", server.url + "/v1", "--model", "m", "--max-turns", "12", "--json"],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["reason"], summary["answer"], summary["turns"]) == ("answered", "done", len(replies))
    session = repo / ".agentcache" / "sessions" / f"{summary['session_id']}.jsonl"
    records = [json.loads(line) for line in session.read_bytes().decode("utf-8").split("\n") if line]
    requests = [r for r in records if r["type"] == "request"]
    errors = [r.get("error") for r in requests]
    assert all(errors[:-1]) and errors[-1] is None, errors
    assert "outside the range" in errors[0] and "finite" in errors[1] and "NaN" in errors[2]
    assert "deep" in errors[3] and "surrogate" in errors[4] and "characters long" in errors[5]
    echoes = [r["appended"][0]["text"] for r in requests[:-1]]
    assert all(len(text) < 20_000 for text in echoes), [len(text) for text in echoes]  # the 3 MB one is cut
    assert echoes[0] == HOSTILE[E2E[0]]  # a reply within the bounds is echoed whole
    assert "\ufffd" in echoes[6]  # the raw lone surrogate became U+FFFD: the session is UTF-8 text
    told = [r["appended"][1]["text"] for r in requests[:-1]]
    assert all(r["appended"][1]["kind"] == "tool_error" and "reply with one valid JSON object" in t
               for r, t in zip(requests, told))

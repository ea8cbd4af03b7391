"""Code out of JSON: a tool's raw parameters (write_file's content, edit_file's old and new) follow the call's JSON
as ``` blocks. The spec declares them, the grammar demands the blocks and refuses the code inside JSON, the parse
fills the arguments, history shows the model its own format in both tool formats, and a remote reply in the new
format writes the file exactly (an old-style one gets one clear error)."""

import json
import os
import re
import subprocess
import sys
import time

import pytest
import yaml

from agentcache import PROMPTS_DIR
from agentcache.backends.constrain import Answer, ToolCall, ToolCallError, ToolCallGrammar, text_ll_tokenizer
from agentcache.render import FORMAT_INSTRUCTIONS, ChatRenderer, block_message, reply_text
from engine.model import load_tokenizer
from layers import Block, Layer, PromptError, ToolRegistry
from layers.l3 import ToolCall as ToolCallEntry
from layers.raw import call_text, fits
from layers.tools import load_tool_spec
from tests.agentcache.conftest import random_chat_backend
from tests.agentcache.http_helpers import RecordingServer

REGISTRY = ToolRegistry.from_dir(PROMPTS_DIR / "tools")
CODE = 'def f(x):\n    """Say "hi" \\\\ back."""\n\n    return f\'{x}\té ✓ \\n\'  # a tab, quotes, unicode\n\n\n'
WRITE = '{"name": "write_file", "arguments": {"path": "src/a.py"}}\n```\n' + CODE + '```'
EDIT = '{"name": "edit_file", "arguments": {"path": "a.py"}}\n```\n    x = 1\n```\n```\n    x = "2"\n```'
OLD_STYLE = json.dumps({"name": "write_file", "arguments": {"path": "a.py", "content": CODE}})


@pytest.fixture(scope="module")
def backend():
    return random_chat_backend()


@pytest.fixture(scope="module")
def grammar():
    return ToolCallGrammar(text_ll_tokenizer(), list(REGISTRY))


@pytest.fixture(scope="module")
def qwen_tokenizer(models_dir):
    tokenizer = load_tokenizer("qwen2.5-coder-0.5b", cache_dir=models_dir)
    assert tokenizer is not None, "qwen2.5-coder-0.5b is not installed: make model-qwen2.5-coder-0.5b"
    return tokenizer


def writes(tokenizer, grammar, text):
    """Whether the grammar lets the model write all of `text` and end there, fed token by token through its mask."""
    allowed = grammar.new_mask(len(tokenizer) + 64)
    ids = tokenizer.encode(text, add_special_tokens=False)
    if not all(allowed(ids[:i])[ids[i]] for i in range(len(ids))):
        return False
    matcher = grammar.new_matcher()
    return matcher.consume_tokens(ids) and matcher.is_accepting()


# -- the spec --------------------------------------------------------------------------------------------------


def test_the_bundled_specs_declare_their_raw_parameters_and_l1_says_where_they_go():
    assert {spec.name: spec.raw for spec in REGISTRY if spec.raw} == {"write_file": ("content",),
                                                                      "edit_file": ("old", "new")}
    shown = {spec.name: spec.to_dict()["parameters"] for spec in REGISTRY}
    assert shown["write_file"]["required"] == ["path"]
    assert shown["write_file"]["properties"]["content"]["description"].endswith(
        "Not in the JSON arguments: write it as a ``` block after the call.")
    assert "the first ``` block" in shown["edit_file"]["properties"]["old"]["description"]
    assert "the second ``` block" in shown["edit_file"]["properties"]["new"]["description"]
    assert REGISTRY.get("write_file").parameters["required"] == ["path", "content"]  # the tool still takes it
    assert "content" in json.loads(REGISTRY.render())[-1]["parameters"]["properties"]


@pytest.mark.parametrize("change, message", [
    ({"raw": "content"}, "list of distinct parameter names"),
    ({"raw": ["missing"]}, "must be a string parameter"),
    ({"raw": ["content", "content"]}, "list of distinct parameter names"),
    ({"raw": ["content"], "parameters": {"type": "object", "properties": {"content": {"type": "string"}}}},
     "must be required"),
    ({"raws": ["content"]}, "unknown keys in a tool spec: raws"),
])
def test_a_bad_raw_declaration_is_refused_when_loaded(tmp_path, change, message):
    data = yaml.safe_load((PROMPTS_DIR / "tools" / "write_file.yaml").read_text())
    data.update(change)
    path = tmp_path / "write_file.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(PromptError, match=message):
        load_tool_spec(path)


# -- the grammar -----------------------------------------------------------------------------------------------


def test_the_json_grammar_admits_a_call_and_its_blocks_and_refuses_code_inside_json(backend):
    grammar = backend.grammar(list(REGISTRY), {s.name for s in REGISTRY})
    tokenizer = backend.model.tokenizer
    assert writes(tokenizer, grammar, WRITE)
    assert writes(tokenizer, grammar, EDIT)
    assert writes(tokenizer, grammar, WRITE.replace("```\n", "```python\n", 1))  # an info string is allowed
    assert writes(tokenizer, grammar, '{"name": "read_file", "arguments": {"path": "a.py"}}')
    assert not writes(tokenizer, grammar, '{"name": "write_file", "arguments": {"path": "a.py", "content')
    assert not writes(tokenizer, grammar, '{"name": "write_file", "arguments": {"path": "a.py"}}')  # no block
    assert not writes(tokenizer, grammar, EDIT.rsplit("\n```\n```", 1)[0] + "\n```")  # edit_file: one block short
    assert not writes(tokenizer, grammar, WRITE + "\n")  # nothing after the last block
    inner_fence = '{"name": "write_file", "arguments": {"path": "a.md"}}\n```\n```python\nx\n```\n```'
    assert not writes(tokenizer, grammar, inner_fence)  # no line of a block starts with ```
    assert not writes(tokenizer, grammar, '{"name": "read_file", "arguments": {"path": "a.py"}}\n```\nx\n```')


def test_the_native_grammar_takes_the_blocks_after_the_tags_a_bare_or_a_fenced_call(qwen_tokenizer):
    grammar = ToolCallGrammar(qwen_tokenizer, list(REGISTRY), tool_format="native")
    call, blocks = WRITE.split("\n", 1)
    for head in (f"<tool_call>\n{call}\n</tool_call>", call, f"```json\n{call}\n```"):
        assert writes(qwen_tokenizer, grammar, f"{head}\n{blocks}"), head
        assert grammar.parse(f"{head}\n{blocks}") == ToolCall("write_file", {"path": "src/a.py", "content": CODE},
                                                              ("content",))
        assert not writes(qwen_tokenizer, grammar, head)
    tagged_old_style = f"<tool_call>\n{OLD_STYLE}\n</tool_call>"
    assert not grammar.new_matcher().consume_tokens(qwen_tokenizer.encode(tagged_old_style, add_special_tokens=False))
    with pytest.raises(ToolCallError, match="content must not be inside the JSON arguments"):
        grammar.parse(tagged_old_style)
    assert writes(qwen_tokenizer, grammar, "The words are split in words().")


# -- the parse -------------------------------------------------------------------------------------------------


def test_the_parse_fills_raw_arguments_from_the_blocks_exactly(grammar):
    assert grammar.parse(WRITE) == ToolCall("write_file", {"path": "src/a.py", "content": CODE}, ("content",))
    assert grammar.parse(EDIT).arguments == {"path": "a.py", "old": "    x = 1\n", "new": '    x = "2"\n'}
    assert grammar.parse("\n" + WRITE + "\n\n").arguments["content"] == CODE  # white space around the reply
    assert grammar.parse(WRITE.replace("```\n", "```python\n", 1)).arguments["content"] == CODE  # info ignored


@pytest.mark.parametrize("lines, value", [
    ("", ""),  # no lines: the empty string (an empty file, or edit_file deleting the old lines)
    ("\n", "\n"),  # one empty line
    ("x = 1\n", "x = 1\n"),  # each line keeps its newline: a written file ends with one
    ("x = 1\n\n\n", "x = 1\n\n\n"),  # trailing blank lines are kept
    ("``\n` x\n", "``\n` x\n"),  # one or two backticks may start a line
    ("a\r\nb\n", "a\r\nb\n"),  # a carriage return is part of its line
])
def test_a_block_value_is_its_lines_each_with_its_newline(grammar, lines, value):
    reply = '{"name": "write_file", "arguments": {"path": "a"}}\n```\n' + lines + "```"
    assert grammar.parse(reply).arguments["content"] == value
    assert fits(value) and call_text("write_file", {"path": "a", "content": value}, ("content",)).endswith(
        "\n```\n" + lines + "```")


@pytest.mark.parametrize("reply, message", [
    (OLD_STYLE, "write_file: content must not be inside the JSON arguments; content goes in a ``` block on the "
                "line after the call"),
    ('{"name": "edit_file", "arguments": {"path": "a", "old": "x", "new": "y"}}',
     "old and new must not be inside the JSON arguments; old and new go in ``` blocks after the call"),
    ('{"name": "write_file", "arguments": {"path": "a"}}', "the content block is missing"),
    ('{"name": "write_file", "arguments": {"path": "a"}}\n```\nx = 1\n',
     "the content block is not closed (was it cut off?)"),
    (EDIT.rsplit("\n```\n```", 1)[0] + "\n```", "the new block is missing"),
    (WRITE + "\nmore", "unexpected text after the JSON object and its blocks"),
    ('{"name": "read_file", "arguments": {"path": "a"}}\n```\nx\n```', "read_file: unexpected text after the JSON"),
    ('{"answer": "done"}\n```\nx\n```', "answer: unexpected text"),
    ('{"name": "write_file", "arguments": {"path": 3}}\n```\nx\n```', "do not match its parameters"),
])
def test_the_parse_refuses_what_the_grammar_would_not_write(grammar, reply, message):
    with pytest.raises(ToolCallError, match=re.escape(message)):
        grammar.parse(reply)


@pytest.mark.parametrize("body", ["a" * 900_000, "`` x\n" * 150_000, "\n" * 900_000, "\n```\n" * 100_000])
def test_a_hostile_block_is_refused_in_linear_time(grammar, body):
    reply = '{"name": "write_file", "arguments": {"path": "a"}}\n```\n' + body
    started = time.perf_counter()
    with pytest.raises(ToolCallError, match="write_file: "):
        grammar.parse(reply)
    assert time.perf_counter() - started < 2.0


def test_a_call_without_raw_parameters_and_answers_parse_as_before(grammar):
    assert grammar.parse('{"name": "read_file", "arguments": {"path": "a"}}') == ToolCall("read_file", {"path": "a"})
    assert grammar.parse('{"answer": "done"}') == Answer("done")


# -- history ---------------------------------------------------------------------------------------------------


def test_history_shows_the_call_and_its_blocks_and_parses_back_to_the_same_call(grammar):
    parsed = grammar.parse(WRITE)
    block = ToolCallEntry(parsed.name, parsed.arguments, parsed.raw).to_block()
    assert block.text == '{"arguments":{"path":"src/a.py"},"name":"write_file"}\n```\n' + CODE + "```"
    assert block.text == reply_text(parsed)
    assert block_message(block) == {"role": "assistant", "content": block.text}
    assert grammar.parse(block.text) == parsed  # the json format's history is a reply the parse takes
    again = grammar.parse(EDIT)
    assert grammar.parse(ToolCallEntry(again.name, again.arguments, again.raw).to_block().text) == again


def test_native_history_is_byte_for_byte_what_the_model_wrote(qwen_tokenizer):
    grammar = ToolCallGrammar(qwen_tokenizer, list(REGISTRY), tool_format="native")
    renderer = ChatRenderer(qwen_tokenizer)
    assert renderer.tool_format == "native"
    for text in (WRITE, EDIT):
        call, blocks = text.split("\n", 1)
        written = f"<tool_call>\n{call}\n</tool_call>\n{blocks}"
        parsed = grammar.parse(written)
        block = ToolCallEntry(parsed.name, parsed.arguments, parsed.raw).to_block()
        assert renderer.message(block) == {"role": "assistant", "content": written}


def test_a_value_a_block_cannot_carry_stays_in_the_json_and_renders_the_same_every_time():
    for value in ("no newline at the end", "```\n", "a\n```python\n"):
        assert not fits(value)
        text = call_text("write_file", {"path": "a", "content": value}, ("content",))
        assert text == json.dumps({"arguments": {"content": value, "path": "a"}, "name": "write_file"},
                                  separators=(",", ":"), ensure_ascii=False)
    old_style = ToolCallEntry("write_file", {"path": "a", "content": "x\n"}).to_block()  # no raw: as before
    assert "\n" not in old_style.text and json.loads(old_style.text)["arguments"]["content"] == "x\n"
    first = ToolCallEntry("edit_file", {"path": "a", "old": "x\n", "new": "y\n"}, ("old", "new")).to_block()
    assert first == ToolCallEntry("edit_file", {"new": "y\n", "old": "x\n", "path": "a"}, ("old", "new")).to_block()


def test_the_format_instructions_say_how_to_write_a_raw_parameter():
    assert "``` block is not in the JSON arguments" in FORMAT_INSTRUCTIONS
    assert '{"name": "<tool name>", "arguments": {"path": "hello.py"}}\n```\nprint("hello")\n```\n' in \
        FORMAT_INSTRUCTIONS


def test_the_native_tools_text_says_how_to_write_a_raw_parameter(qwen_tokenizer):
    block = Block(Layer.L1, "tools", "tools", REGISTRY.render().encode("utf-8"))
    text = ChatRenderer(qwen_tokenizer).message(block)["content"]
    assert text.endswith('<tool_call>\n{"name": "<tool name>", "arguments": {"path": "hello.py"}}\n</tool_call>\n'
                         '```\nprint("hello")\n```')
    assert "after </tool_call>, write it as a block of lines" in text


# -- end to end over a remote backend --------------------------------------------------------------------------


def completion(content: str) -> tuple[int, dict]:
    return (200, {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                               "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}})


def run_against(repo, replies, *extra):
    """`run --json` on the openai backend with fixed replies: the summary, the session's records and the requests
    the server got."""
    script = [(200, {"object": "list", "data": []}), (404, {"error": {"message": "Not Found"}}), *replies]
    with RecordingServer(script, repeat_last=True) as server:
        proc = subprocess.run(
            [sys.executable, "-m", "agentcache.cli", "run", "Add a module.", "--repo", str(repo), "--backend",
             "openai", "--base-url", server.url + "/v1", "--model", "m", "--max-turns", "4", "--json", *extra],
            capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    session = repo / ".agentcache" / "sessions" / f"{summary['session_id']}.jsonl"
    records = [json.loads(line) for line in session.read_text().splitlines()]
    chats = [body for method, path, body in server.requests if path.endswith("/chat/completions")]
    return summary, records, chats


def test_a_remote_write_file_with_a_block_creates_the_file_with_exactly_the_code(repo):
    answer = completion('{"answer": "Added src/a.py."}')
    summary, records, chats = run_against(repo, [completion(WRITE), answer])
    assert summary["reason"] == "answered"
    assert (repo / "src" / "a.py").read_bytes() == CODE.encode("utf-8")
    request = next(r for r in records if r["type"] == "request")
    assert request["tool_call"] == {"name": "write_file", "arguments": {"path": "src/a.py", "content": CODE}}
    assert request["appended"][0]["text"] == '{"arguments":{"path":"src/a.py"},"name":"write_file"}\n```\n' + \
        CODE + "```"
    assert "response_format" not in chats[0]  # a JSON schema cannot hold the block
    assert chats[1]["messages"][-2] == {"role": "assistant", "content": request["appended"][0]["text"]}
    _, _, resumed = run_against(repo, [answer], "--resume", summary["session_id"])  # replays `appended`
    history = [m for m in chats[1]["messages"] if m["role"] != "system"]
    assert [m for m in resumed[0]["messages"] if m["role"] != "system"][:len(history)] == history


def test_a_remote_reply_with_the_code_inside_json_gets_one_clear_error(repo):
    summary, records, _ = run_against(repo, [completion(OLD_STYLE), completion('{"answer": "gave up"}')])
    request = next(r for r in records if r["type"] == "request")
    assert request["error"] == ("write_file: content must not be inside the JSON arguments; content goes in a ``` "
                                "block on the line after the call")
    assert request["appended"][1]["kind"] == "tool_error" and "``` block" in request["appended"][1]["text"]
    assert not (repo / "a.py").exists() and summary["reason"] == "answered"

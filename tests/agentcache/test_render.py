"""The one rendering module: the bytes every backend, serve and inspect send, and the tokens they count."""

from agentcache.backends.constrain import Answer, ToolCall
from agentcache.render import ChatRenderer, block_message, reply_text, segment_ids, tools_message
from agentcache.serve.chat import TOOL_FORMAT, chat_messages
from layers import Block, Layer, canonical_json

BLOCKS = [
    Block(Layer.L1, "system", "system", b"You are a coding agent."),
    Block(Layer.L1, "tools", "tools", b'[{"name":"finish"}]\n'),
    Block(Layer.L2, "tree", "tree", b"README.md\n"),
    Block(Layer.L2, "file", "README.md", b"# demo\n"),
    Block(Layer.L3, "user", "u1", b"Read the README."),
    Block(Layer.L3, "tool_call", "c1", b'{"arguments":{},"name":"finish"}'),
    Block(Layer.L3, "tool_result", "r1", b"done"),
]
FORMAT = (
    "Reply with exactly one JSON object (and the ``` blocks its call takes) and nothing else.\n"
    'To call a tool: {"name": "<tool name>", "arguments": {<arguments matching the tool\'s parameters>}}\n'
    "A parameter written as a ``` block is not in the JSON arguments: after the call, write it as a block of lines, "
    "each such parameter its own block in the order listed. For example:\n"
    '{"name": "<tool name>", "arguments": {"path": "hello.py"}}\n'
    '```\nprint("hello")\n```\n'
    'To give the final answer: {"answer": "<your answer>"}\n'
    "Call one tool at a time; its result comes back in the next message.\n"
)


def test_blocks_render_to_these_exact_chatml_bytes_without_a_template():
    segments = ChatRenderer(None).block_segments(BLOCKS)
    assert segments == [
        "<|im_start|>system\nYou are a coding agent.<|im_end|>\n",
        f'<|im_start|>system\n{FORMAT}\nTools (JSON Schema):\n[{{"name":"finish"}}]\n<|im_end|>\n',
        "<|im_start|>system\nRepository files:\nREADME.md\n<|im_end|>\n",
        "<|im_start|>system\nFile README.md:\n# demo\n<|im_end|>\n",
        "<|im_start|>user\nRead the README.<|im_end|>\n",
        '<|im_start|>assistant\n{"arguments":{},"name":"finish"}<|im_end|>\n',
        "<|im_start|>tool\ndone<|im_end|>\n",
        "<|im_start|>assistant\n",
    ]
    assert segments[:-1] == ChatRenderer(None).segments([block_message(b) for b in BLOCKS])[:-1]


def test_serve_states_its_tools_in_the_same_message_shape_as_the_tools_block():
    tools = [{"type": "function", "function": {"name": "finish", "parameters": {"type": "object"}}}]
    head = chat_messages([{"role": "user", "content": "hi"}], tools)[0]
    assert head == {"role": "system", "content": f"{TOOL_FORMAT}\nTools (JSON Schema):\n{canonical_json(tools)}"}
    assert head == tools_message(canonical_json(tools), TOOL_FORMAT)
    assert block_message(BLOCKS[1]) == tools_message(BLOCKS[1].text)


def test_a_map_block_renders_as_a_titled_outline():
    block = Block(Layer.L2, "map", "pkg/words.py", b"  15 def split_sentences(text: str) -> list[str]\n")
    assert block_message(block) == {
        "role": "system",
        "content": "Outline of pkg/words.py (line, definition, docstring):\n"
                   "  15 def split_sentences(text: str) -> list[str]\n",
    }


def test_a_parsed_reply_goes_back_to_l3_as_canonical_json():
    assert reply_text(ToolCall("read_file", {"path": "a.md", "end_line": 3})) == \
        '{"arguments":{"end_line":3,"path":"a.md"},"name":"read_file"}'
    assert reply_text(Answer("done")) == '{"answer":"done"}'


def test_segment_ids_are_the_tokens_the_engine_computes():
    from agentcache.cache_dir import models_dir
    from engine import Engine, load_model

    model = load_model("random-tiny-chat", cache_dir=models_dir())
    segments = ChatRenderer(model.tokenizer).block_segments(BLOCKS)
    ids = segment_ids(model.tokenizer, segments)
    flat, counts = Engine(model, capacity_bytes=8 << 20).tokenize(segments)
    assert [t for part in ids for t in part] == flat
    assert [len(part) for part in ids] == counts
    assert all(counts)

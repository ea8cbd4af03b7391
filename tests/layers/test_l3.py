import inspect

import pytest

from layers import AssistantMessage, Context, Layer, LayerOrderError, ToolCall, ToolResult, UserInput

ENTRIES = [
    UserInput("fix the bug"),
    AssistantMessage("on it"),
    ToolCall("read_file", {"path": "a.py", "start_line": 1}),
    ToolResult("read_file", "print(1)"),
    ToolResult("run_command", "boom", is_error=True),
]


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: type(e).__name__)
def test_entries_are_always_l3(entry):
    assert entry.to_block().layer is Layer.L3
    assert list(inspect.signature(entry.to_block).parameters) == []


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: type(e).__name__)
def test_entries_cannot_be_placed_before_the_prefix(entry):
    from layers import Block

    with pytest.raises(LayerOrderError):
        Context([entry.to_block(), Block(Layer.L1, "system", "s", b"x")])


def test_tool_call_content_is_canonical_json():
    a = ToolCall("search", {"pattern": "x", "path": "*.py"}).to_block()
    b = ToolCall("search", {"path": "*.py", "pattern": "x"}).to_block()
    assert a.content == b.content == b'{"arguments":{"path":"*.py","pattern":"x"},"name":"search"}'


def test_error_results_are_marked():
    assert ToolResult("x", "out", is_error=True).to_block().kind == "tool_error"
    assert ToolResult("x", "out").to_block().kind == "tool_result"

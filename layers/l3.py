"""L3 entries: user input, assistant messages, tool calls and results; always L3 by type."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from layers.block import Block, Layer
from layers.raw import call_text


@dataclass(frozen=True, slots=True)
class UserInput:
    text: str

    def to_block(self) -> Block:
        return Block(Layer.L3, "user", "user", self.text.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class AssistantMessage:
    text: str

    def to_block(self) -> Block:
        return Block(Layer.L3, "assistant", "assistant", self.text.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    raw: tuple[str, ...] = ()  # the tool's raw parameters: shown as ``` blocks after the JSON (layers.raw)

    def to_block(self) -> Block:
        return Block(Layer.L3, "tool_call", self.name, call_text(self.name, self.arguments, self.raw).encode("utf-8"))


@dataclass(frozen=True, slots=True)
class ToolResult:
    name: str
    output: str
    is_error: bool = False

    def to_block(self) -> Block:
        kind = "tool_error" if self.is_error else "tool_result"
        return Block(Layer.L3, kind, self.name, self.output.encode("utf-8"))

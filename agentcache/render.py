"""Rendering, the same bytes everywhere: blocks -> chat messages -> prefix-stable text segments (no torch).

Every backend, serve and inspect render through here. A chat template is used only when it is checked to be
prefix-stable (rendering messages[:k] is a byte-prefix of rendering messages[:k+1]); otherwise plain ChatML.
Each segment is tokenized on its own, so stable bytes give stable tokens. Tokenizers are passed in.

Two tool-call formats. "json": the reply is one JSON object (a call or `{"answer": ...}`), stated by
FORMAT_INSTRUCTIONS beside the tool schemas; it works with any model. "native": the format the model's own chat
template was trained on, when the template has one the renderer knows (Qwen's and Hermes' `<tool_call>` tags): the
tools block becomes the template's own tool text, a call is `<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>`
and an answer is plain text. Block texts (and so layer hashes) are the same in both: only rendering differs.
In both, a call's raw parameters (layers.raw: code) follow its JSON as ``` blocks, in history as in the reply.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from typing import Any

from agentcache.errors import AgentcacheError
from layers import Block, Layer, canonical_json
from layers.raw import call_text

ROLE_OF_KIND = {"user": "user", "assistant": "assistant", "tool_call": "assistant",
                "tool_result": "tool", "tool_error": "tool"}
PROBE = [{"role": "system", "content": "a"}, {"role": "system", "content": "b"},
         {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}, {"role": "tool", "content": "e"}]
RAW_EXAMPLE = '{"name": "<tool name>", "arguments": {"path": "hello.py"}}'
RAW_BLOCK = '```\nprint("hello")\n```\n'
RAW_INSTRUCTIONS = ("A parameter written as a ``` block is not in the JSON arguments: after the call, write it as a "
                    "block of lines, each such parameter its own block in the order listed. For example:\n")
FORMAT_INSTRUCTIONS = (
    "Reply with exactly one JSON object (and the ``` blocks its call takes) and nothing else.\n"
    'To call a tool: {"name": "<tool name>", "arguments": {<arguments matching the tool\'s parameters>}}\n'
    f"{RAW_INSTRUCTIONS}{RAW_EXAMPLE}\n{RAW_BLOCK}"
    'To give the final answer: {"answer": "<your answer>"}\n'
    "Call one tool at a time; its result comes back in the next message.\n"
)


TOOL_FORMATS = ("auto", "json", "native")
NATIVE_CALL_OPEN, NATIVE_CALL_CLOSE = "<tool_call>", "</tool_call>"
NATIVE_RAW_INSTRUCTIONS = (f"{RAW_INSTRUCTIONS.replace('after the call', f'after {NATIVE_CALL_CLOSE}')}"
                           f"{NATIVE_CALL_OPEN}\n{RAW_EXAMPLE}\n{NATIVE_CALL_CLOSE}\n{RAW_BLOCK.rstrip()}")
RETRY_HINT = {"json": "reply with one valid JSON object (and after it the ``` blocks its call takes)",
              "native": f"reply with one {NATIVE_CALL_OPEN} holding a JSON call (and after it the ``` blocks the call "
                        "takes), or a plain answer"}
SENTINEL = "\x00agentcache-system\x00"
SYSTEM_JOIN = "\n"
SYSTEM_TURN = "system-turn"  # the layout of a request whose leading system messages are one system turn


def format_instructions() -> str:
    """The output-format text for the system prompt: constant, whatever tools are enabled."""
    return FORMAT_INSTRUCTIONS


def tools_message(schemas: str, instructions: str = FORMAT_INSTRUCTIONS) -> dict[str, str]:
    """The system message that states the reply format and lists the tools' JSON Schemas."""
    return {"role": "system", "content": f"{instructions}\nTools (JSON Schema):\n{schemas}"}


def block_message(block: Block) -> dict[str, str]:
    """A deterministic message for a block; the tools block also carries the output format."""
    if block.layer == Layer.L3:
        return {"role": ROLE_OF_KIND.get(block.kind, "user"), "content": block.text}
    if block.kind == "tools":
        return tools_message(block.text)
    if block.layer == Layer.L2 and block.kind == "map":
        return {"role": "system", "content": f"Outline of {block.key} (line, definition, docstring):\n{block.text}"}
    if block.layer == Layer.L2 and block.kind != "tree":
        return {"role": "system", "content": f"File {block.key}:\n{block.text}"}
    if block.kind == "tree":
        return {"role": "system", "content": f"Repository files:\n{block.text}"}
    return {"role": "system", "content": block.text}


def reply_text(call_or_answer: Any, tool_format: str = "json") -> str:
    """The canonical text of a parsed reply, as it is appended to L3 (a native answer is its plain text); a call's
    raw parameters follow its JSON as blocks."""
    if hasattr(call_or_answer, "name"):
        return call_text(call_or_answer.name, call_or_answer.arguments, getattr(call_or_answer, "raw", ()))
    return call_or_answer.text if tool_format == "native" else canonical_json({"answer": call_or_answer.text})


def split_system(rendered: str, contents: list[str]) -> list[str]:
    """A rendered system message whose content is `contents` joined by SYSTEM_JOIN, cut where each content ends."""
    pieces, start = [], rendered.index(SYSTEM_JOIN.join(contents))
    for content in contents[:-1]:
        end = rendered.index(content, start) + len(content) + len(SYSTEM_JOIN)
        pieces.append(rendered[:end] if not pieces else rendered[start:end])
        start = end
    return pieces + [rendered[start:]] if pieces else [rendered]


def segment_ids(tokenizer: Any, segments: list[str]) -> list[list[int]]:
    """Token ids of each segment, tokenized on its own and without special tokens (as the engine does)."""
    return [tokenizer.encode(segment, add_special_tokens=False) for segment in segments]


def native_call_text(call_text: str) -> str:
    """A tool_call block's text as the native template writes a call (its `tojson` separators): the canonical JSON
    (the first line) in the tags, then the call's raw blocks (the rest) as they are."""
    call_json, newline, blocks = call_text.partition("\n")
    call = json.loads(call_json)
    body = json.dumps({"name": call["name"], "arguments": call["arguments"]}, ensure_ascii=False)
    return f"{NATIVE_CALL_OPEN}\n{body}\n{NATIVE_CALL_CLOSE}{newline}{blocks}"


class ChatRenderer:
    """Renders messages one segment each; falls back to plain ChatML if the template is not prefix-stable.

    `tool_format`: "auto" takes "native" when the template is stable and writes `<tool_call>` tags, else "json".
    Thread-safe: the reused renders of the last call are read and replaced under one lock.
    """

    def __init__(self, tokenizer: Any, tool_format: str = "auto") -> None:
        self.tokenizer = tokenizer
        self.template_stable = tokenizer is not None and tokenizer.chat_template is not None and self._stable()
        native = (self.template_stable and NATIVE_CALL_OPEN in tokenizer.chat_template
                  and self._template_tools() is not None)
        if tool_format == "native" and not native:
            raise AgentcacheError("this model's chat template has no native tool-call format; use tool_format: json")
        self.tool_format = tool_format if tool_format != "auto" else ("native" if native else "json")
        self._tools_texts: dict[str, str] = {}
        self._keys: list[tuple[str, str]] = []
        self._renders: list[str] = []
        self._lock = threading.Lock()

    def _render(self, messages: list[dict[str, str]], generation: bool = False) -> str:
        if not messages:
            return ""
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)

    def _stable(self) -> bool:
        try:
            renders = [self._render(PROBE[:k]) for k in range(len(PROBE) + 1)]
        except Exception:
            return False
        return all(b.startswith(a) for a, b in zip(renders, renders[1:])) and \
            self._render(PROBE, True).startswith(renders[-1])

    def segments(self, messages: list[dict[str, str]]) -> list[str]:
        if not self.template_stable:
            parts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
            return parts + ["<|im_start|>assistant\n"]
        out, previous = [], ""
        for current in self._prefix_renders(messages):
            out.append(current[len(previous):])
            previous = current
        out.append(self._render(messages, True)[len(previous):])
        return out

    def block_segments(self, blocks: Iterable[Block], layout: str | None = SYSTEM_TURN) -> list[str]:
        """The segments of a context's blocks, one per block plus the generation prompt. With SYSTEM_TURN the L1 and
        L2 blocks are one system message (the one system turn chat models are trained on), cut per block; with None
        each block is its own message (the layout of sessions written before the system turn)."""
        messages = [self.message(block) for block in blocks]
        return self.message_segments(messages) if layout == SYSTEM_TURN else self.segments(messages)

    def message_segments(self, messages: list[dict[str, str]]) -> list[str]:
        """Like `segments`, but the leading run of system messages is rendered as one system turn (contents joined
        by SYSTEM_JOIN) and cut where each message's content ends, so there is still one segment per message."""
        count = next((i for i, m in enumerate(messages) if m["role"] != "system"), len(messages))
        if count < 2 or not self.template_stable:
            return self.segments(messages)
        contents = [m["content"] for m in messages[:count]]
        segments = self.segments([{"role": "system", "content": SYSTEM_JOIN.join(contents)}, *messages[count:]])
        try:
            return split_system(segments[0], contents) + segments[1:]
        except ValueError:  # the template rewrote a content: keep one message per system message
            return self.segments(messages)

    def message(self, block: Block) -> dict[str, str]:
        """The chat message of a block in this renderer's tool format."""
        if self.tool_format == "json":
            return block_message(block)
        if block.kind == "tools":
            return {"role": "system", "content": self._native_tools(block.text)}
        if block.kind == "tool_call":
            return {"role": "assistant", "content": native_call_text(block.text)}
        return block_message(block)

    def _native_tools(self, schemas: str) -> str:
        """The template's own tool text for the tools block (rendered once per distinct block text)."""
        if schemas not in self._tools_texts:
            tools = [{"type": "function", "function": spec} for spec in json.loads(schemas)]
            self._tools_texts[schemas] = f"{self._template_tools(tools)}\n\n{NATIVE_RAW_INSTRUCTIONS}"
        return self._tools_texts[schemas]

    def _template_tools(self, tools: list[dict[str, Any]] | None = None) -> str | None:
        """What the template adds to the system turn when given `tools` (a probe tool when None), without the
        blank line it starts with; None when it does not add them to the system turn."""
        tools = tools if tools is not None else [{"type": "function", "function": {"name": "probe", "parameters": {}}}]
        system = [{"role": "system", "content": SENTINEL}]
        try:
            with_tools = self.tokenizer.apply_chat_template(system, tools=tools, tokenize=False)
            without = self._render(system)
        except Exception:
            return None
        if with_tools.count(SENTINEL) != 1 or without.count(SENTINEL) != 1:
            return None
        after, end = with_tools.split(SENTINEL)[1], without.split(SENTINEL)[1]
        if with_tools.split(SENTINEL)[0] != without.split(SENTINEL)[0] or not after.endswith(end) or after == end:
            return None
        return after[: len(after) - len(end)].lstrip("\n")

    def _prefix_renders(self, messages: list[dict[str, str]]) -> list[str]:
        """Renders of messages[:1], messages[:2], ...; the ones shared with the last call are reused."""
        keys = [(m["role"], m["content"]) for m in messages]
        with self._lock:
            return self._reuse_renders(messages, keys)

    def _reuse_renders(self, messages: list[dict[str, str]], keys: list[tuple[str, str]]) -> list[str]:
        same = 0
        while same < min(len(keys), len(self._keys)) and keys[same] == self._keys[same]:
            same += 1
        renders = self._renders[:same] + [self._render(messages[:k]) for k in range(same + 1, len(messages) + 1)]
        self._keys, self._renders = keys, renders
        return renders

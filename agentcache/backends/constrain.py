"""Constrained decoding of the local model's reply: one JSON object, a call to an enabled tool or an answer.

The model replies with exactly one JSON object and nothing else, in one of two shapes:

    {"name": "read_file", "arguments": {"path": "README.md"}}    a call to one enabled tool
    {"answer": "The tests pass."}                                a final answer (when allowed)

The grammar is a JSON Schema `anyOf` with one alternative per enabled tool (`name` a const, `arguments`
that tool's parameter schema) plus the answer alternative, compiled by llguidance with fixed separators
(`", "` and `": "`), keys in schema order and no free whitespace. Disabling a tool changes only this
grammar, never the tool list in the prompt. End of sequence is allowed only once the object is complete.
The prompt states this format (`agentcache.render.format_instructions`). In the "native" tool format (see
agentcache.render) the reply is instead `<tool_call>` (the template's special token), a newline, the same call
object, a newline and `</tool_call>`; or a plain-text answer, which may not start with `<` or white space.
Masks are numpy bools, no torch: the local backend turns them into the tensor the engine takes.

Every reply is parsed here, for every backend, under bounds (`reply_json`): at most MAX_REPLY_CHARS characters,
nesting at most MAX_DEPTH deep, integers within INT_BOUND, finite numbers only, no lone surrogate in a string. A
reply past a bound is a ToolCallError like any malformed reply: the agent tells the model and retries.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from llguidance import LLMatcher, LLTokenizer

from agentcache.errors import AgentcacheError
from agentcache.render import NATIVE_CALL_CLOSE, NATIVE_CALL_OPEN
from layers.tokens import DEFAULT_ENCODING
from layers.tools import ToolSpec

JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

AllowedIds = Callable[[list[int]], np.ndarray]  # generated ids so far -> one bool per token id: allowed next

_ll_tokenizers: dict[int, tuple[Any, LLTokenizer]] = {}
_ll_lock = threading.Lock()
_text_tokenizer: LLTokenizer | None = None


MAX_ANSWER_CHARS = 600
MAX_REPLY_CHARS = 1 << 20  # a longer reply is refused unread (a write_file of ~1 MB is still a reply)
MAX_DEPTH = 32  # arrays and objects nested deeper than this (a tool call needs 3 or 4)
INT_BOUND = 2 ** 31  # every integer in a reply: |n| < INT_BOUND
# Small models often write the call object bare or in a markdown fence instead of inside <tool_call> tags: the
# native grammar takes those as calls too (an answer cannot start with `{` or a backtick), and L3 keeps the tagged form.
FENCE_OPEN, FENCE_CLOSE = "```json\n", "\n```"
FENCE_OPEN_LARK, FENCE_CLOSE_LARK = "```json\\n", "\\n```"


class ToolCallError(AgentcacheError):
    """The model's reply is not a usable tool call or answer; the message goes back to it as a tool result."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Answer:
    text: str


def ll_tokenizer(tokenizer: Any) -> LLTokenizer:
    """The llguidance tokenizer for a fast HF tokenizer, built once per tokenizer object (or passed through)."""
    if isinstance(tokenizer, LLTokenizer):
        return tokenizer
    import llguidance.hf  # imports transformers: only for a local model's tokenizer

    with _ll_lock:
        cached = _ll_tokenizers.get(id(tokenizer))
        if cached is None:
            cached = (tokenizer, llguidance.hf.from_tokenizer(tokenizer))
            _ll_tokenizers[id(tokenizer)] = cached
        return cached[1]


def text_ll_tokenizer() -> LLTokenizer:
    """A model-independent llguidance tokenizer (tiktoken), for checking replies a remote model wrote."""
    global _text_tokenizer
    with _ll_lock:
        if _text_tokenizer is None:
            import tiktoken
            from llguidance.tiktoken import lltokenizer_from_encoding

            _text_tokenizer = lltokenizer_from_encoding(tiktoken.get_encoding(DEFAULT_ENCODING))
        return _text_tokenizer


def schema_matcher(tokenizer: Any, schema: dict[str, Any]) -> LLMatcher:
    """A matcher for one JSON object valid under `schema`; ToolCallError if it does not compile."""
    try:
        grammar = LLMatcher.grammar_from_json_schema(schema)
        matcher = LLMatcher(ll_tokenizer(tokenizer), grammar, log_level=0)
    except (ValueError, TypeError) as exc:
        raise ToolCallError(f"JSON schema does not compile to a grammar: {exc}") from None
    if matcher.is_error():
        raise ToolCallError(f"JSON schema does not compile to a grammar: {matcher.get_error()}")
    return matcher


def matcher_mask(matcher: LLMatcher, vocab_size: int) -> AllowedIds:
    """A per-request `allowed(generated_ids)` driven by `matcher`: the allowed next tokens as bools."""
    consumed = 0

    def allowed(generated_ids: list[int]) -> np.ndarray:
        nonlocal consumed
        if len(generated_ids) < consumed:
            matcher.rollback(consumed - len(generated_ids))
            consumed = len(generated_ids)
        if not matcher.consume_tokens(generated_ids[consumed:]):
            raise ToolCallError(f"generated tokens break the reply grammar: {matcher.get_error()}")
        consumed = len(generated_ids)
        return unpack_bitmask(matcher.compute_bitmask(), vocab_size)

    return allowed


def tool_schema(spec: ToolSpec) -> dict[str, Any]:
    properties = {"name": {"const": spec.name}, "arguments": spec.parameters}
    return {"type": "object", "properties": properties, "required": ["name", "arguments"],
            "additionalProperties": False}


def answer_schema() -> dict[str, Any]:
    return {"type": "object", "properties": {"answer": {"type": "string", "maxLength": MAX_ANSWER_CHARS}}, "required": ["answer"],
            "additionalProperties": False}


def reply_schema(tools: Iterable[ToolSpec], allow_answer: bool = True) -> dict[str, Any]:
    alternatives = [tool_schema(spec) for spec in tools] + ([answer_schema()] if allow_answer else [])
    if not alternatives:
        raise ToolCallError("no tool is enabled and answers are not allowed: the model could say nothing")
    return {"anyOf": alternatives, "x-guidance": JSON_OPTIONS}


def unpack_bitmask(bitmask: bytes, vocab_size: int) -> np.ndarray:
    """One bool per token id from llguidance's packed little-endian words (bit i of word w is token 32w + i)."""
    packed = np.frombuffer(bitmask, dtype=np.uint8)
    return np.unpackbits(packed, count=vocab_size, bitorder="little").view(np.bool_)


def native_grammar(tools: Iterable[ToolSpec], allow_answer: bool = True) -> str:
    """The Lark grammar of a native reply: a tagged call to one enabled tool, or (when allowed) a plain answer."""
    calls = [tool_schema(spec) for spec in tools]
    starts = (["call"] if calls else []) + (["answer"] if allow_answer else [])
    if not starts:
        raise ToolCallError("no tool is enabled and answers are not allowed: the model could say nothing")
    rules = [f"start: {' | '.join(starts)}"]
    if calls:
        schema = json.dumps({"anyOf": calls, "x-guidance": JSON_OPTIONS})
        rules.append(f'call: <tool_call> "\\n" %json {schema} "\\n" </tool_call> | bare | fenced')
        rules.append(f"bare: %json {schema}")
        rules.append(f'fenced: "{FENCE_OPEN_LARK}" %json {schema} "{FENCE_CLOSE_LARK}"')
    if allow_answer:
        rules.append(r"answer: /[^<\s{`][^<]*/")
    return "\n".join(rules) + "\n"


def grammar_matcher(tokenizer: Any, lark: str) -> LLMatcher:
    """A matcher for a Lark grammar; ToolCallError if it does not compile."""
    try:
        matcher = LLMatcher(ll_tokenizer(tokenizer), LLMatcher.grammar_from_lark(lark), log_level=0)
    except (ValueError, TypeError) as exc:
        raise ToolCallError(f"reply grammar does not compile: {exc}") from None
    if matcher.is_error():
        raise ToolCallError(f"reply grammar does not compile: {matcher.get_error()}")
    return matcher


class ToolCallGrammar:
    def __init__(self, tokenizer: Any, tools: Iterable[ToolSpec], allow_answer: bool = True,
                 tool_format: str = "json") -> None:
        self.tools = {spec.name: spec for spec in tools}
        self.allow_answer = allow_answer
        self.tool_format = tool_format
        self.ll_tokenizer = ll_tokenizer(tokenizer)
        if tool_format == "native":
            self._matcher = grammar_matcher(self.ll_tokenizer, native_grammar(self.tools.values(), allow_answer))
            # a tagged call's JSON is checked by a JSON-only matcher (the tags are special tokens, not text)
            self._calls = schema_matcher(self.ll_tokenizer, reply_schema(self.tools.values(), allow_answer=False)) \
                if self.tools else None
        else:
            self._matcher = schema_matcher(self.ll_tokenizer, reply_schema(self.tools.values(), allow_answer))
            self._calls = self._matcher

    def new_matcher(self) -> LLMatcher:
        return self._matcher.deep_copy()

    def new_mask(self, vocab_size: int) -> AllowedIds:
        """A fresh per-request `allowed(generated_ids)`: the allowed next tokens as bools (numpy)."""
        return matcher_mask(self.new_matcher(), vocab_size)

    def parse(self, text: str) -> ToolCall | Answer:
        """The reply as a ToolCall to an enabled tool with valid arguments, or an Answer; else ToolCallError."""
        if len(text) > MAX_REPLY_CHARS:
            raise ToolCallError(f"the reply is {len(text)} characters long, more than the {MAX_REPLY_CHARS} a "
                                "reply may have")
        if self.tool_format == "native":
            return self._parse_native(text)
        reply = self._load(text)
        if set(reply) == {"answer"} and isinstance(reply["answer"], str):
            if not self.allow_answer:
                raise ToolCallError("a plain answer is not allowed here: call one of the enabled tools")
            return Answer(reply["answer"])
        return self._call(reply)

    def _call(self, reply: dict[str, Any]) -> ToolCall:
        """A call object checked against the enabled tools and their parameters."""
        if set(reply) != {"name", "arguments"} or not isinstance(reply["arguments"], dict):
            raise ToolCallError('a reply must be {"name": ..., "arguments": {...}} or {"answer": "..."}')
        name, arguments = reply["name"], reply["arguments"]
        if name not in self.tools:
            raise ToolCallError(f"unknown or disabled tool {name!r} (enabled: {', '.join(sorted(self.tools))})")
        self._check_arguments(self.tools[name], arguments)
        return ToolCall(name, arguments)

    def _parse_native(self, text: str) -> ToolCall | Answer:
        stripped = text.strip()
        if stripped.startswith("{"):
            return self._call(self._load(stripped))
        if stripped.startswith(FENCE_OPEN.strip()):
            if not stripped.endswith(FENCE_CLOSE.strip()):
                raise ToolCallError(f"the {FENCE_OPEN.strip()} block is not closed (was it cut off?)")
            return self._call(self._load(stripped[len(FENCE_OPEN.strip()):-len(FENCE_CLOSE.strip())].strip()))
        if not stripped.startswith(NATIVE_CALL_OPEN):
            if not self.allow_answer:
                raise ToolCallError("a plain answer is not allowed here: call one of the enabled tools")
            if not stripped:
                raise ToolCallError("the reply is empty")
            return Answer(stripped)
        if not stripped.endswith(NATIVE_CALL_CLOSE):
            raise ToolCallError(f"the {NATIVE_CALL_OPEN} is not closed (was it cut off?)")
        return self._call(self._load(stripped[len(NATIVE_CALL_OPEN):-len(NATIVE_CALL_CLOSE)].strip()))

    def _load(self, text: str) -> dict[str, Any]:
        reply = reply_json(text)
        if not isinstance(reply, dict):
            raise ToolCallError("the reply must be a JSON object")
        return reply

    def _check_arguments(self, spec: ToolSpec, arguments: dict[str, Any]) -> None:
        """Match the canonical rendering of the call, keys in schema order, against the grammar itself."""
        order = list(spec.parameters.get("properties", {}))
        ranked = sorted(arguments, key=lambda k: order.index(k) if k in order else len(order))
        call = {"name": spec.name, "arguments": {key: arguments[key] for key in ranked}}
        canonical = json.dumps(call, ensure_ascii=False, separators=(", ", ": "))
        matcher = self._calls.deep_copy()  # greedy tokens: any tokens of these bytes do, in linear time
        if not matcher.consume_tokens(self.ll_tokenizer.greedy_tokenize(canonical)) or not matcher.is_accepting():
            raise ToolCallError(f"arguments of {spec.name} do not match its parameters: "
                                f"{json.dumps(spec.parameters, sort_keys=True)}")


def reply_json(text: str) -> Any:
    """`text` parsed as JSON within the reply bounds (module docstring); ToolCallError for anything else."""
    try:
        value = json.loads(text, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_no_constant)
    except _OutOfBounds as exc:
        raise ToolCallError(f"the reply holds {exc}") from None
    except RecursionError:
        raise ToolCallError(f"the reply nests arrays or objects more than {MAX_DEPTH} deep") from None
    except ValueError:
        raise ToolCallError("the reply is not one complete JSON object (was it cut off?)") from None
    problem = _out_of_bounds(value)
    if problem is not None:
        raise ToolCallError(f"the reply holds {problem}")
    return value


class _OutOfBounds(ValueError):
    """A number past the reply bounds, raised from inside json.loads."""


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > len(str(INT_BOUND)) or abs(int(digits)) >= INT_BOUND:
        shown = digits if len(digits) <= 24 else f"{digits[:12]}...({len(digits)} characters)"
        raise _OutOfBounds(f"the integer {shown}, outside the range a tool takes (|n| < 2**31)")
    return int(digits)


def _finite_float(digits: str) -> float:
    value = float(digits)
    if not math.isfinite(value):
        shown = digits if len(digits) <= 24 else f"{digits[:12]}...({len(digits)} characters)"
        raise _OutOfBounds(f"the number {shown}, too large to be finite")
    return value


def _no_constant(name: str) -> float:
    raise _OutOfBounds(f"{name}, which is not a JSON number")


def _out_of_bounds(value: Any) -> str | None:
    """What in a parsed reply breaks a bound json.loads cannot check: nesting past MAX_DEPTH, a lone surrogate
    (a `\\ud800` escape) in a string or key; None when nothing does."""
    pending = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (dict, list)):
            if depth >= MAX_DEPTH:
                return f"arrays or objects nested more than {MAX_DEPTH} deep"
            children = [*item, *item.values()] if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
        elif isinstance(item, str) and _has_surrogate(item):
            return "a lone surrogate (\\ud800-\\udfff escape) in a string, which is not text"
    return None


def valid_text(text: str) -> str:
    """`text` as valid Unicode: surrogate pairs joined, each lone surrogate (which a remote server's JSON can
    carry, and no UTF-8 can) replaced by U+FFFD."""
    if not _has_surrogate(text):
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False

"""Constrained decoding of the local model's reply: one JSON object, a call to an enabled tool or an answer.

The model replies with exactly one JSON object and nothing else, in one of two shapes:

    {"name": "read_file", "arguments": {"path": "README.md"}}    a call to one enabled tool
    {"answer": "The tests pass."}                                a final answer (when allowed)

A tool with raw parameters (layers.raw: write_file's `content`, edit_file's `old` and `new`) leaves them out of
the object, which is followed by one ``` block per raw parameter, in the order its spec lists them:

    {"name": "write_file", "arguments": {"path": "hello.py"}}
    ```
    print("hi")
    ```

The grammar is a Lark grammar: the JSON Schema `anyOf` of the tools without raw parameters (`name` a const,
`arguments` that tool's parameter schema) and the answer, as one `%json`; each raw tool's object as its own `%json`
followed by its blocks. llguidance compiles the JSON with fixed separators (`", "` and `": "`), keys in schema order
and no free whitespace. Disabling a tool changes only this grammar, never the tool list in the prompt. End of
sequence is allowed only once the reply is complete. The prompt states this format
(`agentcache.render.format_instructions`). In the "native" tool format (see agentcache.render) the reply is instead
`<tool_call>` (the template's special token), a newline, the same call object, a newline and `</tool_call>`, then
the call's blocks; or a plain-text answer, which may not start with `<`, a backtick or white space.
Masks are numpy bools, no torch: the local backend turns them into the tensor the engine takes.

Every reply is parsed here, for every backend, under bounds (`reply_json`): at most MAX_REPLY_CHARS characters,
nesting at most MAX_DEPTH deep, integers within INT_BOUND, finite numbers only, no lone surrogate in a string. A
reply past a bound is a ToolCallError like any malformed reply: the agent tells the model and retries. The parse
fills each raw parameter from its block; a raw parameter inside the JSON is refused with a message that says where
it goes.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from llguidance import LLMatcher, LLTokenizer

from agentcache.errors import AgentcacheError
from agentcache.render import NATIVE_CALL_CLOSE, NATIVE_CALL_OPEN
from layers.raw import BLOCK_REGEX, FENCE, read_blocks, where
from layers.tokens import DEFAULT_ENCODING
from layers.tools import ToolSpec

JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


_ll_tokenizers: dict[int, tuple[Any, LLTokenizer]] = {}
_ll_lock = threading.Lock()
_text_tokenizer: LLTokenizer | None = None


MAX_ANSWER_CHARS = 600
ANSWER_LINE_CHARS = 200  # an answer asked for on one line (GenSettings.answer_line) is at most this long
ANSWER_PREFIX = "Answer: "  # a native answer on one line starts with this
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
    arguments: dict[str, Any]  # every argument, the raw ones (filled from their blocks) included
    raw: tuple[str, ...] = ()  # the tool's raw parameters (layers.raw)


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


class GrammarMask:
    """A per-request `allowed(generated_ids)` driven by a matcher: the allowed next tokens as bools; and
    `forced(generated_ids)`: the tokens the grammar forces next (speculative decoding drafts them). Any ids may
    follow any others (speculative decoding asks after drafted tokens, then after the ones it kept): the matcher
    rolls back to what the two share and consumes the rest."""

    def __init__(self, matcher: LLMatcher, vocab_size: int) -> None:
        self.matcher, self.vocab_size = matcher, vocab_size
        self.consumed: list[int] = []

    def __call__(self, generated_ids: list[int]) -> np.ndarray:
        self._follow(generated_ids)
        return unpack_bitmask(self.matcher.compute_bitmask(), self.vocab_size)

    def forced(self, generated_ids: list[int]) -> list[int]:
        self._follow(generated_ids)
        return list(self.matcher.compute_ff_tokens())

    def _follow(self, generated_ids: list[int]) -> None:
        consumed, shared = self.consumed, 0
        for a, b in zip(consumed, generated_ids):
            if a != b:
                break
            shared += 1
        if shared < len(consumed):
            self.matcher.rollback(len(consumed) - shared)
            del consumed[shared:]
        if not self.matcher.consume_tokens(generated_ids[shared:]):
            raise ToolCallError(f"generated tokens break the reply grammar: {self.matcher.get_error()}")
        consumed.extend(generated_ids[shared:])


def matcher_mask(matcher: LLMatcher, vocab_size: int) -> GrammarMask:
    return GrammarMask(matcher, vocab_size)


def tool_schema(spec: ToolSpec) -> dict[str, Any]:
    """The schema of a call's JSON object: its raw parameters are not in it (their blocks follow it)."""
    properties = {"name": {"const": spec.name}, "arguments": spec.json_parameters()}
    return {"type": "object", "properties": properties, "required": ["name", "arguments"],
            "additionalProperties": False}


def answer_schema(line: bool = False) -> dict[str, Any]:
    """An answer object; `line`: its text one line of at most ANSWER_LINE_CHARS."""
    text = {"type": "string", "maxLength": ANSWER_LINE_CHARS, "pattern": "^[^\\n]+$"} if line else \
        {"type": "string", "maxLength": MAX_ANSWER_CHARS}
    return {"type": "object", "properties": {"answer": text}, "required": ["answer"], "additionalProperties": False}


def reply_schema(tools: Iterable[ToolSpec], allow_answer: bool = True, answer_line: bool = False) -> dict[str, Any]:
    alternatives = [tool_schema(spec) for spec in tools] + ([answer_schema(answer_line)] if allow_answer else [])
    if not alternatives:
        raise ToolCallError("no tool is enabled and answers are not allowed: the model could say nothing")
    return {"anyOf": alternatives, "x-guidance": JSON_OPTIONS}


def unpack_bitmask(bitmask: bytes, vocab_size: int) -> np.ndarray:
    """One bool per token id from llguidance's packed little-endian words (bit i of word w is token 32w + i)."""
    packed = np.frombuffer(bitmask, dtype=np.uint8)
    return np.unpackbits(packed, count=vocab_size, bitorder="little").view(np.bool_)


def json_schema_text(alternatives: list[dict[str, Any]]) -> str:
    return json.dumps({"anyOf": alternatives, "x-guidance": JSON_OPTIONS})


def blocks_rule(spec: ToolSpec) -> str:
    return "".join(" BLOCK" for _ in spec.raw)


def json_grammar(tools: Iterable[ToolSpec], allow_answer: bool = True, answer_line: bool = False) -> str:
    """The Lark grammar of a json-format reply: a call object, the raw tools' followed by their blocks, or an answer
    (`answer_line`: of one short line)."""
    tools = list(tools)
    plain = [tool_schema(spec) for spec in tools if not spec.raw] + \
        ([answer_schema(answer_line)] if allow_answer else [])
    raw = [spec for spec in tools if spec.raw]
    if not plain and not raw:
        raise ToolCallError("no tool is enabled and answers are not allowed: the model could say nothing")
    starts = (["plain"] if plain else []) + [f"raw_{spec.name}" for spec in raw]
    rules = [f"start: {' | '.join(starts)}"]
    if plain:
        rules.append(f"plain: %json {json_schema_text(plain)}")
    rules += [f"raw_{spec.name}: %json {json_schema_text([tool_schema(spec)])}{blocks_rule(spec)}" for spec in raw]
    if raw:
        rules.append(f"BLOCK: /{BLOCK_REGEX}/")
    return "\n".join(rules) + "\n"


def native_grammar(tools: Iterable[ToolSpec], allow_answer: bool = True, answer_line: bool = False) -> str:
    """The Lark grammar of a native reply: a tagged call to one enabled tool (then its blocks), or (when allowed) a
    plain answer (`answer_line`: ANSWER_PREFIX and one short line). The call object may also come bare or in a
    ```json fence."""
    tools = list(tools)
    plain = [tool_schema(spec) for spec in tools if not spec.raw]
    raw = [spec for spec in tools if spec.raw]
    heads = ([("call", plain, "")] if plain else []) + \
        [(f"call_{spec.name}", [tool_schema(spec)], blocks_rule(spec)) for spec in raw]
    starts = [name for name, _, _ in heads] + (["answer"] if allow_answer else [])
    if not starts:
        raise ToolCallError("no tool is enabled and answers are not allowed: the model could say nothing")
    rules = [f"start: {' | '.join(starts)}"]
    for name, calls, blocks in heads:
        schema = json_schema_text(calls)
        rules.append(f"{name}: {name}_head{blocks}")
        rules.append(f'{name}_head: <tool_call> "\\n" %json {schema} "\\n" </tool_call> | %json {schema} | '
                     f'"{FENCE_OPEN_LARK}" %json {schema} "{FENCE_CLOSE_LARK}"')
    if raw:
        rules.append(f"BLOCK: /{BLOCK_REGEX}/")
    if allow_answer and answer_line:
        rules.append(f'answer: "{ANSWER_PREFIX}" /[^<\\s][^<\\n]{{0,{ANSWER_LINE_CHARS - 1}}}/')
    elif allow_answer:
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
                 tool_format: str = "json", answer_line: bool = False) -> None:
        """`answer_line`: an answer is one short line (GenSettings.answer_line); parsing takes any answer."""
        self.tools = {spec.name: spec for spec in tools}
        self.allow_answer = allow_answer
        self.tool_format = tool_format
        self.ll_tokenizer = ll_tokenizer(tokenizer)
        if tool_format == "native":
            self._matcher = grammar_matcher(self.ll_tokenizer,
                                            native_grammar(self.tools.values(), allow_answer, answer_line))
            # a tagged call's JSON is checked by a JSON-only matcher (the tags are special tokens, not text)
            self._calls = schema_matcher(self.ll_tokenizer, reply_schema(self.tools.values(), allow_answer=False)) \
                if self.tools else None
        else:
            self._matcher = grammar_matcher(self.ll_tokenizer,
                                            json_grammar(self.tools.values(), allow_answer, answer_line))
            self._calls = schema_matcher(self.ll_tokenizer, reply_schema(self.tools.values(), allow_answer=False)) \
                if self.tools else None

    def new_matcher(self) -> LLMatcher:
        return self._matcher.deep_copy()

    def new_mask(self, vocab_size: int) -> GrammarMask:
        """A fresh per-request `allowed(generated_ids)`: the allowed next tokens as bools (numpy)."""
        return matcher_mask(self.new_matcher(), vocab_size)

    def parse(self, text: str) -> ToolCall | Answer:
        """The reply as a ToolCall to an enabled tool with valid arguments, or an Answer; else ToolCallError."""
        if len(text) > MAX_REPLY_CHARS:
            raise ToolCallError(f"the reply is {len(text)} characters long, more than the {MAX_REPLY_CHARS} a "
                                "reply may have")
        if self.tool_format == "native":
            return self._parse_native(text)
        reply, rest = self._load(text.strip())
        if set(reply) == {"answer"} and isinstance(reply["answer"], str):
            if not self.allow_answer:
                raise ToolCallError("a plain answer is not allowed here: call one of the enabled tools")
            self._blocks("answer", rest, ())
            return Answer(reply["answer"])
        return self._call(reply, rest)

    def _call(self, reply: dict[str, Any], rest: str) -> ToolCall:
        """A call object checked against the enabled tools and their parameters, its raw arguments read from the
        blocks in `rest` (the text after the object)."""
        if set(reply) != {"name", "arguments"} or not isinstance(reply["arguments"], dict):
            raise ToolCallError('a reply must be {"name": ..., "arguments": {...}} or {"answer": "..."}')
        name, arguments = reply["name"], reply["arguments"]
        if name not in self.tools:
            raise ToolCallError(f"unknown or disabled tool {name!r} (enabled: {', '.join(sorted(self.tools))})")
        spec = self.tools[name]
        inside = [key for key in spec.raw if key in arguments]
        if inside:
            raise ToolCallError(f"{name}: {' and '.join(inside)} must not be inside the JSON arguments; "
                                f"{where(spec.raw)}")
        values = self._blocks(name, rest, spec.raw)
        self._check_arguments(spec, arguments)
        return ToolCall(name, {**arguments, **dict(zip(spec.raw, values))}, spec.raw)

    def _blocks(self, what: str, rest: str, raw: tuple[str, ...]) -> list[str]:
        """The values of the blocks `rest` holds, one per raw parameter and nothing else."""
        try:
            return read_blocks(rest, raw)
        except ValueError as exc:
            raise ToolCallError(f"{what}: {exc}" + (f"; {where(raw)}" if raw else "")) from None

    def _parse_native(self, text: str) -> ToolCall | Answer:
        stripped = text.strip()
        if stripped.startswith("{"):
            return self._call(*self._load(stripped))
        if stripped.startswith(FENCE_OPEN.strip()):
            return self._wrapped(stripped, FENCE_OPEN.strip(), FENCE, f"the {FENCE_OPEN.strip()} block")
        if not stripped.startswith(NATIVE_CALL_OPEN):
            if not self.allow_answer:
                raise ToolCallError("a plain answer is not allowed here: call one of the enabled tools")
            if not stripped:
                raise ToolCallError("the reply is empty")
            return Answer(stripped)
        return self._wrapped(stripped, NATIVE_CALL_OPEN, NATIVE_CALL_CLOSE, f"the {NATIVE_CALL_OPEN}")

    def _wrapped(self, text: str, open_: str, close: str, shown_as: str) -> ToolCall:
        """A call object between `open_` and `close` (the tags, or a ```json fence), its blocks after `close`."""
        body = text[len(open_):].lstrip()
        if close not in body:
            raise ToolCallError(f"{shown_as} is not closed (was it cut off?)")
        reply, rest = self._load(body)
        if not rest.lstrip().startswith(close):
            raise ToolCallError(f"{shown_as} is not closed (was it cut off?)")
        return self._call(reply, rest.lstrip()[len(close):])

    def _load(self, text: str) -> tuple[dict[str, Any], str]:
        """The JSON object `text` starts with, and the text after it."""
        reply, end = reply_json_prefix(text)
        if not isinstance(reply, dict):
            raise ToolCallError("the reply must be a JSON object")
        return reply, text[end:]

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
    value, end = reply_json_prefix(text.lstrip())
    if text.lstrip()[end:].strip():
        raise ToolCallError("the reply is not one complete JSON object (was it cut off?)")
    return value


def reply_json_prefix(text: str) -> tuple[Any, int]:
    """The JSON value `text` starts with, within the reply bounds, and where it ends; ToolCallError if none."""
    decoder = json.JSONDecoder(parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_no_constant)
    try:
        value, end = decoder.raw_decode(text)
    except _OutOfBounds as exc:
        raise ToolCallError(f"the reply holds {exc}") from None
    except RecursionError:
        raise ToolCallError(f"the reply nests arrays or objects more than {MAX_DEPTH} deep") from None
    except ValueError:
        raise ToolCallError("the reply is not one complete JSON object (was it cut off?)") from None
    problem = _out_of_bounds(value)
    if problem is not None:
        raise ToolCallError(f"the reply holds {problem}")
    return value, end


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

"""What `agentcache serve` does per request, apart from HTTP: OpenAI chat bodies to engine requests and back."""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass
from typing import Any

from agentcache.backends.constrain import ToolCallError, ToolCallGrammar, matcher_mask, schema_matcher
from agentcache.backends.local import TensorMask, tensor_mask
from agentcache.errors import AgentcacheError
from agentcache.render import ChatRenderer, segment_ids, tools_message
from agentcache.serve.contexts import DEFAULT_TTL_S, MAX_TTL_S, ContextStore, StoredContext
from agentcache.serve.metrics import ServeMetrics
from agentcache.serve.segments import message_segments
from engine import Engine, Request, Result, SamplingParams
from engine.model import LoadedModel
from layers import ToolSpec, canonical_json

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
DEFAULT_MAX_TOKENS = 512
SCHEMA_CACHE = 32
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
TOOL_FORMAT = ('To call a tool, reply with exactly one JSON object and nothing else: '
               '{"name": "<tool name>", "arguments": {<arguments matching its parameters>}}')
TOOL_USAGE = 'each tool must be {"type": "function", "function": {"name": ..., "parameters": {<JSON Schema>}}}'
TOOL_CHOICE_USAGE = ("tool_choice must be 'none', 'auto', 'required' or "
                     '{"type": "function", "function": {"name": ...}}')
CALL_USAGE = 'each tool call needs {"type": "function", "function": {"name": ..., "arguments": "{...}"}}'
SEED_RANGE = (-(1 << 63), (1 << 63) - 1)  # a signed 64-bit integer, as vLLM takes it
GREEDY_BELOW = 1e-5  # a temperature under this decodes greedily (as in vLLM): dividing by less overflows
UNSUPPORTED = ("logprobs", "top_logprobs", "logit_bias", "presence_penalty", "frequency_penalty")
MAX_MESSAGES = 25_000  # messages in one request or context (HTTP 413): about what a 128k-token window can hold
MAX_TOOLS = 128  # tools in one request, as OpenAI allows
MAX_STOPS, MAX_STOP_CHARS = 8, 128  # stop strings, each checked against the text's tail after every token

CACHE_TTLS = ("5m", "1h")  # Anthropic's cache_control TTLs, read as retention classes (retention_of)


class BadRequest(AgentcacheError):
    """The request body is malformed or asks for something this server cannot do (HTTP 400)."""


class TooLarge(AgentcacheError):
    """The request holds more than a limit allows (HTTP 413)."""


class UnknownModel(AgentcacheError):
    """The request names a model this server does not serve (HTTP 404)."""


@dataclass(slots=True)
class Prepared:
    """A validated chat request, ready for the engine; `tool_grammar` parses a reply that may be a tool call."""

    request: Request
    context: StoredContext | None
    tool_grammar: ToolCallGrammar | None = None
    forced: bool = False  # tool_choice "required" or a named tool: the reply is decoded as a call
    stream: bool = False
    include_usage: bool = False  # streamed: a last chunk with the usage


@dataclass(slots=True)
class Reply:
    """The assistant message of a completion: text content, or one tool call (content null)."""

    content: str | None
    tool_calls: list[dict[str, Any]] | None
    finish_reason: str

    def message(self) -> dict[str, Any]:
        calls = {"tool_calls": self.tool_calls} if self.tool_calls else {}
        return {"role": "assistant", "content": self.content, **calls}


def call_text(name: str, arguments: Any) -> str:
    """A tool call as the one JSON object a tool-calling reply is, with the grammar's separators."""
    return json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False, separators=(", ", ": "))


def incoming_call_text(call: Any) -> str:
    """An assistant message's OpenAI tool call, rendered as the reply that made it."""
    function = call.get("function") if isinstance(call, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or call.get("type", "function") != "function":
        raise BadRequest(CALL_USAGE)
    arguments = function.get("arguments")
    if arguments is None or arguments == "":
        arguments = "{}"
    try:
        arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
    except (json.JSONDecodeError, RecursionError):
        raise BadRequest(f"the arguments of the call to '{name}' are not valid JSON") from None
    if not isinstance(arguments, dict):
        raise BadRequest(f"the arguments of the call to '{name}' must be a JSON object (as a string)")
    return call_text(name, arguments)


def content_text(content: Any, role: str) -> str:
    """A message's content as text: a string, or the concatenated text of its parts; other parts are refused."""
    if content is None and role == "assistant":
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest("content must be a string or a list of text parts")
    texts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str):
            raise BadRequest('each content part must be {"type": "text", "text": "..."}')
        if kind != "text":
            raise BadRequest(f"content parts of type '{kind}' are not supported: this server reads text parts only")
        if not isinstance(part.get("text"), str):
            raise BadRequest("the 'text' of a text part must be a string")
        texts.append(part["text"])
    return "".join(texts)


def chat_message(raw: Any) -> dict[str, str]:
    """One OpenAI message as the {role, content} text the chat template renders.

    An assistant's tool calls follow its content, one JSON object a line; a tool message is its content alone
    (its `tool_call_id` is random per call and would make equal conversations render differently).
    """
    role = raw.get("role") if isinstance(raw, dict) else None
    if not isinstance(role, str) or role not in ROLES:
        raise BadRequest(f"each message needs a role among {', '.join(ROLES)}")
    content = content_text(raw.get("content"), role)
    if role == "tool" and not isinstance(raw.get("tool_call_id", ""), str):
        raise BadRequest("tool_call_id must be a string")
    calls = raw.get("tool_calls") if role == "assistant" else None
    if calls is not None and not isinstance(calls, list):
        raise BadRequest("tool_calls must be a list")
    lines = ([content] if content else []) + [incoming_call_text(call) for call in calls or []]
    return {"role": ROLES[role], "content": "\n".join(lines)}


def retention_of(raw: list[Any], ahead: int, segments: int) -> list[str] | None:
    """Anthropic-style `cache_control` on messages as the pool's retention classes, one per segment: everything up to
    the last breakpoint with `ttl: "1h"` is pinned-soft, up to the last breakpoint of any TTL project, the rest (and
    the generation prompt) turn. `ahead`: the messages rendered before the request's own (tools, a context's), kept
    like its first message. None when no message has cache_control: the pool's plain LRU."""
    marks = [(i, message.get("cache_control")) for i, message in enumerate(raw)
             if isinstance(message, dict) and message.get("cache_control") is not None]
    if not marks:
        return None
    for i, mark in marks:
        if not isinstance(mark, dict) or mark.get("type") != "ephemeral" or mark.get("ttl", "5m") not in CACHE_TTLS:
            raise BadRequest(f'messages[{i}]: cache_control must be {{"type": "ephemeral"}} with an optional ttl of '
                             f"{' or '.join(repr(t) for t in CACHE_TTLS)}")
    long_until = max((i for i, mark in marks if mark.get("ttl") == "1h"), default=-1) + ahead
    until = max(i for i, _ in marks) + ahead
    classes = ["pinned-soft" if max(p, ahead) <= long_until else "project" if max(p, ahead) <= until else "turn"
               for p in range(ahead + len(raw))]
    if len(classes) > segments:  # the template merged messages: no segment per message to give a class to
        return None
    return classes + ["turn"] * (segments - len(classes))  # the generation prompt


def chat_messages(messages: Any, tools: Any) -> list[dict[str, str]]:
    """The messages to render, after a system message describing `tools` (checked by function_tools)."""
    if not isinstance(messages, list):
        raise BadRequest("'messages' must be a list")
    if len(messages) > MAX_MESSAGES:
        raise TooLarge(f"'messages' holds {len(messages)} messages; the limit is {MAX_MESSAGES}")
    head = [tools_message(canonical_json(tools), TOOL_FORMAT)] if tools else []
    rendered = []
    for i, message in enumerate(messages):
        try:
            rendered.append(chat_message(message))
        except BadRequest as exc:
            raise BadRequest(f"messages[{i}]: {exc}") from None
    return head + rendered


def function_tools(tools: Any) -> list[ToolSpec]:
    """The functions of OpenAI `tools`; a function without `parameters` takes none."""
    if tools is not None and not isinstance(tools, list):
        raise BadRequest("'tools' must be a list")
    if tools and len(tools) > MAX_TOOLS:
        raise BadRequest(f"'tools' holds {len(tools)} tools; the limit is {MAX_TOOLS}")
    specs: dict[str, ToolSpec] = {}
    for tool in tools or []:
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raise BadRequest(TOOL_USAGE)
        parameters = function.get("parameters", NO_PARAMETERS)
        if not isinstance(parameters, dict):
            raise BadRequest(f"the parameters of tool '{name}' must be a JSON Schema object")
        if name in specs:
            raise BadRequest(f"tool '{name}' is defined twice")
        description = function.get("description") or ""
        if not isinstance(description, str):
            raise BadRequest(f"the description of tool '{name}' must be a string")
        specs[name] = ToolSpec(name, description, parameters)
    return list(specs.values())


def callable_tools(specs: list[ToolSpec], choice: Any) -> tuple[list[ToolSpec], bool]:
    """The tools the reply may call under `tool_choice`, and whether it must call one of them."""
    if choice is None:
        choice = "auto" if specs else "none"
    if choice == "none":
        return [], False
    if not specs:
        raise BadRequest(f"tool_choice {json.dumps(choice)} needs 'tools'")
    if choice in ("auto", "required"):
        return specs, choice == "required"
    function = choice.get("function") if isinstance(choice, dict) and choice.get("type") == "function" else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise BadRequest(TOOL_CHOICE_USAGE)
    named = [spec for spec in specs if spec.name == name]
    if not named:
        raise BadRequest(f"tool_choice names '{name}', which is not among the tools "
                         f"({', '.join(spec.name for spec in specs)})")
    return named, True


def tool_call(grammar: ToolCallGrammar, text: str) -> dict[str, Any] | None:
    """The OpenAI tool call the text is, when it is one call of a callable tool with valid arguments."""
    try:
        call = grammar.parse(text)
    except ToolCallError:
        return None
    return {"id": f"call_{secrets.token_hex(12)}", "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False,
                                                                    separators=(", ", ": "))}}


def reply(prepared: Prepared, result: Result) -> Reply:
    """The assistant message for a result: a tool call when tools were callable and the text is one."""
    grammar = prepared.tool_grammar
    call = tool_call(grammar, result.text) if grammar is not None else None
    if call is None:
        return Reply(result.text, None, result.finish_reason)
    return Reply(None, [call], "tool_calls")


def response_schema(response_format: Any) -> dict[str, Any] | None:
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        wrapper = response_format.get("json_schema")
        schema = wrapper.get("schema") if isinstance(wrapper, dict) else None
        if not isinstance(schema, dict):
            raise BadRequest("response_format.json_schema.schema must be a JSON Schema object")
        return schema
    raise BadRequest("response_format.type must be 'text', 'json_object' or 'json_schema'")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def given(body: dict[str, Any], key: str, default: Any = None) -> Any:
    """A field's value; null means the default, as in OpenAI's API."""
    value = body.get(key)
    return default if value is None else value


def sampling_params(body: dict[str, Any]) -> SamplingParams:
    temperature, top_p, seed = given(body, "temperature", 1.0), given(body, "top_p", 1.0), body.get("seed")
    if not is_number(temperature) or not 0 <= temperature <= 2:
        raise BadRequest("temperature must be a number in [0, 2]")
    if not is_number(top_p) or not 0 < top_p <= 1:
        raise BadRequest("top_p must be a number in (0, 1]")
    if seed is not None and (not is_int(seed) or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]):
        raise BadRequest(f"seed must be an integer in [{SEED_RANGE[0]}, {SEED_RANGE[1]}]")
    return SamplingParams(0.0 if temperature < GREEDY_BELOW else float(temperature), float(top_p), seed)


def stop_strings(body: dict[str, Any]) -> list[str]:
    stop = given(body, "stop", [])
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise BadRequest("stop must be a string or a list of strings")
    if len(stops) > MAX_STOPS or any(len(s) > MAX_STOP_CHARS for s in stops):
        raise BadRequest(f"stop holds at most {MAX_STOPS} strings of at most {MAX_STOP_CHARS} characters each")
    return stops


def stream_flags(body: dict[str, Any]) -> tuple[bool, bool]:
    """(stream, include_usage) from `stream` and `stream_options`."""
    stream, options = given(body, "stream", False), body.get("stream_options")
    if not isinstance(stream, bool):
        raise BadRequest("stream must be true or false")
    if options is None:
        return stream, False
    if not stream:
        raise BadRequest("stream_options is only allowed with stream: true")
    include_usage = given(options, "include_usage", False) if isinstance(options, dict) else None
    if not isinstance(include_usage, bool):
        raise BadRequest('stream_options must be {"include_usage": true or false}')
    return stream, include_usage


def check_supported(body: dict[str, Any]) -> None:
    """Refuse the OpenAI fields this server cannot honour when they ask for something (unknown ones are ignored)."""
    if body.get("n") is not None and (not is_int(body["n"]) or body["n"] != 1):
        raise BadRequest("n must be 1: this server returns one choice")
    for key in UNSUPPORTED:
        if body.get(key) not in (None, False, 0, {}):
            raise BadRequest(f"'{key}' is not supported by this server")


def salt_of(body: dict[str, Any]) -> str | None:
    salt = body.get("cache_salt")
    if salt is not None and (not isinstance(salt, str) or not salt):
        raise BadRequest("cache_salt must be a non-empty string")
    return salt


def owner_salt_of(body: dict[str, Any]) -> str | None:
    """A new context's cache_salt: one the X-Cache-Salt header that names it on GET and DELETE can carry (HTTP
    strips a header's surrounding spaces and tabs and allows no control characters)."""
    salt = salt_of(body)
    if salt is not None and (salt != salt.strip(" \t") or any(c < " " or c == "\x7f" for c in salt)):
        raise BadRequest("a context's cache_salt cannot start or end with a space or tab or hold control characters "
                         "(the X-Cache-Salt header could not carry it)")
    return salt


def context_id_of(body: dict[str, Any]) -> str | None:
    context_id = body.get("context_id")
    if context_id is not None and (not isinstance(context_id, str) or not context_id):
        raise BadRequest("context_id must be a non-empty string")
    return context_id


def max_tokens_of(body: dict[str, Any]) -> int | None:
    """max_completion_tokens, else max_tokens (its older name), else None."""
    asked = [body.get(key) for key in ("max_completion_tokens", "max_tokens")]
    for key, value in zip(("max_completion_tokens", "max_tokens"), asked):
        if value is not None and (not is_int(value) or value < 1):
            raise BadRequest(f"{key} must be a positive integer")
    return next((value for value in asked if value is not None), None)


class ChatService:
    """The engine behind the HTTP routes: rendering, validation, contexts, metrics. Thread-safe."""

    def __init__(self, model: LoadedModel, engine: Engine | None = None, contexts: ContextStore | None = None,
                 replica: str | None = None, speculate: str = "off") -> None:
        """`replica`: this server's own URL, reported with each completion (None: not reported). `speculate`: the
        engine's speculative decoding for every request (engine.speculate.MODES)."""
        if model.tokenizer is None:
            raise AgentcacheError(f"model '{model.name}' has no tokenizer: it cannot serve chat messages")
        self.model, self.replica, self.speculate = model, replica, speculate
        self.engine = engine or Engine(model)
        self.contexts = contexts if contexts is not None else ContextStore()
        self.metrics = ServeMetrics()
        self._renderer = ChatRenderer(model.tokenizer)
        self._matchers_lock = threading.Lock()
        self._matchers: dict[str, Any] = {}

    @property
    def model_id(self) -> str:
        return self.model.name

    def check_model(self, name: Any) -> None:
        if not isinstance(name, str):
            raise BadRequest(f"model must be a string; this server serves '{self.model_id}'")
        if name != self.model_id:
            raise UnknownModel(f"model '{name}' not found; this server serves '{self.model_id}'")

    def segments(self, messages: list[dict[str, str]]) -> list[list[int]]:
        """Token ids per message (plus the generation prompt), each segment tokenized on its own."""
        texts = message_segments(self._renderer, messages)
        for text in texts:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate, e.g. from an escape inside a call's arguments
                raise BadRequest("the messages are not valid Unicode (a lone surrogate)") from None
        return segment_ids(self.model.tokenizer, texts)

    def prepare(self, body: dict[str, Any]) -> Prepared:
        """Validate every field before any engine work: a bad request costs no prefill."""
        self.check_model(body.get("model"))
        check_supported(body)
        stream, include_usage = stream_flags(body)
        sampling, stop, salt, asked = sampling_params(body), stop_strings(body), salt_of(body), max_tokens_of(body)
        context_id = context_id_of(body)
        tools = function_tools(body.get("tools"))
        specs, forced = callable_tools(tools, body.get("tool_choice"))
        schema = response_schema(body.get("response_format"))
        if forced and schema is not None:
            raise BadRequest("response_format cannot be combined with tool_choice 'required' or a named tool")
        messages = chat_messages(body.get("messages"), body.get("tools"))
        context = self.contexts.get(context_id, salt) if context_id else None  # only its owner's salt finds it
        messages = (context.messages if context else []) + messages
        if not messages:
            raise BadRequest("'messages' is empty and no context_id was given")
        grammar = self._tool_grammar(specs) if specs else None
        segments = self.segments(messages)
        max_tokens = self._max_tokens(asked, sum(map(len, segments)))
        mask = tensor_mask(grammar.new_mask(self.model.config.vocab_size)) if forced and grammar else self._mask(schema)
        retention = retention_of(body.get("messages"), len(messages) - len(body.get("messages")), len(segments))
        request = Request(segments, max_tokens=max_tokens, sampling=sampling, stop=stop,
                          salt=salt, logits_mask=mask, forced_tokens=mask.forced if mask else None,
                          retention=retention, speculate=self.speculate)
        return Prepared(request, context, grammar, forced, stream, include_usage)

    def _max_tokens(self, asked: int | None, prompt_tokens: int) -> int:
        window = self.model.max_len
        if asked is not None and asked > window:
            raise BadRequest(f"max_tokens {asked} exceeds the model window of {window} tokens")
        if prompt_tokens + 1 > window:
            raise BadRequest(f"the prompt has {prompt_tokens} tokens; the model window is {window}")
        return min(asked or DEFAULT_MAX_TOKENS, window - prompt_tokens)

    def _mask(self, schema: dict[str, Any] | None) -> TensorMask | None:
        if schema is None:
            return None
        matcher = self._compiled(canonical_json(schema), lambda: schema_matcher(self.model.tokenizer, schema))
        return tensor_mask(matcher_mask(matcher.deep_copy(), self.model.config.vocab_size))

    def _tool_grammar(self, specs: list[ToolSpec]) -> ToolCallGrammar:
        """The grammar of one call to one of `specs` ({"name", "arguments"}), which also parses replies."""
        key = canonical_json([[spec.name, spec.parameters] for spec in specs])
        return self._compiled(key, lambda: ToolCallGrammar(self.model.tokenizer, specs, allow_answer=False))

    def _compiled(self, key: str, build: Any) -> Any:
        """A compiled grammar by key, built on a miss; the oldest of SCHEMA_CACHE goes first."""
        with self._matchers_lock:
            found = self._matchers.get(key)
        if found is None:
            found = build()
            with self._matchers_lock:
                if len(self._matchers) >= SCHEMA_CACHE:
                    self._matchers.pop(next(iter(self._matchers)))
                self._matchers[key] = found
        return found

    def generate(self, prepared: Prepared, on_token: Any = None, cancel: threading.Event | None = None) -> Result:
        """The engine's result; setting `cancel` (the client went away) stops it and raises Cancelled."""
        result = self.engine.generate(prepared.request, on_token, cancel)
        saved = (prepared.context.tokens, prepared.context.bytes) if prepared.context else (0, 0)
        self.metrics.observe(result, *saved)
        return result

    def create_context(self, body: dict[str, Any], cancel: threading.Event | None = None) -> StoredContext:
        """Store the messages and prefill them, so their full pages are cached when a chat request uses them. The
        context belongs to the body's cache_salt: only a request with the same salt finds it. Setting `cancel`
        stops the prefill (Cancelled)."""
        ttl = given(body, "ttl_seconds", DEFAULT_TTL_S)
        if not is_number(ttl) or not 0 < ttl <= MAX_TTL_S:
            raise BadRequest(f"ttl_seconds must be a number in (0, {MAX_TTL_S}]")
        if body.get("model") is not None:
            self.check_model(body["model"])
        salt = owner_salt_of(body)
        function_tools(body.get("tools"))
        messages = chat_messages(body.get("messages"), body.get("tools"))
        if not messages:
            raise BadRequest("a context needs at least one message")
        segments = self.segments(messages)[:-1]  # without the generation prompt
        tokens = sum(map(len, segments))
        if tokens + 1 > self.model.max_len:
            raise BadRequest(f"the context has {tokens} tokens; the model window is {self.model.max_len}")
        self.engine.generate(Request(segments, max_tokens=1, salt=salt), None, cancel)
        size = len(json.dumps({"messages": body.get("messages"), "tools": body.get("tools")}).encode("utf-8"))
        self.metrics.context_created()
        return self.contexts.add(messages, tokens, size, float(ttl), salt)

    def usage(self, result: Result, context: StoredContext | None) -> dict[str, Any]:
        usage = result.usage
        out: dict[str, Any] = {
            "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
            # OpenAI's names for drafted tokens the model kept and rejected (its predicted outputs; here the engine's
            # own drafts: engine.speculate)
            "completion_tokens_details": {"accepted_prediction_tokens": usage.accepted_tokens,
                                          "rejected_prediction_tokens": usage.drafted_tokens - usage.accepted_tokens},
            "computed_tokens": usage.computed_tokens,
        }
        if context is not None:
            out.update(context_id=context.context_id, context_tokens=context.tokens, context_bytes=context.bytes)
        return out

    def metrics_text(self) -> str:
        return self.metrics.exposition(self.engine.stats(), len(self.contexts))

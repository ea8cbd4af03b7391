"""What `agentcache serve` does per request, apart from HTTP: OpenAI chat bodies to engine requests and back."""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass
from typing import Any

from agentcache.backends.local import ChatRenderer
from agentcache.constrain import ToolCallError, ToolCallGrammar, matcher_mask, schema_matcher
from agentcache.contexts import DEFAULT_TTL_S, MAX_TTL_S, ContextStore, StoredContext
from agentcache.errors import AgentcacheError
from agentcache.serve_metrics import ServeMetrics
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


class BadRequest(AgentcacheError):
    """The request body is malformed or asks for something this server cannot do (HTTP 400)."""


class UnknownModel(AgentcacheError):
    """The request names a model this server does not serve (HTTP 404)."""


@dataclass(slots=True)
class Prepared:
    """A validated chat request, ready for the engine; `tool_grammar` parses a reply that may be a tool call."""

    request: Request
    context: StoredContext | None
    tool_grammar: ToolCallGrammar | None = None
    forced: bool = False  # tool_choice "required" or a named tool: the reply is decoded as a call


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
    if not isinstance(name, str):
        raise BadRequest('each tool call needs {"type": "function", "function": {"name": ..., "arguments": "{...}"}}')
    arguments = function.get("arguments") or "{}"
    try:
        return call_text(name, json.loads(arguments) if isinstance(arguments, str) else arguments)
    except json.JSONDecodeError:
        raise BadRequest(f"the arguments of the call to '{name}' are not valid JSON") from None


def chat_message(raw: Any) -> dict[str, str]:
    """One OpenAI message as the {role, content} text the chat template renders.

    An assistant's tool calls follow its content, one JSON object a line; a tool message is its content alone
    (its `tool_call_id` is random per call and would make equal conversations render differently).
    """
    if not isinstance(raw, dict) or raw.get("role") not in ROLES:
        raise BadRequest(f"each message needs a role among {', '.join(ROLES)}")
    content = raw.get("content")
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if content is not None and not isinstance(content, str):
        raise BadRequest("message content must be a string or a list of text parts")
    if raw["role"] == "tool" and not isinstance(raw.get("tool_call_id", ""), str):
        raise BadRequest("tool_call_id must be a string")
    calls = raw.get("tool_calls") if raw["role"] == "assistant" else None
    if calls is not None and not isinstance(calls, list):
        raise BadRequest("tool_calls must be a list")
    lines = ([content] if content else []) + [incoming_call_text(call) for call in calls or []]
    return {"role": ROLES[raw["role"]], "content": "\n".join(lines)}


def chat_messages(messages: Any, tools: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list):
        raise BadRequest("'messages' must be a list")
    if tools is not None and not isinstance(tools, list):
        raise BadRequest("'tools' must be a list")
    head = [{"role": "system", "content": f"{TOOL_FORMAT}\nTools (JSON Schema):\n{canonical_json(tools)}"}] \
        if tools else []
    return head + [chat_message(m) for m in messages]


def function_tools(tools: Any) -> list[ToolSpec]:
    """The functions of OpenAI `tools`; a function without `parameters` takes none."""
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
        specs[name] = ToolSpec(name, str(function.get("description") or ""), parameters)
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
        schema = (response_format.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise BadRequest("response_format.json_schema.schema must be a JSON Schema object")
        return schema
    raise BadRequest("response_format.type must be 'text', 'json_object' or 'json_schema'")


def sampling_params(body: dict[str, Any]) -> SamplingParams:
    temperature, top_p, seed = body.get("temperature", 1.0), body.get("top_p", 1.0), body.get("seed")
    if not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        raise BadRequest("temperature must be a number in [0, 2]")
    if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise BadRequest("top_p must be a number in (0, 1]")
    if seed is not None and not isinstance(seed, int):
        raise BadRequest("seed must be an integer")
    return SamplingParams(float(temperature), float(top_p), seed)


def stop_strings(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop") or []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise BadRequest("stop must be a string or a list of strings")
    return stops


class ChatService:
    """The engine behind the HTTP routes: rendering, validation, contexts, metrics. Thread-safe."""

    def __init__(self, model: LoadedModel, engine: Engine | None = None, contexts: ContextStore | None = None) -> None:
        if model.tokenizer is None:
            raise AgentcacheError(f"model '{model.name}' has no tokenizer: it cannot serve chat messages")
        self.model = model
        self.engine = engine or Engine(model)
        self.contexts = contexts if contexts is not None else ContextStore()
        self.metrics = ServeMetrics()
        self._renderer = ChatRenderer(model.tokenizer)
        self._render_lock = threading.Lock()
        self._matchers: dict[str, Any] = {}

    @property
    def model_id(self) -> str:
        return self.model.name

    def check_model(self, name: Any) -> None:
        if name != self.model_id:
            raise UnknownModel(f"model '{name}' not found; this server serves '{self.model_id}'")

    def segments(self, messages: list[dict[str, str]]) -> list[list[int]]:
        """Token ids per message (plus the generation prompt), each segment tokenized on its own."""
        with self._render_lock:
            texts = self._renderer.segments(messages)
        return [self.model.tokenizer.encode(t, add_special_tokens=False) for t in texts]

    def prepare(self, body: dict[str, Any]) -> Prepared:
        self.check_model(body.get("model"))
        if body.get("n", 1) != 1:
            raise BadRequest("only n=1 is supported")
        context_id = body.get("context_id")
        if context_id is not None and not isinstance(context_id, str):
            raise BadRequest("context_id must be a string")
        context = self.contexts.get(context_id) if context_id else None
        messages = (context.messages if context else []) + chat_messages(body.get("messages"), body.get("tools"))
        if not messages:
            raise BadRequest("'messages' is empty and no context_id was given")
        specs, forced = callable_tools(function_tools(body.get("tools")), body.get("tool_choice"))
        schema = response_schema(body.get("response_format"))
        if forced and schema is not None:
            raise BadRequest("response_format cannot be combined with tool_choice 'required' or a named tool")
        grammar = self._tool_grammar(specs) if specs else None
        segments = self.segments(messages)
        max_tokens = self._max_tokens(body, sum(map(len, segments)))
        salt = body.get("cache_salt") or (context.salt if context else None)
        mask = grammar.new_mask(self.model.config.vocab_size) if forced and grammar else self._mask(schema)
        request = Request(segments, max_tokens=max_tokens, sampling=sampling_params(body), stop=stop_strings(body),
                          salt=salt, logits_mask=mask)
        return Prepared(request, context, grammar, forced)

    def _max_tokens(self, body: dict[str, Any], prompt_tokens: int) -> int:
        window = self.model.max_len
        asked = body.get("max_completion_tokens") or body.get("max_tokens")
        if asked is not None and (not isinstance(asked, int) or asked < 1):
            raise BadRequest("max_tokens must be a positive integer")
        if asked is not None and asked > window:
            raise BadRequest(f"max_tokens {asked} exceeds the model window of {window} tokens")
        if prompt_tokens + 1 > window:
            raise BadRequest(f"the prompt has {prompt_tokens} tokens; the model window is {window}")
        return min(asked or DEFAULT_MAX_TOKENS, window - prompt_tokens)

    def _mask(self, schema: dict[str, Any] | None) -> Any:
        if schema is None:
            return None
        matcher = self._compiled(canonical_json(schema), lambda: schema_matcher(self.model.tokenizer, schema))
        return matcher_mask(matcher.deep_copy(), self.model.config.vocab_size)

    def _tool_grammar(self, specs: list[ToolSpec]) -> ToolCallGrammar:
        """The grammar of one call to one of `specs` ({"name", "arguments"}), which also parses replies."""
        key = canonical_json([[spec.name, spec.parameters] for spec in specs])
        return self._compiled(key, lambda: ToolCallGrammar(self.model.tokenizer, specs, allow_answer=False))

    def _compiled(self, key: str, build: Any) -> Any:
        """A compiled grammar by key, built on a miss; the oldest of SCHEMA_CACHE goes first."""
        with self._render_lock:
            found = self._matchers.get(key)
        if found is None:
            found = build()
            with self._render_lock:
                if len(self._matchers) >= SCHEMA_CACHE:
                    self._matchers.pop(next(iter(self._matchers)))
                self._matchers[key] = found
        return found

    def generate(self, prepared: Prepared, on_token: Any = None) -> Result:
        result = self.engine.generate(prepared.request, on_token)
        saved = (prepared.context.tokens, prepared.context.bytes) if prepared.context else (0, 0)
        self.metrics.observe(result, *saved)
        return result

    def create_context(self, body: dict[str, Any]) -> StoredContext:
        """Store the messages and prefill them, so their full pages are cached when a chat request uses them."""
        ttl = body.get("ttl_seconds", DEFAULT_TTL_S)
        if not isinstance(ttl, (int, float)) or not 0 < ttl <= MAX_TTL_S:
            raise BadRequest(f"ttl_seconds must be a number in (0, {MAX_TTL_S}]")
        if body.get("model") is not None:
            self.check_model(body["model"])
        messages = chat_messages(body.get("messages"), body.get("tools"))
        if not messages:
            raise BadRequest("a context needs at least one message")
        segments = self.segments(messages)[:-1]  # without the generation prompt
        tokens = sum(map(len, segments))
        if tokens + 1 > self.model.max_len:
            raise BadRequest(f"the context has {tokens} tokens; the model window is {self.model.max_len}")
        salt = body.get("cache_salt")
        self.engine.generate(Request(segments, max_tokens=1, salt=salt))
        size = len(json.dumps({"messages": body.get("messages"), "tools": body.get("tools")}).encode("utf-8"))
        self.metrics.context_created()
        return self.contexts.add(messages, tokens, size, float(ttl), salt)

    def usage(self, result: Result, context: StoredContext | None) -> dict[str, Any]:
        usage = result.usage
        out: dict[str, Any] = {
            "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
            "computed_tokens": usage.computed_tokens,
        }
        if context is not None:
            out.update(context_id=context.context_id, context_tokens=context.tokens, context_bytes=context.bytes)
        return out

    def metrics_text(self) -> str:
        return self.metrics.exposition(self.engine.stats(), len(self.contexts))

"""The openai backend: any OpenAI-compatible server (vLLM, SGLang, `agentcache serve`) over HTTP.

Messages are rendered from the layers exactly as the local backend renders them (`render.block_message`),
the reply is constrained with `response_format` json_schema (the tool grammar's schema) unless an enabled tool
has raw parameters (a schema cannot hold their ``` blocks: the reply is then checked by the parse), cached tokens
are read from `usage.prompt_tokens_details.cached_tokens`. With `stream`, replies are streamed and the time to
the first token is the first content chunk's arrival (without it, a non-streaming server's first token is not
observable: the whole request stands in for it). When the server offers `/v1/contexts`, L1+L2 are
sent once as a context and each request carries the context id plus the L3 messages only. Every request, and
every context, carries the request's routing key (docs/fleet.md), so a router keeps them on one replica.
"""

from __future__ import annotations

import time
import urllib.parse
from types import SimpleNamespace
from typing import Any

import openai

from agentcache.backends import GenSettings, Reply
from agentcache.backends.constrain import reply_schema
from agentcache.backends.remote import RemoteError, ReplyChecker, ServerModel, call_with_retries
from agentcache.errors import AgentcacheError
from agentcache.render import block_message
from layers import Context, TiktokenCounter, ToolSpec

DEFAULT_WINDOW = 8192
ROUTING_HEADERS = ("X-Session-ID", "X-SMG-Routing-Key")  # vllm-router's and SGLang's router's affinity headers


class OpenAIBackend(ServerModel):
    name = "openai"
    tool_format = "json"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, use_contexts: bool = True,
                 timeout_s: float = 600.0, stream: bool = False) -> None:
        if not base_url:
            raise AgentcacheError("the openai backend needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        self.base_url, self.model = base_url, model
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "none", max_retries=0, timeout=timeout_s)
        self.use_contexts = use_contexts
        self.stream = stream
        self._contexts: dict[tuple[str | None, str], tuple[str, str, int]] = {}  # per (routing key, salt): (prefix id,
        # server context
        # id, its tokens); a router sends a key's requests to one replica, and a context lives on one
        self._checker = ReplyChecker()
        self._counter = TiktokenCounter()
        self._window: int | None = None

    def window(self) -> int:
        """The server's `max_model_len` for the model when it reports one (vLLM, agentcache serve)."""
        if self._window is None:
            card = next((m for m in self._call(self.client.models.list).data or [] if getattr(m, "id", None) == self.model),
                        None)
            self._window = int(getattr(card, "max_model_len", None) or DEFAULT_WINDOW)
        return self._window

    def prefix_expired(self) -> bool:
        return False  # a server's prefix cache evicts by need, not by time

    def count_tokens(self, context: Context) -> int:
        """An estimate (tiktoken over the message texts): the server's tokenizer is not at hand."""
        return sum(self._counter.count(block_message(b)["content"]) + 4 for b in context)

    def parse(self, text: str, tools: list[ToolSpec], enabled: set[str]) -> Any:
        return self._checker.parse(text, tools, enabled)

    def complete(self, context: Context, tools: list[ToolSpec], enabled: set[str], settings: GenSettings) -> Reply:
        chosen = [t for t in tools if t.name in enabled]
        body: dict[str, Any] = {
            "model": self.model, "max_tokens": settings.max_tokens, "temperature": settings.temperature,
            "top_p": settings.top_p,
        }
        if not any(t.raw for t in chosen):  # a JSON schema cannot hold the ``` blocks of raw parameters: then the
            # reply is free text, and the parse checks it against the format the prompt states
            schema = reply_schema(chosen, allow_answer=not settings.tool_required,
                                  answer_line=settings.answer_line)
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}
        if settings.seed is not None:
            body["seed"] = settings.seed
        if settings.salt:  # vLLM's and agentcache serve's: requests with different salts share no cached KV
            body["extra_body"] = {"cache_salt": settings.salt}
        key = settings.routing_key
        if key:  # the routing-key contract (docs/fleet.md): the same key as headers a router reads and as the
            # OpenAI field a hosted API reads
            body["prompt_cache_key"] = key
            body["extra_headers"] = routing_headers(key)
        if self.stream:
            body["stream"], body["stream_options"] = True, {"include_usage": True}
        started = time.perf_counter()
        response, context_tokens = self._chat(context, body, key, settings.salt or "")
        first_token_s = None
        if self.stream:
            try:
                response, first_token_s = gathered(response, started)
            except openai.OpenAIError as exc:
                raise AgentcacheError(f"the stream from {self.base_url} broke off ({exc})") from None
        reply = self._reply(response, context_tokens, time.perf_counter() - started, first_token_s)
        reply.routing_key = key
        return reply

    def _chat(self, context: Context, body: dict[str, Any], key: str | None, salt: str) -> tuple[Any, int]:
        """Send with the context id when the server has contexts; recreate an expired context once. A context the
        server still does not know right after creating it (a router sent the two to different replicas) turns
        contexts off: whole messages from then on."""
        messages = [block_message(b) for b in context]
        for attempt in range(3):
            server_context = self._server_context(context, key, salt) if self.use_contexts else None
            if server_context is None:
                return self._call(self.client.chat.completions.create, messages=messages, **body), 0
            context_id, tokens = server_context
            extra = {**body.get("extra_body", {}), "context_id": context_id}
            try:
                return self._call(self.client.chat.completions.create, messages=messages[len(context.prefix):],
                                  **{**body, "extra_body": extra}), tokens
            except RemoteError as exc:
                if exc.status != 404:
                    raise
                self._contexts.pop((key, salt), None)  # expired or evicted on the server: create it again
                if attempt == 1:  # created just now and still unknown: not where the chat request went
                    self.use_contexts = False
        raise AssertionError("unreachable")

    def _server_context(self, context: Context, key: str | None, salt: str) -> tuple[str, int] | None:
        """The server context of `context`'s L1+L2 for routing key `key` (created on the replica the key routes to,
        once per prefix, key and salt: a context belongs to the salt that created it, docs/serve.md)."""
        known = self._contexts.get((key, salt))
        if known is not None and known[0] == context.context_id:
            return known[1], known[2]
        prefix = [block_message(b) for b in context.prefix]
        try:
            body = {"model": self.model, "messages": prefix, **({"cache_salt": salt} if salt else {})}
            created = self._call(self.client.post, "/contexts", body=body, cast_to=object,
                                 options={"headers": routing_headers(key)})
        except RemoteError as exc:
            if exc.status not in (404, 405):
                raise
            self.use_contexts = False  # the server has no /v1/contexts
            return None
        if known is not None:
            self._forget(known[1], key, salt)
        self._contexts[(key, salt)] = (context.context_id, created["context_id"], int(created["tokens"]))
        return self._contexts[(key, salt)][1], self._contexts[(key, salt)][2]

    def _forget(self, context_id: str, key: str | None, salt: str) -> None:
        """Delete a context the session no longer uses (the prefix changed); gone already is fine."""
        headers = {**routing_headers(key), **({"X-Cache-Salt": salt} if salt else {})}
        try:
            self._call(self.client.delete, f"/contexts/{context_id}", cast_to=object, options={"headers": headers})
        except RemoteError as exc:
            if exc.status != 404:
                raise

    def _reply(self, response: Any, context_tokens: int, elapsed_s: float, first_token_s: float | None = None) -> Reply:
        usage = response.usage
        details = getattr(usage, "prompt_tokens_details", None)
        cached = int(getattr(details, "cached_tokens", None) or 0)
        counts = {"prompt_tokens": usage.prompt_tokens, "cached_tokens": cached,
                  "computed_tokens": usage.prompt_tokens - cached, "completion_tokens": usage.completion_tokens}
        timings, source = request_timings(response, elapsed_s, first_token_s)
        choice = response.choices[0]
        trace = {"context_tokens": context_tokens, "response_id": response.id, "timings_from": source}
        replica = (getattr(response, "model_extra", None) or {}).get("replica")
        return Reply(choice.message.content or "", choice.finish_reason or "stop", counts, timings, trace,
                     context_tokens, replica=replica if isinstance(replica, str) else None)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return call_with_retries(openai, self.base_url, fn, *args, **kwargs)


def routing_headers(key: str | None) -> dict[str, str]:
    """The routing key as headers; a key that is not printable ASCII (an HTTP header cannot carry it) is sent
    percent-encoded, the same key for every request of its session."""
    if not key:
        return {}
    if not (key.isascii() and key.isprintable()):
        key = urllib.parse.quote(key, safe="")
    return {header: key for header in ROUTING_HEADERS}


def gathered(chunks: Any, started: float) -> tuple[SimpleNamespace, float | None]:
    """A streamed completion as one response (id, the text, the finish reason, the usage chunk's usage, the last
    chunk's extra fields), and the seconds from `started` to its first content chunk (None when no chunk had
    text)."""
    text, finish, usage, response_id, extra, first = [], None, None, "", {}, None
    for chunk in chunks:
        response_id = chunk.id or response_id
        extra.update(getattr(chunk, "model_extra", None) or {})
        usage = chunk.usage or usage
        for choice in chunk.choices or []:
            if choice.delta is not None and choice.delta.content:
                if first is None:
                    first = time.perf_counter() - started
                text.append(choice.delta.content)
            finish = choice.finish_reason or finish
    if usage is None:
        raise AgentcacheError("the server's stream ended without a usage chunk (stream_options include_usage)")
    message = SimpleNamespace(content="".join(text))
    return SimpleNamespace(id=response_id, usage=usage, model_extra=extra,
                           choices=[SimpleNamespace(message=message, finish_reason=finish)]), first


def request_timings(response: Any, elapsed_s: float, first_token_s: float | None = None) -> \
        tuple[dict[str, float], str]:
    """Timings of one round trip, and where they come from. A streamed reply's first token is when its first
    content chunk arrived. A server that reports its own `timings` (agentcache serve) gives the first token's time,
    plus this round trip's time outside the server; otherwise the first token is not observable and the whole
    request stands in for it."""
    if first_token_s is not None:
        completion = int(getattr(response.usage, "completion_tokens", 0) or 0)
        tpot = (elapsed_s - first_token_s) / (completion - 1) if completion > 1 else 0.0
        return {"queue_s": 0.0, "ttft_s": first_token_s, "tpot_s": tpot, "total_s": elapsed_s}, "stream"
    server = (getattr(response, "model_extra", None) or {}).get("timings")
    if isinstance(server, dict) and all(isinstance(server.get(k), (int, float)) for k in ("ttft_s", "total_s")):
        outside = max(0.0, elapsed_s - server["total_s"])
        return {"queue_s": float(server.get("queue_s") or 0.0), "ttft_s": server["ttft_s"] + outside,
                "tpot_s": float(server.get("tpot_s") or 0.0), "total_s": elapsed_s}, "server"
    return {"queue_s": 0.0, "ttft_s": elapsed_s, "tpot_s": 0.0, "total_s": elapsed_s}, "request"

"""`agentcache serve`: an OpenAI-compatible HTTP API (FastAPI) over the engine, with explicit contexts."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from agentcache.backends.constrain import ToolCallError
from agentcache.errors import AgentcacheError
from agentcache.serve.chat import BadRequest, ChatService, Prepared, UnknownModel, reply
from agentcache.serve.contexts import ContextNotFound
from engine import Cancelled, EngineCapacityError, EngineError, Result

CLIENT_GONE = 499  # the client closed the connection before the answer (nginx's code): counted, sent to no one
STATUS_OF = {BadRequest: 400, ToolCallError: 400, UnknownModel: 404, ContextNotFound: 404,
             EngineCapacityError: 503, EngineError: 400, Cancelled: CLIENT_GONE}
TYPE_OF = {401: "authentication_error", 404: "not_found_error", 503: "server_overloaded"}
MAX_DEPTH = 64  # JSON nesting a body may have; deeper would exhaust the encoders' and parsers' recursion


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def error_type(status: int) -> str:
    return TYPE_OF.get(status, "invalid_request_error" if status < 500 else "server_error")


def error_response(service: ChatService, status: int, message: str, code: str | None = None) -> JSONResponse:
    """The OpenAI-style error body, its message on one line; every error the server sends is counted by status."""
    service.metrics.error(status)
    body = {"error": {"message": " ".join(message.split()), "type": error_type(status), "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


class KeyGuard:
    """Plain ASGI middleware: a request without the API key gets 401 before any route (streams pass through)."""

    def __init__(self, app: ASGIApp, service: ChatService, api_key: str) -> None:
        self.app, self.service, self.expected = app, service, f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sent = Headers(scope=scope).get("authorization", "").encode() if scope["type"] == "http" else None
        if sent is not None and not hmac.compare_digest(sent, self.expected):
            response = error_response(self.service, 401, "missing or wrong API key: send 'Authorization: Bearer "
                                      "<key>'", "invalid_api_key")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(service: ChatService, api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="agentcache", docs_url=None, redoc_url=None, openapi_url=None)
    if api_key is not None:
        app.add_middleware(KeyGuard, service=service, api_key=api_key)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(service, exc.status, exc.message, exc.code)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return error_response(service, exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(service, 400, "; ".join(str(e.get("msg", e)) for e in exc.errors()))

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:  # a bug: still counted and OpenAI-shaped
        return error_response(service, 500, f"internal error: {type(exc).__name__}")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(service.metrics_text(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": service.model_id, "object": "model", "created": 0, "owned_by": "agentcache",
                "max_model_len": service.model.max_len}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await json_body(request)
        prepared = await run_in_threadpool(guarded, service.prepare, body)
        if prepared.stream:
            return StreamingResponse(stream_chat(service, prepared), media_type="text/event-stream")
        cancel = threading.Event()
        watcher = asyncio.create_task(cancel_on_disconnect(request, cancel))
        try:
            result = await run_in_threadpool(guarded, service.generate, prepared, None, cancel)
        finally:
            watcher.cancel()
        return JSONResponse(completion(service, prepared, result))

    @app.post("/v1/contexts")
    async def create_context(request: Request) -> JSONResponse:
        body = await json_body(request)
        entry = await run_in_threadpool(guarded, service.create_context, body)
        return JSONResponse(entry.to_dict())

    @app.get("/v1/contexts/{context_id}")
    async def get_context(context_id: str) -> JSONResponse:
        return JSONResponse(guarded(service.contexts.get, context_id).to_dict())

    @app.delete("/v1/contexts/{context_id}")
    async def delete_context(context_id: str) -> JSONResponse:
        guarded(service.contexts.delete, context_id)
        return JSONResponse({"context_id": context_id, "object": "context.deleted", "deleted": True})

    return app


def status_of(exc: BaseException) -> int:
    return next((code for kind, code in STATUS_OF.items() if isinstance(exc, kind)), 500)


def guarded(fn: Any, *args: Any) -> Any:
    """Call fn; user errors become ApiError with their HTTP status."""
    try:
        return fn(*args)
    except tuple(STATUS_OF) as exc:
        raise ApiError(status_of(exc), str(exc)) from None


async def cancel_on_disconnect(request: Request, cancel: threading.Event) -> None:
    """Set `cancel` when the client goes away (after the body, the next ASGI message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    cancel.set()


async def json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ClientDisconnect:
        raise ApiError(CLIENT_GONE, "the client closed the connection before the body was complete") from None
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, nested too deep, an int of 5,000 digits
        raise ApiError(400, f"the body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    check_json(body)
    return body


def check_json(body: dict[str, Any]) -> None:
    """Refuse a body nested deeper than MAX_DEPTH or holding a lone surrogate (from an escape like "\\ud800"):
    neither can be rendered, tokenized or echoed in an answer."""
    stack: list[tuple[Any, str, int]] = [(body, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ApiError(400, f"the body nests deeper than {MAX_DEPTH} levels (at {path})")
        if isinstance(value, str) and not is_unicode(value):
            raise ApiError(400, f"{path or 'the body'} holds a lone surrogate (an escape like \\ud800): "
                                "send valid Unicode")
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, child in items:
            if isinstance(key, str) and not is_unicode(key):
                raise ApiError(400, f"a key in {path or 'the body'} holds a lone surrogate: send valid Unicode")
            stack.append((child, child_path(path, key), depth + 1))


def child_path(path: str, key: str | int) -> str:
    """messages[0].content; a key that is not a plain name is quoted and escaped: tools[0]["a b"]."""
    if isinstance(key, str) and key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def completion(service: ChatService, prepared: Prepared, result: Result) -> dict[str, Any]:
    """The chat.completion body; `timings` (seconds, as llama.cpp's server reports them) and `replica` (the URL this
    server listens on, so a client behind a router knows who answered) are extensions."""
    answer = reply(prepared, result)
    choice = {"index": 0, "message": answer.message(), "finish_reason": answer.finish_reason, "logprobs": None}
    return {"id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion", "created": int(time.time()),
            "model": service.model_id, "usage": service.usage(result, prepared.context),
            "timings": result.timings.to_dict(), "choices": [choice],
            **({"replica": service.replica} if service.replica else {})}


async def stream_chat(service: ChatService, prepared: Prepared) -> AsyncIterator[str]:
    """Server-sent events: a role chunk, one chunk per token, a finish chunk, the usage chunk, [DONE]. A client
    that goes away mid-stream cancels its generation, which frees its pages (counted as CLIENT_GONE)."""
    cancel = threading.Event()
    finished = False
    try:
        async for event in sse_events(service, prepared, generation_queue(service, prepared, cancel)):
            yield event
        finished = True
    finally:
        if not finished:
            cancel.set()
            service.metrics.error(CLIENT_GONE)


def generation_queue(service: ChatService, prepared: Prepared, cancel: threading.Event) -> asyncio.Queue:
    """Generate on a thread; its text pieces, then ("done", result) or ("error", exception), arrive in the queue."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def push(kind: str, value: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
        except RuntimeError:  # the loop closed: the server is shutting down
            pass

    def work() -> None:
        try:
            push("done", service.generate(prepared, lambda _token, text: text and push("text", text), cancel))
        except Exception as exc:  # reported to the client as an error event
            push("error", exc)

    threading.Thread(target=work, daemon=True).start()
    return queue


async def sse_events(service: ChatService, prepared: Prepared, queue: asyncio.Queue) -> AsyncIterator[str]:
    """The events of one streamed completion. While the reply may still be a tool call (tools callable and,
    unless one is forced, the text so far starts with "{"), its text is held back; a call is sent as one
    tool_calls chunk at the end, other text as content."""
    head = {"id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": service.model_id}
    held, holding = "", prepared.tool_grammar is not None
    role = {"role": "assistant"} if holding else {"role": "assistant", "content": ""}  # a call has content null
    yield sse({**head, "choices": [{"index": 0, "delta": role, "finish_reason": None}]})
    while True:
        kind, value = await queue.get()
        if kind == "text":
            if holding:
                held += value
                if prepared.forced or not held.strip() or held.lstrip().startswith("{"):
                    continue
                value, held, holding = held, "", False
            yield sse({**head, "choices": [{"index": 0, "delta": {"content": value}, "finish_reason": None}]})
        elif kind == "error":
            service.metrics.error(status_of(value))
            yield sse({"error": {"message": " ".join(str(value).split()), "type": error_type(status_of(value))}})
            break
        else:
            answer = reply(prepared, value)
            if answer.tool_calls:
                calls = [{"index": i, **call} for i, call in enumerate(answer.tool_calls)]
                yield sse({**head, "choices": [{"index": 0, "delta": {"tool_calls": calls}, "finish_reason": None}]})
            elif held:
                yield sse({**head, "choices": [{"index": 0, "delta": {"content": held}, "finish_reason": None}]})
            finish = {"index": 0, "delta": {}, "finish_reason": answer.finish_reason}
            yield sse({**head, "choices": [finish], "timings": value.timings.to_dict()})
            if prepared.include_usage:
                yield sse({**head, "choices": [], "usage": service.usage(value, prepared.context)})
            break
    yield "data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def check_listen(host: str, port: int) -> None:
    """Fail with one clear line, before the model loads, when the address cannot be bound."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else str(exc)
        raise AgentcacheError(f"cannot listen on {host}:{port}: {reason}") from None


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1 (an IPv4-mapped loopback address too); a name is not resolved."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def check_auth(host: str, api_key: str | None, insecure_no_auth: bool, log: Any) -> None:
    """Refuse to serve beyond loopback without an API key unless explicitly allowed (then warn)."""
    if api_key or is_loopback(host):
        return
    if not insecure_no_auth:
        raise AgentcacheError(f"refusing to serve on {host} without an API key (anyone who can reach it could use "
                              "it): pass --api-key KEY, or --insecure-no-auth to serve without one")
    log(f"warning: serving on {host} without an API key (--insecure-no-auth): anyone who can reach it can use it")


def serve(host: str, port: int, model: str, api_key: str | None, log: Any = print,
          insecure_no_auth: bool = False, dtype: str = "auto", quant: str = "auto") -> None:
    """Load the model, then serve until interrupted."""
    import uvicorn

    from agentcache.config import RunConfig
    from agentcache.wiring import local_engine

    check_auth(host, api_key, insecure_no_auth, log)
    check_listen(host, port)
    # serve keeps no disk tier
    service = ChatService(*local_engine(RunConfig(model=model, dtype=dtype, quant=quant, disk_cache=False)),
                          replica=f"http://{host}:{port}")
    log(f"serving {service.model_id} on http://{host}:{port}/v1" + (" (API key required)" if api_key else ""))
    uvicorn.run(create_app(service, api_key), host=host, port=port, log_level="warning")

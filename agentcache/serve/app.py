"""`agentcache serve`: an OpenAI-compatible HTTP API (FastAPI) over the engine, with explicit contexts."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import h11
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from agentcache.backends.constrain import ToolCallError
from agentcache.errors import AgentcacheError
from agentcache.serve.chat import BadRequest, ChatService, Prepared, TooLarge, UnknownModel, reply
from agentcache.serve.contexts import ContextNotFound
from engine import Cancelled, EngineCapacityError, EngineError, Result

CLIENT_GONE = 499  # the client closed the connection before the answer (nginx's code): counted, sent to no one
STATUS_OF = {BadRequest: 400, ToolCallError: 400, TooLarge: 413, UnknownModel: 404, ContextNotFound: 404,
             EngineCapacityError: 503, EngineError: 400, Cancelled: CLIENT_GONE}
TYPE_OF = {401: "authentication_error", 404: "not_found_error", 503: "server_overloaded"}
MAX_DEPTH = 64  # JSON nesting a body may have; deeper would exhaust the encoders' and parsers' recursion
MAX_BODY_BYTES = 4 << 20  # a request body (HTTP 413): a 128k-token conversation is well under 1 MiB of JSON
IDLE_TIMEOUT_S = 10  # a client whose unfinished request sends nothing for this long is dropped
REQUEST_TIMEOUT_S = 30  # ... and one whose headers and body are not all in this long after its first byte
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this
SHUTDOWN_GRACE_S = 3  # on SIGTERM, requests still running after this are cancelled and the process exits
DRAIN_S = 1  # ... once the cancelled ones have sent their 503 (or this long)
SALT_HEADER = "x-cache-salt"  # GET and DELETE /v1/contexts/{id}: the owner's cache_salt (they have no body)


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers


def error_type(status: int) -> str:
    return TYPE_OF.get(status, "invalid_request_error" if status < 500 else "server_error")


def error_response(service: ChatService, status: int, message: str, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """The OpenAI-style error body, its message on one line; every error the server sends is counted by status."""
    service.metrics.error(status)
    body = {"error": {"message": " ".join(message.split()), "type": error_type(status), "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


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


class Inflight:
    """How many HTTP requests are being answered; shutdown waits for the cancelled ones to send their last words."""

    def __init__(self) -> None:
        self.count = 0

    async def drained(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.count and time.monotonic() < deadline:
            await asyncio.sleep(0.02)


class ShutdownGuard:
    """Plain ASGI middleware: a request still running SHUTDOWN_GRACE_S after SIGTERM is cancelled by uvicorn; it
    gets a 503 (a stream, an error event that ends it) instead of uvicorn's 500 and a logged traceback."""

    def __init__(self, app: ASGIApp, service: ChatService, inflight: Inflight) -> None:
        self.app, self.service, self.inflight = app, service, inflight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started: dict[str, Any] = {}

        async def tracked(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started.update(message)
            await send(message)

        self.inflight.count += 1
        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            message = "the server is shutting down; send the request again when it is back"
            if not started:
                await error_response(self.service, 503, message)(scope, receive, send)
                return
            self.service.metrics.error(503)
            stream = any(name.lower() == b"content-type" and value.startswith(b"text/event-stream")
                         for name, value in started.get("headers", []))
            end = sse({"error": {"message": message, "type": error_type(503)}}).encode() if stream else b""
            await send({"type": "http.response.body", "body": end, "more_body": False})
        finally:
            self.inflight.count -= 1


def create_app(service: ChatService, api_key: str | None = None) -> FastAPI:
    inflight = Inflight()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await inflight.drained(DRAIN_S)  # uvicorn shuts the app down after cancelling what still runs

    app = FastAPI(title="agentcache", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    if api_key is not None:
        app.add_middleware(KeyGuard, service=service, api_key=api_key)
    app.add_middleware(ShutdownGuard, service=service, inflight=inflight)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(service, exc.status, exc.message, exc.code, exc.headers)

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
        result = await cancellable(request, service.generate, prepared, None)
        return JSONResponse(completion(service, prepared, result))

    @app.post("/v1/contexts")
    async def create_context(request: Request) -> JSONResponse:
        body = await json_body(request)
        entry = await cancellable(request, service.create_context, body)
        return JSONResponse(entry.to_dict())

    @app.get("/v1/contexts/{context_id}")
    async def get_context(context_id: str, request: Request) -> JSONResponse:
        return JSONResponse(guarded(service.contexts.get, context_id, header_salt(request)).to_dict())

    @app.delete("/v1/contexts/{context_id}")
    async def delete_context(context_id: str, request: Request) -> JSONResponse:
        guarded(service.contexts.delete, context_id, header_salt(request))
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


async def cancellable(request: Request, fn: Any, *args: Any) -> Any:
    """fn(*args, cancel) on a worker thread; `cancel` is set when the client goes away or the request is cancelled
    (the server shutting down), which stops the engine at its next turn."""
    cancel = threading.Event()
    watcher = asyncio.create_task(cancel_on_disconnect(request, cancel))
    try:
        return await run_in_threadpool(guarded, fn, *args, cancel)
    finally:
        watcher.cancel()
        cancel.set()  # a finished call ignores it


def header_salt(request: Request) -> str | None:
    """The cache_salt a GET or DELETE of a context sends in the X-Cache-Salt header (UTF-8); absent means unsalted."""
    raw = request.headers.get(SALT_HEADER)
    if raw is None:
        return None
    try:
        salt = raw.encode("latin-1").decode("utf-8")  # the bytes as sent (Starlette decodes headers as Latin-1)
    except UnicodeDecodeError:
        raise ApiError(400, "the X-Cache-Salt header is not UTF-8") from None
    if not salt:
        raise ApiError(400, "the X-Cache-Salt header must be a non-empty string")
    return salt


async def cancel_on_disconnect(request: Request, cancel: threading.Event) -> None:
    """Set `cancel` when the client goes away (after the body, the next ASGI message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    cancel.set()


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object. A body over MAX_BODY_BYTES gets 413 from its Content-Length before any of it is
    read (sent chunked, once what arrived passes the limit); NaN, Infinity and floats beyond a double's range are
    not JSON numbers (a 400, as is anything else that is not JSON)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and (len(declared) > 18 or int(declared) > MAX_BODY_BYTES):
        raise body_too_large(f"{declared} bytes")
    raw = bytearray()
    try:
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                raise body_too_large(f"over {MAX_BODY_BYTES} bytes")
        body = json.loads(raw, parse_constant=not_a_number, parse_float=finite_float)
    except ClientDisconnect:
        raise ApiError(CLIENT_GONE, "the client closed the connection before the body was complete") from None
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, nested too deep, an int of 5,000 digits
        raise ApiError(400, f"the body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    check_json(body)
    return body


def body_too_large(size: str) -> ApiError:
    """A 413 that closes the connection: the rest of the body is not read."""
    return ApiError(413, f"the body has {size}; the limit is {MAX_BODY_BYTES} bytes", "request_too_large",
                    {"Connection": "close"})


def not_a_number(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number (numbers must be finite)")


def finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is beyond a 64-bit float's range")
    return value


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


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with deadlines while it waits for a request: a client that sends nothing for
    IDLE_TIMEOUT_S, or has not sent a whole request (headers and body) REQUEST_TIMEOUT_S after its first byte, is
    dropped (uvicorn itself only times out idle keep-alive connections). A request whose body is in is not timed."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.read_begun: float | None = None
        self.read_deadline: asyncio.TimerHandle | None = None
        self.watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.watch()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.read_deadline is not None:
            self.read_deadline.cancel()
        super().connection_lost(exc)

    def watch(self) -> None:
        """(Re)arm the deadline while a request is still arriving; disarm it once the request is in."""
        if self.read_deadline is not None:
            self.read_deadline.cancel()
            self.read_deadline = None
        if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY) or self.transport.is_closing():
            self.read_begun = None
            return
        now = self.loop.time()
        self.read_begun = now if self.read_begun is None else self.read_begun
        until = min(now + IDLE_TIMEOUT_S, self.read_begun + REQUEST_TIMEOUT_S)
        self.read_deadline = self.loop.call_at(until, self.drop)

    def drop(self) -> None:
        self.read_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


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
          insecure_no_auth: bool = False, dtype: str = "auto", quant: str = "auto", speculate: str = "auto") -> None:
    """Load the model, then serve until interrupted."""
    import uvicorn

    from agentcache.config import RunConfig, check_config
    from agentcache.wiring import local_engine

    check_auth(host, api_key, insecure_no_auth, log)
    check_listen(host, port)
    # serve keeps no disk tier
    service = ChatService(*local_engine(check_config(RunConfig(model=model, dtype=dtype, quant=quant, disk_cache=False,
                                                               speculate=speculate))),
                          replica=f"http://{host}:{port}", speculate=speculate)
    log(f"serving {service.model_id} on http://{host}:{port}/v1" + (" (API key required)" if api_key else ""))
    uvicorn.run(create_app(service, api_key), host=host, port=port, log_level="warning", http=DeadlineH11Protocol,
                timeout_keep_alive=KEEP_ALIVE_S, timeout_graceful_shutdown=SHUTDOWN_GRACE_S)

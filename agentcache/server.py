"""`agentcache serve`: an OpenAI-compatible HTTP API (FastAPI) over the engine, with explicit contexts."""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from agentcache.contexts import ContextNotFound
from agentcache.constrain import ToolCallError
from agentcache.errors import AgentcacheError
from agentcache.serving import BadRequest, ChatService, Prepared, UnknownModel, reply
from engine import EngineCapacityError, EngineError, Result

STATUS_OF = {BadRequest: 400, ToolCallError: 400, UnknownModel: 404, ContextNotFound: 404,
             EngineCapacityError: 503, EngineError: 400}
TYPE_OF = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
           503: "server_overloaded"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def error_response(service: ChatService, status: int, message: str, code: str | None = None) -> JSONResponse:
    service.metrics.error(status)
    body = {"error": {"message": message, "type": TYPE_OF.get(status, "server_error"), "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


def create_app(service: ChatService, api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="agentcache", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        sent = request.headers.get("authorization", "").encode()
        if api_key is not None and not hmac.compare_digest(sent, f"Bearer {api_key}".encode()):
            return error_response(service, 401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                  "invalid_api_key")
        return await call_next(request)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(service, exc.status, exc.message, exc.code)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return error_response(service, exc.status_code, str(exc.detail))

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
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(stream_chat(service, prepared, include_usage), media_type="text/event-stream")
        result = await run_in_threadpool(guarded, service.generate, prepared)
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


def guarded(fn: Any, *args: Any) -> Any:
    """Call fn; user errors become ApiError with their HTTP status."""
    try:
        return fn(*args)
    except tuple(STATUS_OF) as exc:
        status = next(code for kind, code in STATUS_OF.items() if isinstance(exc, kind))
        raise ApiError(status, " ".join(str(exc).split())) from None


async def json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def completion(service: ChatService, prepared: Prepared, result: Result) -> dict[str, Any]:
    """The chat.completion body; `timings` (seconds, as llama.cpp's server reports them) is an extension."""
    answer = reply(prepared, result)
    choice = {"index": 0, "message": answer.message(), "finish_reason": answer.finish_reason, "logprobs": None}
    return {"id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion", "created": int(time.time()),
            "model": service.model_id, "usage": service.usage(result, prepared.context),
            "timings": result.timings.to_dict(), "choices": [choice]}


async def stream_chat(service: ChatService, prepared: Prepared, include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events: a role chunk, one chunk per token, a finish chunk, the usage chunk, [DONE].

    While the reply may still be a tool call (tools callable and, unless one is forced, the text so far starts
    with "{"), its text is held back; a call is sent as one tool_calls chunk at the end, other text as content.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def push(kind: str, value: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

    def work() -> None:
        try:
            push("done", service.generate(prepared, lambda _token, text: text and push("text", text)))
        except Exception as exc:  # reported to the client as an error event
            push("error", exc)

    threading.Thread(target=work, daemon=True).start()
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
            service.metrics.error(500)
            yield sse({"error": {"message": " ".join(str(value).split()), "type": "server_error"}})
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
            if include_usage:
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


def serve(host: str, port: int, model: str, api_key: str | None, log: Any = print) -> None:
    """Load the model, then serve until interrupted."""
    import uvicorn

    from engine import load_model

    check_listen(host, port)
    service = ChatService(load_model(model))
    log(f"serving {service.model_id} on http://{host}:{port}/v1" + (" (API key required)" if api_key else ""))
    uvicorn.run(create_app(service, api_key), host=host, port=port, log_level="warning")

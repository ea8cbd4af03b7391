"""`agentcache serve` against the issue's hostile inputs, over real HTTP on loopback (random-weight model with the
real tokenizer): each is one OpenAI-style 400 counted in the error metric, a dropped client stops its generation
and frees its pages, and a bind beyond loopback needs an API key."""

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentcache.cache_dir import models_dir
from agentcache.errors import AgentcacheError
from agentcache.serve.app import create_app, serve
from agentcache.serve.chat import ChatService
from engine import Engine, load_model
from tests.agentcache.http_helpers import free_port, http, uvicorn_running

MODEL = "random-tiny-chat"
HI = [{"role": "user", "content": "hi"}]
ROOT = Path(__file__).resolve().parents[2]


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def service():
    model = load_model(MODEL, cache_dir=models_dir())
    return ChatService(model, Engine(model, capacity_bytes=64 << 20))


@pytest.fixture(scope="module")
def url(service):
    with uvicorn_running(create_app(service)) as base:
        yield base


@pytest.fixture()
def server_log():
    """What uvicorn logs while a test runs (its loggers do not propagate to the root logger)."""
    handler, logger = Records(), logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)


def errors(url: str) -> dict[str, int]:
    text = http("GET", url + "/metrics")[1]
    return {m[1]: int(m[2]) for m in re.finditer(r'^agentcache_request_errors_total\{status="(\d+)"\} (\d+)$', text,
                                                 re.M)}


def chat(url: str, raw: bytes) -> tuple[int, dict]:
    return http("POST", url + "/v1/chat/completions", raw=raw)


def body(**fields) -> bytes:
    """A chat request as JSON text; json.dumps writes a lone surrogate as the escape a client would send."""
    return json.dumps({"model": MODEL, "messages": HI, "max_tokens": 2, **fields}).encode()


def assert_one_400(url: str, raw: bytes, message: str, path: str = "/v1/chat/completions") -> None:
    before = errors(url).get("400", 0)
    status, answer = http("POST", url + path, raw=raw)
    assert status == 400, answer
    assert answer["error"]["type"] == "invalid_request_error" and message in answer["error"]["message"], answer
    assert "\n" not in answer["error"]["message"]
    assert errors(url).get("400", 0) == before + 1


def test_a_seed_beyond_64_bits_is_a_400_before_any_engine_work(service, url):
    before = service.engine.stats()
    assert_one_400(url, body(seed=2**80, temperature=1), "seed must be an integer in [-9223372036854775808, "
                                                         "9223372036854775807]")
    after = service.engine.stats()
    assert after["prefix_queries"] == before["prefix_queries"] and after["requests"] == before["requests"]
    assert chat(url, body(seed=2**63 - 1, temperature=1))[0] == chat(url, body(seed=-2**63, temperature=1))[0] == 200


def test_a_lone_surrogate_is_a_400_wherever_it_is(url):
    assert_one_400(url, body(messages=[{"role": "user", "content": "x \ud800 y"}]),
                   "messages[0].content holds a lone surrogate")
    assert_one_400(url, body(stop=["ok", "\udfff"]), "stop[1] holds a lone surrogate")
    assert_one_400(url, json.dumps({"model": MODEL, "messages": HI, "\ud800": 1}).encode(),
                   "a key in the body holds a lone surrogate")
    escaped = json.dumps({"city": "\ud800"})  # a surrogate escape inside a call's JSON arguments string
    call = {"type": "function", "function": {"name": "f", "arguments": escaped}}
    assert_one_400(url, body(messages=HI + [{"role": "assistant", "tool_calls": [call]}]),
                   "the messages are not valid Unicode")


def test_max_completion_tokens_0_is_an_error_not_unset(url):
    assert_one_400(url, body(max_completion_tokens=0), "max_completion_tokens must be a positive integer")


def test_max_tokens_true_is_an_error_not_1(url):
    assert_one_400(url, body(max_tokens=True), "max_tokens must be a positive integer")


@pytest.mark.parametrize("salt", [5, "", None])
def test_cache_salt_must_be_a_non_empty_string(service, url, salt):
    if salt is None:  # absent and null mean unsalted
        assert chat(url, body(cache_salt=None))[0] == 200
        return
    assert_one_400(url, body(cache_salt=salt), "cache_salt must be a non-empty string")
    assert_one_400(url, json.dumps({"messages": HI, "cache_salt": salt}).encode(),
                   "cache_salt must be a non-empty string", "/v1/contexts")


@pytest.mark.parametrize("part", [
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    {"type": "file", "file": {"file_id": "f"}},
    {"type": "video_url", "video_url": {"url": "x"}},
])
def test_a_content_part_it_cannot_honour_is_refused_by_its_type(url, part):
    content = [{"type": "text", "text": "what is this?"}, part]
    assert_one_400(url, body(messages=[{"role": "user", "content": content}]),
                   f"messages[0]: content parts of type '{part['type']}' are not supported")


CHAT_CASES = [
    ({"model": 5}, "model must be a string"),
    ({"stream": "yes"}, "stream must be true or false"),
    ({"stream": 1}, "stream must be true or false"),
    ({"stream_options": {"include_usage": True}}, "stream_options is only allowed with stream: true"),
    ({"stream": True, "stream_options": {"include_usage": "yes"}}, "stream_options must be"),
    ({"stream": True, "stream_options": []}, "stream_options must be"),
    ({"n": 2}, "n must be 1"),
    ({"n": True}, "n must be 1"),
    ({"temperature": True}, "temperature must be a number in [0, 2]"),
    ({"temperature": 2.5}, "temperature must be a number in [0, 2]"),
    ({"top_p": 0}, "top_p must be a number in (0, 1]"),
    ({"top_p": [1]}, "top_p must be a number in (0, 1]"),
    ({"seed": 1.5}, "seed must be an integer"),
    ({"seed": False}, "seed must be an integer"),
    ({"stop": 5}, "stop must be a string or a list of strings"),
    ({"stop": ["a", None]}, "stop must be a string or a list of strings"),
    ({"max_tokens": 1.5}, "max_tokens must be a positive integer"),
    ({"max_tokens": "8"}, "max_tokens must be a positive integer"),
    ({"max_completion_tokens": 4, "max_tokens": -1}, "max_tokens must be a positive integer"),
    ({"tools": {"type": "function"}}, "'tools' must be a list"),
    ({"tools": [1]}, 'each tool must be {"type": "function"'),
    ({"tools": [{"type": "function", "function": {"name": "f", "description": 5}}]},
     "the description of tool 'f' must be a string"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
     "the parameters of tool 'f' must be a JSON Schema object"),
    ({"tool_choice": 5, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tool_choice must be"),
    ({"tool_choice": ["auto"], "tools": [{"type": "function", "function": {"name": "f"}}]}, "tool_choice must be"),
    ({"response_format": "json"}, "response_format.type must be"),
    ({"response_format": {"type": "json_schema", "json_schema": []}}, "response_format.json_schema.schema must be"),
    ({"context_id": 5}, "context_id must be a non-empty string"),
    ({"context_id": ""}, "context_id must be a non-empty string"),
    ({"messages": "hi"}, "'messages' must be a list"),
    ({"messages": [{"role": ["user"], "content": "hi"}]}, "messages[0]: each message needs a role among"),
    ({"messages": [{"content": "hi"}]}, "messages[0]: each message needs a role among"),
    ({"messages": ["hi"]}, "messages[0]: each message needs a role among"),
    ({"messages": HI + [{"role": "user", "content": 5}]}, "messages[1]: content must be a string or a list"),
    ({"messages": [{"role": "user"}]}, "messages[0]: content must be a string or a list of text parts"),
    ({"messages": [{"role": "user", "content": [{"text": "no type"}]}]}, 'each content part must be {"type": "text"'),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "the 'text' of a text part"),
    ({"messages": [{"role": "tool", "tool_call_id": 5, "content": "x"}]}, "tool_call_id must be a string"),
    ({"messages": [{"role": "assistant", "tool_calls": {"id": 1}}]}, "tool_calls must be a list"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f",
                                                                                          "arguments": 5}}]}]},
     "the arguments of the call to 'f' must be a JSON object"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f",
                                                                                          "arguments": "[1]"}}]}]},
     "the arguments of the call to 'f' must be a JSON object"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"type": "web", "function": {"name": "f"}}]}]},
     "each tool call needs"),
    ({"logprobs": True}, "'logprobs' is not supported"),
    ({"top_logprobs": 3}, "'top_logprobs' is not supported"),
    ({"logit_bias": {"50": 10}}, "'logit_bias' is not supported"),
    ({"presence_penalty": 0.5}, "'presence_penalty' is not supported"),
]


@pytest.mark.parametrize(("fields", "message"), CHAT_CASES, ids=[m[:40] for _, m in CHAT_CASES])
def test_every_chat_field_is_checked_with_one_clear_message(url, fields, message):
    assert_one_400(url, body(**fields), message)


CONTEXT_CASES = [
    ({"ttl_seconds": True}, "ttl_seconds must be a number"),
    ({"ttl_seconds": 0}, "ttl_seconds must be a number"),
    ({"ttl_seconds": "60"}, "ttl_seconds must be a number"),
    ({"model": 5}, "model must be a string"),
    ({"tools": [1, 2]}, 'each tool must be {"type": "function"'),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "content parts of type 'image_url' are not supported"),
    ({"messages": []}, "a context needs at least one message"),
]


@pytest.mark.parametrize(("fields", "message"), CONTEXT_CASES, ids=[m[:40] for _, m in CONTEXT_CASES])
def test_every_context_field_is_checked_with_one_clear_message(url, fields, message):
    assert_one_400(url, json.dumps({"messages": HI, **fields}).encode(), message, "/v1/contexts")


@pytest.mark.parametrize(("raw", "message"), [
    (b'{"model": ', "the body is not valid JSON"),
    (b"\xff\xfe", "the body is not valid JSON"),
    (b"[" * 100_000, "the body is not valid JSON"),
    (b'{"seed": ' + b"9" * 5000 + b"}", "the body is not valid JSON"),
    (b'["a list"]', "the body must be a JSON object"),
    (b'{"messages": ' + b"[" * 70 + b"]" * 70 + b"}", "the body nests deeper than 64 levels"),
])
def test_bodies_that_are_not_usable_json_get_a_400(url, raw, message):
    assert_one_400(url, raw, message)


def test_unknown_routes_and_methods_are_openai_shaped_and_counted(url):
    before = errors(url)
    for method, path, status in [("GET", "/nope", 404), ("DELETE", "/health", 405),
                                 ("GET", "/v1/chat/completions", 405), ("PUT", "/v1/contexts/x", 405)]:
        got, answer = http(method, url + path)
        assert got == status and set(answer["error"]) == {"message", "type", "param", "code"}
        assert answer["error"]["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    after = errors(url)
    assert after["404"] - before.get("404", 0) == 1 and after["405"] - before.get("405", 0) == 3


def test_fastapis_validation_errors_and_a_bugs_500_are_openai_shaped_and_counted(service):
    """No route of the server takes typed parameters or should raise; one added later answers the same way."""
    app = create_app(service)

    @app.get("/typed")
    async def typed(n: int) -> dict:
        return {"n": n}

    @app.get("/buggy")
    async def buggy() -> dict:
        raise RuntimeError("a bug")

    with uvicorn_running(app) as base:
        before = errors(base)
        status, answer = http("GET", base + "/typed?n=many")
        assert status == 400 and "valid integer" in answer["error"]["message"], answer
        status, answer = http("GET", base + "/buggy")
        assert status == 500 and answer["error"] == {"message": "internal error: RuntimeError", "type": "server_error",
                                                     "param": None, "code": None}
        after = errors(base)
        assert after["400"] == before.get("400", 0) + 1 and after["500"] == before.get("500", 0) + 1


def send_head(url: str, length: int, start: bytes) -> socket.socket:
    port = int(url.rsplit(":", 1)[1])
    conn = socket.create_connection(("127.0.0.1", port))
    conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % length + start)
    return conn


def wait_for(check, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_client_closing_mid_body_logs_no_traceback(url, server_log):
    before = errors(url).get("499", 0)
    conn = send_head(url, 1000, b'{"model": "random-tiny-chat", "mess')
    time.sleep(0.2)
    conn.close()
    wait_for(lambda: errors(url).get("499", 0) == before + 1)
    assert not [r for r in server_log if r.exc_info or "Exception" in r.getMessage()]
    assert http("GET", url + "/health") == (200, {"status": "ok"})


LONG_REQUEST = {"model": MODEL, "messages": HI, "max_tokens": 1500, "temperature": 0}


def assert_stopped_and_freed(service, url, rows_before: int) -> None:
    """The dropped request's generation ends soon and no page stays referenced; the server still answers."""
    wait_for(lambda: service.engine.stats()["pages_used"] == 0)
    rows = service.engine.stats()["decode_rows"] - rows_before
    time.sleep(0.5)
    assert service.engine.stats()["decode_rows"] - rows_before == rows < 200  # stopped, far below 1,500
    assert all(page.ref_count == 0 for page in service.engine.scheduler.kv.blocks.pages)
    assert not service.engine.scheduler.running and not service.engine.scheduler.waiting
    status, answer = chat(url, body())
    assert status == 200 and answer["usage"]["completion_tokens"] >= 1


def test_a_dropped_stream_stops_its_generation_and_frees_its_pages(service, url, server_log):
    raw = json.dumps({**LONG_REQUEST, "stream": True}).encode()
    rows_before, gone_before = service.engine.stats()["decode_rows"], errors(url).get("499", 0)
    conn = send_head(url, len(raw), raw)
    received = b""
    while received.count(b"data: ") < 4:  # the role chunk and three tokens
        received += conn.recv(4096)
    conn.close()
    assert_stopped_and_freed(service, url, rows_before)
    assert errors(url).get("499", 0) == gone_before + 1
    assert not [r for r in server_log if r.exc_info]


def test_a_non_streaming_request_whose_client_left_stops(service, url, server_log):
    raw = json.dumps(LONG_REQUEST).encode()
    rows_before, gone_before = service.engine.stats()["decode_rows"], errors(url).get("499", 0)
    conn = send_head(url, len(raw), raw)
    wait_for(lambda: service.engine.stats()["decode_rows"] - rows_before >= 3)
    conn.close()
    assert_stopped_and_freed(service, url, rows_before)
    assert errors(url).get("499", 0) == gone_before + 1
    assert not [r for r in server_log if r.exc_info]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "example.com", ""])
def test_serve_beyond_loopback_without_a_key_is_refused_before_the_model_loads(host):
    lines = []
    with pytest.raises(AgentcacheError) as refused:
        serve(host, free_port(), "no-such-model", None, log=lines.append)  # loading it would fail differently
    assert str(refused.value) == (f"refusing to serve on {host} without an API key (anyone who can reach it could "
                                  "use it): pass --api-key KEY, or --insecure-no-auth to serve without one")
    assert lines == []


@pytest.mark.parametrize(("host", "api_key"), [("127.0.0.1", None), ("127.3.2.1", None), ("localhost", None),
                                               ("::1", None), ("::ffff:127.0.0.1", None), ("0.0.0.0", "k")])
def test_serve_on_loopback_or_with_a_key_passes_the_check(host, api_key):
    """The next check (the port is taken) answers instead: the bind was not refused for want of a key."""
    lines = []
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as busy:
        try:
            busy.bind((host, 0))
            busy.listen()
        except OSError:
            pytest.skip(f"{host} cannot be bound here")
        port = busy.getsockname()[1]
        with pytest.raises(AgentcacheError, match=r"^cannot listen on "):
            serve(host, port, "no-such-model", api_key, log=lines.append)
    assert lines == []


def test_serve_with_insecure_no_auth_warns_in_one_line_and_serves():
    port = free_port()
    code = ("import sys; from agentcache.serve.app import serve; "
            f"serve('0.0.0.0', {port}, {MODEL!r}, None, log=lambda line: print(line, flush=True), "
            "insecure_no_auth=True)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        lines = [proc.stdout.readline().strip(), proc.stdout.readline().strip()]
        assert lines == ["warning: serving on 0.0.0.0 without an API key (--insecure-no-auth): anyone who can reach "
                         "it can use it", f"serving {MODEL} on http://0.0.0.0:{port}/v1"]
        wait_for(lambda: healthy(port))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def healthy(port: int) -> bool:
    try:
        return http("GET", f"http://127.0.0.1:{port}/health")[0] == 200
    except OSError:
        return False

"""`agentcache serve` over real HTTP on loopback (random-weight model with the real tokenizer): the OpenAI SDK,
streaming, errors, metrics, concurrency and explicit contexts."""

import json
import re
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from agentcache.backends.local import ChatRenderer
from agentcache.contexts import ContextStore
from agentcache.server import create_app
from agentcache.serving import ChatService
from engine import load_model
from tests.agentcache.http_helpers import http, uvicorn_running

MODEL = "random-tiny-chat"
PAGE = 16
LONG = "The quick brown fox jumps over the lazy dog. " * 30


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def service():
    return ChatService(load_model(MODEL), contexts=ContextStore(limit=4, clock=Clock()))


@pytest.fixture(scope="module")
def url(service):
    with uvicorn_running(create_app(service)) as base:
        yield base


@pytest.fixture()
def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def prompt_ids(tokenizer, messages):
    """The prompt as the server must build it: each rendered message tokenized on its own."""
    segments = ChatRenderer(tokenizer).segments(messages)
    return [t for s in segments for t in tokenizer.encode(s, add_special_tokens=False)]


def metrics(url):
    status, text = http("GET", url + "/metrics")
    assert status == 200
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(agentcache_\w+(?:\{[^}]*\})?) (\S+)$", text, re.M)}


def ask(client, messages, **kw):
    return client.chat.completions.create(model=MODEL, messages=messages, **{"temperature": 0, "max_tokens": 4, **kw})


def test_second_request_caches_exactly_the_full_pages_of_the_common_prefix(service, client):
    first = [{"role": "system", "content": LONG + "one"}, {"role": "user", "content": "Say hi."}]
    second = [{"role": "system", "content": LONG + "two"}, {"role": "user", "content": "Say hi."}]
    a = ask(client, first, max_tokens=1)
    assert a.choices[0].message.role == "assistant" and a.choices[0].finish_reason in ("stop", "length")
    before = service.engine.stats()["prefix_hit_tokens"]
    b = ask(client, second)
    ids_a, ids_b = prompt_ids(service.model.tokenizer, first), prompt_ids(service.model.tokenizer, second)
    common = next(i for i, (x, y) in enumerate(zip(ids_a, ids_b)) if x != y)
    assert b.usage.prompt_tokens == len(ids_b)
    assert b.usage.prompt_tokens_details.cached_tokens == common // PAGE * PAGE > 0
    assert service.engine.stats()["prefix_hit_tokens"] - before == b.usage.prompt_tokens_details.cached_tokens


def test_streaming_returns_the_same_text_and_usage_as_non_streaming(client):
    messages = [{"role": "system", "content": LONG}, {"role": "user", "content": "stream please"}]
    plain = ask(client, messages, max_tokens=8)
    chunks = list(ask(client, messages, max_tokens=8, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == plain.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_metrics_add_up_across_requests_including_16_concurrent_clients(service, url, client):
    before = metrics(url)
    messages = [[{"role": "system", "content": LONG}, {"role": "user", "content": f"client {i}"}] for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda m: ask(client, m), messages))
    after = metrics(url)
    assert len(replies) == 16 and all(r.choices[0].message.content is not None for r in replies)
    delta = {k: after[k] - before.get(k, 0) for k in after}
    assert delta["agentcache_requests_total"] == 16
    assert delta["agentcache_time_to_first_token_seconds_count"] == 16
    assert delta["agentcache_prompt_tokens_total"] == sum(r.usage.prompt_tokens for r in replies)
    assert delta["agentcache_prompt_tokens_total"] == sum(len(prompt_ids(service.model.tokenizer, m)) for m in messages)
    cached = sum(r.usage.prompt_tokens_details.cached_tokens for r in replies)
    assert delta["agentcache_cached_tokens_total"] == delta["agentcache_prefix_cache_hits_total"] == cached > 0
    assert delta["agentcache_prefix_cache_queries_total"] == delta["agentcache_prompt_tokens_total"]
    assert delta["agentcache_generation_tokens_total"] == sum(r.usage.completion_tokens for r in replies)
    assert after["agentcache_kv_pages_used"] == 0 and after["agentcache_kv_pages_cached"] > 0


def test_bad_requests_get_clear_4xx_and_the_server_keeps_serving(service, url, client):
    chat = url + "/v1/chat/completions"
    status, body = http("POST", chat, raw=b'{"model": ')
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    status, body = http("POST", chat, {"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]})
    assert status == 404 and "gpt-9" in body["error"]["message"] and MODEL in body["error"]["message"]
    window = service.model.max_len
    status, body = http("POST", chat, {"model": MODEL, "max_tokens": window + 1,
                                       "messages": [{"role": "user", "content": "hi"}]})
    assert status == 400 and f"exceeds the model window of {window}" in body["error"]["message"]
    status, body = http("POST", chat, {"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]})
    assert status == 400 and "role" in body["error"]["message"]
    status, body = http("POST", chat, {"model": MODEL, "temperature": "hot",
                                       "messages": [{"role": "user", "content": "hi"}]})
    assert status == 400 and "temperature" in body["error"]["message"]
    with pytest.raises(openai.NotFoundError, match="no context 'ctx_nope'"):
        ask(client, [{"role": "user", "content": "hi"}], extra_body={"context_id": "ctx_nope"})
    assert ask(client, [{"role": "user", "content": "still there?"}]).usage.completion_tokens >= 1
    errors = metrics(url)
    assert errors['agentcache_request_errors_total{status="400"}'] >= 4
    assert errors['agentcache_request_errors_total{status="404"}'] >= 2


def test_api_key_is_required_on_every_request(service):
    with uvicorn_running(create_app(service, api_key="s3cret")) as base:
        assert http("GET", base + "/v1/models")[0] == 401
        status, body = http("GET", base + "/health", headers={"Authorization": "Bearer wrong"})
        assert status == 401 and "API key" in body["error"]["message"]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=base + "/v1", api_key="s3cret", max_retries=0)
        assert [m.id for m in good.models.list().data] == [MODEL]


def test_json_schema_response_format_is_enforced(client):
    schema = {"type": "object", "properties": {"color": {"enum": ["red", "blue"]}}, "required": ["color"],
              "additionalProperties": False, "x-guidance": {"whitespace_flexible": False}}
    reply = ask(client, [{"role": "user", "content": "pick"}], max_tokens=16,
                response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}})
    assert json.loads(reply.choices[0].message.content)["color"] in ("red", "blue")


def test_contexts_create_use_report_savings_delete_and_expire(service, url, client):
    tokenizer = service.model.tokenizer
    shared = [{"role": "system", "content": LONG + "context"}, {"role": "user", "content": "Remember this."}]
    status, created = http("POST", url + "/v1/contexts", {"messages": shared, "ttl_seconds": 60})
    assert status == 200 and created["expires_at"] == int(Clock.now + 60)
    without_prompt = ChatRenderer(tokenizer).segments(shared)[:-1]
    assert created["tokens"] == sum(len(tokenizer.encode(s, add_special_tokens=False)) for s in without_prompt)
    new = [{"role": "user", "content": "And now?"}]
    via_context = ask(client, new, extra_body={"context_id": created["context_id"]})
    full = ask(client, shared + new)
    assert via_context.choices[0].message.content == full.choices[0].message.content
    assert via_context.usage.prompt_tokens == full.usage.prompt_tokens == len(prompt_ids(tokenizer, shared + new))
    assert via_context.usage.prompt_tokens_details.cached_tokens >= created["tokens"] // PAGE * PAGE
    extra = via_context.usage.model_extra
    assert extra["context_tokens"] == created["tokens"]
    assert extra["context_bytes"] == len(json.dumps({"messages": shared, "tools": None}).encode())
    assert http("DELETE", url + f"/v1/contexts/{created['context_id']}")[0] == 200
    status, body = http("DELETE", url + f"/v1/contexts/{created['context_id']}")
    assert status == 404 and "create one with POST /v1/contexts" in body["error"]["message"]
    _, short = http("POST", url + "/v1/contexts", {"messages": shared, "ttl_seconds": 5})
    Clock.now += 5
    with pytest.raises(openai.NotFoundError, match="expired"):
        ask(client, new, extra_body={"context_id": short["context_id"]})


def test_serve_on_a_busy_port_is_one_error_line_exit_2():
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "agentcache.cli", "serve", "--port", str(port)],
                              capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: cannot listen on 127.0.0.1:{port}: Address already in use"]

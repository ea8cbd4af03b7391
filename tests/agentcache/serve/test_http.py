"""`agentcache serve` over real HTTP on loopback (random-weight model with the real tokenizer): the OpenAI SDK,
streaming, errors, metrics, concurrency and explicit contexts."""

import json
import re
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from agentcache.cache_dir import models_dir
from agentcache.render import ChatRenderer
from agentcache.serve.app import create_app
from agentcache.serve.chat import ChatService
from agentcache.serve.contexts import ContextStore
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
    return ChatService(load_model(MODEL, cache_dir=models_dir()), contexts=ContextStore(limit=4, clock=Clock()))


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

    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "agentcache.cli", "serve", "--port", str(port)],
                              capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: cannot listen on 127.0.0.1:{port}: Address already in use"]


WEATHER = {"type": "object", "properties": {"city": {"enum": ["Paris", "Tokyo", "Lima"]}, "unit": {"enum": ["c", "f"]}},
           "required": ["city", "unit"], "additionalProperties": False}
ALARM = {"type": "object", "properties": {"hour": {"type": "integer", "minimum": 0, "maximum": 23},
                                          "loud": {"type": "boolean"}, "label": {"type": "string", "maxLength": 12}},
         "required": ["hour", "loud", "label"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather.", "parameters": WEATHER}},
         {"type": "function", "function": {"name": "set_alarm", "description": "An alarm.", "parameters": ALARM}}]
PARAMETERS = {"get_weather": WEATHER, "set_alarm": ALARM}
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


def valid(value, schema):
    """The subset of JSON Schema the test tools use, checked by hand."""
    if "enum" in schema:
        return value in schema["enum"]
    kind = schema["type"]
    if kind == "object":
        return isinstance(value, dict) and set(value) == set(schema["required"]) == set(schema["properties"]) and \
            all(valid(value[k], s) for k, s in schema["properties"].items())
    if kind == "integer":
        return type(value) is int and schema["minimum"] <= value <= schema["maximum"]
    if kind == "boolean":
        return type(value) is bool
    return isinstance(value, str) and len(value) <= schema["maxLength"]


def checked_call(reply):
    """The one tool call of a reply, checked against the OpenAI shape and the tool's schema: (name, arguments)."""
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and re.fullmatch(r"call_\w{8,}", call.id)
    arguments = json.loads(call.function.arguments)
    assert valid(arguments, PARAMETERS[call.function.name]), call.function.arguments
    return call.function.name, arguments


@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 1, "seed": 1}, {"temperature": 1, "seed": 7}])
def test_required_tool_choice_returns_one_call_with_arguments_valid_under_its_schema(client, sampling):
    reply = ask(client, WEATHER_QUESTION, max_tokens=64, tools=TOOLS, tool_choice="required", **sampling)
    name, _ = checked_call(reply)
    assert name in PARAMETERS


@pytest.mark.parametrize("name", ["get_weather", "set_alarm"])
def test_a_named_tool_choice_calls_that_tool(client, name):
    reply = ask(client, WEATHER_QUESTION, max_tokens=64, tools=TOOLS,
                tool_choice={"type": "function", "function": {"name": name}})
    assert checked_call(reply)[0] == name


def streamed(client, messages, **kw):
    """The completion the SDK's own stream accumulator builds from the server-sent chunks."""
    from openai.lib.streaming.chat import ChatCompletionStreamState

    state = ChatCompletionStreamState()
    for chunk in ask(client, messages, stream=True, **kw):
        state.handle_chunk(chunk)
    return state.get_final_completion()


def test_streamed_tool_call_accumulates_in_the_sdk_to_the_non_streamed_call(client):
    kw = {"max_tokens": 64, "tools": TOOLS, "tool_choice": "required"}
    assert checked_call(streamed(client, WEATHER_QUESTION, **kw)) == checked_call(ask(client, WEATHER_QUESTION, **kw))


def tool_shaped(name):
    """A response_format whose JSON is a call of `name`: under "auto" it comes back as a tool call."""
    schema = {"type": "object", "properties": {"name": {"const": name}, "arguments": PARAMETERS[name]},
              "required": ["name", "arguments"], "additionalProperties": False,
              "x-guidance": {"whitespace_flexible": False}}
    return {"type": "json_schema", "json_schema": {"name": "call", "schema": schema}}


def test_auto_returns_a_call_only_when_the_text_is_one_and_none_returns_text(client):
    shaped = {"max_tokens": 64, "tools": TOOLS, "response_format": tool_shaped("set_alarm")}
    auto = ask(client, WEATHER_QUESTION, **shaped)  # tool_choice defaults to "auto" with tools
    assert checked_call(auto)[0] == "set_alarm"
    none = ask(client, WEATHER_QUESTION, tool_choice="none", **shaped)
    assert none.choices[0].message.tool_calls is None and none.choices[0].finish_reason == "stop"
    assert json.loads(none.choices[0].message.content) == {"name": "set_alarm", "arguments": checked_call(auto)[1]}
    assert checked_call(streamed(client, WEATHER_QUESTION, **shaped)) == checked_call(auto)
    free = ask(client, WEATHER_QUESTION, max_tokens=12, tools=TOOLS, tool_choice="auto")
    assert free.choices[0].message.tool_calls is None and free.choices[0].finish_reason in ("stop", "length")
    chunks = [c for c in ask(client, WEATHER_QUESTION, max_tokens=12, tools=TOOLS, stream=True) if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == free.choices[0].message.content
    assert not any(c.choices[0].delta.tool_calls for c in chunks)


def test_tool_calls_and_tool_results_sent_back_render_as_the_call_the_model_made(service, client):
    from agentcache.serve.chat import TOOL_FORMAT
    from layers import canonical_json

    def turn(call_id, arguments):
        call = {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
        return WEATHER_QUESTION + [{"role": "assistant", "content": None, "tool_calls": [call]},
                                   {"role": "tool", "tool_call_id": call_id, "content": "18 C, sunny"}]

    first = ask(client, turn("call_1", '{"city": "Paris", "unit": "c"}'), tools=TOOLS, tool_choice="none")
    second = ask(client, turn("call_2", '{"city":"Paris",\n "unit":"c"}'), tools=TOOLS, tool_choice="none")
    expected = [{"role": "system", "content": f"{TOOL_FORMAT}\nTools (JSON Schema):\n{canonical_json(TOOLS)}"},
                *WEATHER_QUESTION,
                {"role": "assistant",
                 "content": '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}'},
                {"role": "tool", "content": "18 C, sunny"}]
    assert first.usage.prompt_tokens == second.usage.prompt_tokens == len(prompt_ids(service.model.tokenizer, expected))
    assert first.choices[0].message.content == second.choices[0].message.content
    assert second.usage.prompt_tokens_details.cached_tokens == (second.usage.prompt_tokens - 1) // PAGE * PAGE


def test_bad_tool_requests_get_a_clear_400(url):
    chat = url + "/v1/chat/completions"
    base = {"model": MODEL, "messages": WEATHER_QUESTION}
    cases = [
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "fly"}}},
         "tool_choice names 'fly', which is not among the tools (get_weather, set_alarm)"),
        ({"tool_choice": "required"}, "tool_choice \"required\" needs 'tools'"),
        ({"tools": TOOLS, "tool_choice": "always"}, "tool_choice must be 'none', 'auto', 'required'"),
        ({"tools": [{"type": "function", "function": {}}]}, 'each tool must be {"type": "function"'),
        ({"tools": TOOLS, "tool_choice": "required", "response_format": tool_shaped("set_alarm")},
         "response_format cannot be combined with tool_choice 'required'"),
        ({"messages": [{"role": "assistant", "tool_calls": [{"type": "function",
                                                             "function": {"name": "f", "arguments": "{oops"}}]}]},
         "the arguments of the call to 'f' are not valid JSON"),
    ]
    for extra, message in cases:
        status, body = http("POST", chat, {**base, **extra})
        assert status == 400 and message in body["error"]["message"], body


def test_metrics_context_savings_and_ttft_sum_add_up_across_requests(service, url, client):
    import time

    tokenizer = service.model.tokenizer
    shared = [{"role": "system", "content": LONG + "savings"}, {"role": "user", "content": "Keep this."}]
    _, created = http("POST", url + "/v1/contexts", {"messages": shared, "ttl_seconds": 600})
    segments = ChatRenderer(tokenizer).segments(shared)[:-1]  # without the generation prompt
    tokens = sum(len(tokenizer.encode(s, add_special_tokens=False)) for s in segments)
    size = len(json.dumps({"messages": shared, "tools": None}).encode())
    via = {"extra_body": {"context_id": created["context_id"]}}
    before = metrics(url)
    ttfts, elapsed = [], []
    for kw in [via, via, {}, {**via, "stream": True}]:
        started = time.perf_counter()
        reply = ask(client, [{"role": "user", "content": f"turn {len(ttfts)}"}], **kw)
        if kw.get("stream"):
            reply = [chunk for chunk in reply if chunk.choices and chunk.choices[0].finish_reason][-1]
        elapsed.append(time.perf_counter() - started)
        ttfts.append(reply.model_extra["timings"]["ttft_s"])
    delta = {k: v - before.get(k, 0) for k, v in metrics(url).items()}
    assert delta["agentcache_context_tokens_saved_total"] == 3 * tokens == 3 * created["tokens"]
    assert delta["agentcache_context_bytes_saved_total"] == 3 * size
    assert delta["agentcache_time_to_first_token_seconds_count"] == 4
    assert delta["agentcache_time_to_first_token_seconds_sum"] == pytest.approx(sum(ttfts), abs=1e-5)
    assert all(0 < ttft <= wall for ttft, wall in zip(ttfts, elapsed))  # each bounded by the client's clock


def test_speculative_decodings_tokens_in_usage_and_metrics():
    """A server that drafts by prompt lookup: each reply's accepted and rejected prediction tokens (OpenAI's names)
    add up to the metrics' drafted and accepted counters and the engine's own totals."""
    service = ChatService(load_model(MODEL, cache_dir=models_dir()), speculate="lookup")
    with uvicorn_running(create_app(service)) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
        replies = [ask(client, [{"role": "user", "content": LONG + str(i)}], max_tokens=48) for i in range(3)]
        after = metrics(base)
    details = [r.usage.completion_tokens_details for r in replies]
    accepted = sum(d.accepted_prediction_tokens for d in details)
    drafted = accepted + sum(d.rejected_prediction_tokens for d in details)
    assert drafted > 0
    assert after["agentcache_spec_decode_draft_tokens_total"] == drafted == service.engine.stats()["drafted_tokens_total"]
    assert after["agentcache_spec_decode_accepted_tokens_total"] == accepted
    assert accepted == service.engine.stats()["accepted_tokens_total"]

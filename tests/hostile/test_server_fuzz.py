"""A hypothesis fuzz of `agentcache serve`'s request schema over real HTTP on loopback (random-weight model with
the real tokenizer): bodies built from the real field names with wrong types, out-of-range and huge numbers,
bools, nulls, lone surrogates, odd content parts and nested junk. No answer is a 5xx, every 4xx is one line and
counted in the error metric, and the server stays healthy."""

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentcache.cache_dir import models_dir
from agentcache.serve.app import create_app
from agentcache.serve.chat import ChatService
from engine import Engine, load_model
from tests.agentcache.http_helpers import http, uvicorn_running

MODEL = "random-tiny-chat"
SURROGATES = st.sampled_from(["x \ud800 y", "\udfff", "a\udc80"])


def rarely(common: st.SearchStrategy, rare: st.SearchStrategy) -> st.SearchStrategy:
    """`rare` one time in eight: a lone surrogate anywhere fails the whole body, so it must not be everywhere."""
    return st.integers(0, 7).flatmap(lambda i: rare if i == 0 else common)


TEXT = rarely(st.text(max_size=12), SURROGATES)
SCALARS = (st.none() | st.booleans() | st.integers(-3, 3) | st.integers(2**63 - 2, 2**90) | st.integers(-2**90, -2**63)
           | st.floats(allow_nan=True, allow_infinity=True) | TEXT)
JUNK = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                    max_leaves=8)
SET_JUNK = JUNK.filter(lambda value: value is not None)  # null means the default (512 tokens: too slow here)


def either(*valid):
    return st.one_of(*valid, JUNK)


PART = either(st.fixed_dictionaries({"type": st.just("text"), "text": either(TEXT)}),
              st.fixed_dictionaries({"type": st.sampled_from(["image_url", "input_audio", "file", "refusal", "video"]),
                                     "image_url": either(st.fixed_dictionaries({"url": TEXT}))}),
              st.dictionaries(st.sampled_from(["type", "text"]), JUNK, max_size=2))
CALL = either(st.fixed_dictionaries({
    "id": either(TEXT), "type": either(st.just("function")),
    "function": either(st.fixed_dictionaries({"name": either(TEXT), "arguments": either(
        st.just('{"city": "Paris"}'), st.just("{oops"), st.just("[1]"), st.just('{"a": "\\ud800"}'))})),
}))
MESSAGE = either(st.fixed_dictionaries(
    {"role": either(st.sampled_from(["system", "developer", "user", "assistant", "tool", "wizard"]))},
    optional={"content": either(TEXT, st.lists(PART, max_size=3)), "tool_calls": either(st.lists(CALL, max_size=2)),
              "tool_call_id": either(TEXT), "name": either(TEXT)}))
SCHEMA = either(st.just({"type": "object", "properties": {"city": {"enum": ["Paris", "Lima"]}}}),
                st.just({"type": "object"}), st.just({"type": 5}), st.just({"enum": []}),
                st.dictionaries(st.sampled_from(["type", "properties", "required", "enum", "items"]), JUNK, max_size=3))
TOOL = either(st.fixed_dictionaries({"type": either(st.just("function")), "function": either(st.fixed_dictionaries(
    {"name": either(st.sampled_from(["get_weather", "f"]), TEXT)},
    optional={"description": either(TEXT), "parameters": SCHEMA}))}))
TOOLS = either(st.lists(TOOL, max_size=2))
FIELDS = {
    "model": either(st.just(MODEL), TEXT),
    "messages": either(st.lists(MESSAGE, max_size=3)),
    "max_tokens": st.one_of(st.integers(-2, 3), st.integers(2**31, 2**70), SET_JUNK),
    "max_completion_tokens": st.one_of(st.integers(-2, 3), SET_JUNK),
    "stream": either(st.booleans()),
    "stream_options": either(st.fixed_dictionaries({"include_usage": either(st.booleans())})),
    "n": either(st.just(1), st.integers(-2, 3)),
    "temperature": either(st.floats(-1, 3), st.just(1e-300)),
    "top_p": either(st.floats(-1, 2)),
    "seed": either(st.integers(-2**64, 2**64)),
    "stop": either(TEXT, st.lists(TEXT, max_size=3)),
    "tools": TOOLS,
    "tool_choice": either(st.sampled_from(["none", "auto", "required", "always"]),
                          st.fixed_dictionaries({"type": st.just("function"),
                                                 "function": st.fixed_dictionaries({"name": either(TEXT)})})),
    "response_format": either(st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object", "json_schema",
                                                                              "xml"])},
                                                    optional={"json_schema": either(st.fixed_dictionaries(
                                                        {"name": TEXT, "schema": SCHEMA}))})),
    "cache_salt": either(TEXT),
    "context_id": either(st.just("ctx_nope"), TEXT),
    "logprobs": either(st.booleans()),
    "logit_bias": either(st.dictionaries(TEXT, st.integers(-100, 100), max_size=2)),
    "user": JUNK,
}
CONTEXT_FIELDS = {"model": FIELDS["model"], "messages": FIELDS["messages"], "tools": TOOLS,
                  "ttl_seconds": either(st.integers(-5, 100_000), st.floats(allow_nan=True)),
                  "cache_salt": FIELDS["cache_salt"]}


def bodies(fields: dict, base: dict) -> st.SearchStrategy:
    """A valid base with up to four fields replaced (or added) by fuzzed values, sometimes an unknown key too: few
    enough that many bodies pass validation and run through the engine."""
    keys = st.lists(st.sampled_from(sorted(fields)), max_size=4, unique=True)
    chosen = keys.flatmap(lambda picked: st.fixed_dictionaries({key: fields[key] for key in picked}))
    extra = st.dictionaries(TEXT, JUNK, max_size=2)
    return st.builds(lambda picked, more: {**base, **more, **picked}, chosen, extra)


CHAT = bodies(FIELDS, {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
CONTEXT = bodies(CONTEXT_FIELDS, {"messages": [{"role": "system", "content": "be brief"}]})
REQUESTS = st.one_of(st.tuples(st.just("/v1/chat/completions"), CHAT), st.tuples(st.just("/v1/contexts"), CONTEXT))


@pytest.fixture(scope="module")
def url():
    model = load_model(MODEL, cache_dir=models_dir())
    with uvicorn_running(create_app(ChatService(model, Engine(model, capacity_bytes=64 << 20)))) as base:
        yield base


def errors_total(url: str) -> int:
    status, text = http("GET", url + "/metrics")
    assert status == 200
    return sum(int(n) for n in re.findall(r'^agentcache_request_errors_total\{status="\d+"\} (\d+)$', text, re.M))


def test_fuzzed_requests_never_get_a_5xx_and_every_4xx_is_counted(url):
    before = errors_total(url)
    seen = {"4xx": 0, "2xx": 0}

    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(REQUESTS)
    def one(request):
        path, body = request
        raw = json.dumps(body).encode()  # a lone surrogate goes as its escape, as a client would send it
        status, answer = http("POST", url + path, raw=raw)
        assert status < 500, (status, answer, body)
        if status >= 400:
            seen["4xx"] += 1
            message = answer["error"]["message"]
            assert isinstance(message, str) and message and "\n" not in message, answer
            assert "Traceback" not in message
            return
        seen["2xx"] += 1
        if isinstance(answer, str):  # a stream: no error event inside it
            assert '"error"' not in answer and answer.rstrip().endswith("data: [DONE]"), answer[-500:]

    one()
    assert seen["4xx"] > 50 and seen["2xx"] > 5, seen  # both kinds were really exercised
    assert errors_total(url) - before == seen["4xx"]
    assert http("GET", url + "/health") == (200, {"status": "ok"})
    status, answer = http("POST", url + "/v1/chat/completions",
                          {"model": MODEL, "messages": [{"role": "user", "content": "still there?"}], "max_tokens": 2})
    assert status == 200 and answer["usage"]["completion_tokens"] >= 1

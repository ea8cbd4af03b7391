"""The openai and anthropic backends through their official SDKs against a recording server on loopback."""

import json
import socket
import time
from pathlib import Path

import pytest

from agentcache import PROMPTS_DIR
from agentcache.backends import GenSettings, remote
from agentcache.backends.anthropic import AnthropicBackend, break_even_ttl, min_cacheable_tokens
from agentcache.backends.constrain import Answer, reply_schema
from agentcache.backends.openai import OpenAIBackend
from agentcache.backends.remote import RemoteError
from agentcache.render import block_message
from layers import Context, Layer, ToolRegistry, ToolResult, UserInput, build_prefix
from layers.l3 import ToolCall
from layers.tokens import TiktokenCounter
from tests.agentcache.http_helpers import RecordingServer, free_port

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "repo"
SPECS = [ToolRegistry.from_dir(PROMPTS_DIR / "tools").get(n)
         for n in ToolRegistry.from_dir(PROMPTS_DIR / "tools").names()]
ENABLED = {s.name for s in SPECS}
ANSWER = '{"answer": "ok"}'
COMPLETION = {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105,
                        "prompt_tokens_details": {"cached_tokens": 64}}}
ERROR = {"error": {"message": "slow down", "type": "rate_limit_error"}}


def context_with_turns(turns: int) -> Context:
    context = build_prefix(EXAMPLE, PROMPTS_DIR, role="coder")
    context.append(UserInput("Where are words counted?").to_block())
    for i in range(turns):
        context.extend([ToolCall("read_file", {"path": f"f{i}.py"}).to_block(),
                        ToolResult("read_file", f"contents {i}", False).to_block()])
    return context


def chat_bodies(server: RecordingServer) -> list[dict]:
    return [body for method, path, body in server.requests if path.endswith("/chat/completions")]


def test_openai_retries_429_then_succeeds_with_full_messages_when_server_has_no_contexts():
    with RecordingServer([(404, {"error": {"message": "Not Found"}}), (429, ERROR), (200, COMPLETION)]) as server:
        backend = OpenAIBackend(server.url + "/v1", "m", "key")
        context = context_with_turns(1)
        reply = backend.complete(context, SPECS, ENABLED, GenSettings(max_tokens=32, routing_key="session-1"))
    bodies = chat_bodies(server)
    assert len(bodies) == 2 and bodies[0] == bodies[1]
    assert bodies[1]["messages"] == [block_message(b) for b in context]
    assert bodies[1]["prompt_cache_key"] == "session-1" and reply.routing_key == "session-1"
    assert "cache_salt" not in bodies[1]
    chat_headers = [h for h, (_, path, _) in zip(server.headers, server.requests) if path.endswith("/completions")]
    assert all(h["x-session-id"] == h["x-smg-routing-key"] == "session-1" for h in chat_headers)
    assert "response_format" not in bodies[1]  # write_file's and edit_file's ``` blocks: no JSON schema holds them
    assert reply.usage == {"prompt_tokens": 100, "cached_tokens": 64, "computed_tokens": 36, "completion_tokens": 5}
    assert isinstance(backend.parse(reply.text, SPECS, ENABLED), Answer)


def test_openai_constrains_the_reply_with_its_schema_when_no_enabled_tool_has_raw_parameters():
    plain = [s for s in SPECS if not s.raw]
    with RecordingServer([(404, {"error": {"message": "Not Found"}}), (200, COMPLETION)]) as server:
        OpenAIBackend(server.url + "/v1", "m", "key").complete(context_with_turns(1), SPECS, {s.name for s in plain},
                                                                GenSettings(max_tokens=32))
    (body,) = chat_bodies(server)
    assert body["response_format"]["json_schema"]["schema"] == json.loads(json.dumps(reply_schema(plain)))


def test_openai_sends_context_id_and_only_l3_and_recreates_an_expired_context():
    created = [(200, {"context_id": f"ctx_{i}", "tokens": 900, "bytes": 5000, "expires_at": 0}) for i in (1, 2)]
    gone = (404, {"error": {"message": "context 'ctx_1' expired"}})
    with RecordingServer([created[0], (200, COMPLETION), gone, created[1], (200, COMPLETION)]) as server:
        backend = OpenAIBackend(server.url + "/v1", "m", "key")
        context = context_with_turns(0)
        first = backend.complete(context, SPECS, ENABLED, GenSettings(salt="tenant-a"))
        context.extend([ToolCall("list_files", {}).to_block(), ToolResult("list_files", "a.py", False).to_block()])
        backend.complete(context, SPECS, ENABLED, GenSettings(salt="tenant-a"))
    paths = [(method, path) for method, path, _ in server.requests]
    assert paths == [("POST", "/v1/contexts"), ("POST", "/v1/chat/completions"), ("POST", "/v1/chat/completions"),
                     ("POST", "/v1/contexts"), ("POST", "/v1/chat/completions")]
    assert server.requests[0][2]["messages"] == [block_message(b) for b in context.prefix]
    bodies = chat_bodies(server)
    assert [b["context_id"] for b in bodies] == ["ctx_1", "ctx_1", "ctx_2"]
    assert {b["cache_salt"] for b in bodies} == {"tenant-a"}
    assert bodies[2]["messages"] == [block_message(b) for b in context.l3]
    assert first.prefix_tokens == 900
    assert "prompt_cache_key" not in bodies[0] and "x-session-id" not in server.headers[1]  # no key, no routing


def test_openai_bad_key_and_connection_refused_are_one_clear_line():
    with RecordingServer([(401, {"error": {"message": "Incorrect API key provided"}})]) as server:
        backend = OpenAIBackend(server.url + "/v1", "m", "wrong")
        with pytest.raises(RemoteError, match=r"rejected the API key \(401\): Incorrect API key provided"):
            backend.complete(context_with_turns(0), SPECS, ENABLED, GenSettings())
        assert len(server.requests) == 1  # a 401 is not retried
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(RemoteError, match=r"cannot connect to .* \(is the server running\?\)"):
        OpenAIBackend(url, "m").complete(context_with_turns(0), SPECS, ENABLED, GenSettings())


@pytest.fixture()
def sleeps(monkeypatch):
    """The backoff delays call_with_retries asks for, recorded instead of slept."""
    asked: list[float] = []
    monkeypatch.setattr(remote.time, "sleep", asked.append)
    return asked


NO_CONTEXTS = (404, {"error": {"message": "Not Found"}})


def test_openai_retries_5xx_with_exponential_backoff_then_succeeds(sleeps):
    script = [NO_CONTEXTS, (500, {"error": {"message": "boom"}}), (503, {"error": {"message": "busy"}}),
              (200, COMPLETION)]
    with RecordingServer(script) as server:
        reply = OpenAIBackend(server.url + "/v1", "m").complete(context_with_turns(0), SPECS, ENABLED, GenSettings())
    bodies = chat_bodies(server)
    assert len(bodies) == 3 and bodies[0] == bodies[1] == bodies[2]
    assert sleeps == [remote.BACKOFF_S, 2 * remote.BACKOFF_S]
    assert reply.usage["cached_tokens"] == 64


def test_openai_gives_up_on_5xx_after_the_last_retry_with_one_clear_line(sleeps):
    with RecordingServer([NO_CONTEXTS, (502, {"error": {"message": "upstream  gone"}})]) as server:
        backend = OpenAIBackend(server.url + "/v1", "m")
        with pytest.raises(RemoteError, match=r"kept failing \(502\) after 4 retries: upstream gone$") as caught:
            backend.complete(context_with_turns(0), SPECS, ENABLED, GenSettings())
    assert caught.value.status == 502
    assert len(chat_bodies(server)) == remote.RETRIES + 1
    assert sleeps == [remote.BACKOFF_S * 2 ** i for i in range(remote.RETRIES)]


def test_a_timeout_is_reported_as_a_timeout_not_as_cannot_connect(sleeps):
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections (backlog), never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        started = time.perf_counter()
        with pytest.raises(RemoteError, match=r"timed out: no answer within the backend's timeout") as caught:
            OpenAIBackend(url, "m", timeout_s=0.5).complete(context_with_turns(0), SPECS, ENABLED, GenSettings())
        with pytest.raises(RemoteError, match=r"timed out"):
            AnthropicBackend("claude-sonnet-4-6", "key", url.removesuffix("/v1"), timeout_s=0.5).complete(
                context_with_turns(0), SPECS, ENABLED, GenSettings())
    assert "cannot connect" not in str(caught.value) and caught.value.status == 0
    assert sleeps == [] and time.perf_counter() - started < 10  # not retried


def anthropic_message(text: str = ANSWER) -> dict:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 20, "output_tokens": 10, "cache_creation_input_tokens": 100,
                      "cache_read_input_tokens": 1500}}


def marks(body: dict) -> list[tuple[str, int, dict]]:
    """Every cache_control in request order: ('system', index) or ('message', index of the message)."""
    found = [("system", i, part["cache_control"]) for i, part in enumerate(body["system"]) if "cache_control" in part]
    for i, message in enumerate(body["messages"]):
        found += [("message", i, part["cache_control"]) for part in message["content"] if "cache_control" in part]
    return found


def without_marks(messages: list[dict]) -> list[dict]:
    return [{**m, "content": [{k: v for k, v in p.items() if k != "cache_control"} for p in m["content"]]}
            for m in messages]


def run_anthropic_turns(model: str, ttl: str, turns: int) -> tuple[list[dict], list]:
    with RecordingServer([(200, anthropic_message())]) as server:
        backend = AnthropicBackend(model, "key", server.url, ttl=ttl)
        replies = [backend.complete(context_with_turns(t), SPECS, ENABLED, GenSettings(max_tokens=64))
                   for t in range(turns)]
    assert all(path == "/v1/messages" for _, path, _ in server.requests)
    return [body for _, _, body in server.requests], replies


def test_anthropic_breakpoints_end_of_l1_end_of_l2_last_turn_and_stable_bytes():
    bodies, replies = run_anthropic_turns("claude-opus-5", "1h", 3)
    prefix = build_prefix(EXAMPLE, PROMPTS_DIR, role="coder").prefix
    l1 = sum(1 for b in prefix if b.layer == Layer.L1)
    assert TiktokenCounter().count("".join(block_message(b)["content"] for b in prefix[:l1])) >= 512  # all apply
    for body in bodies:
        assert len(marks(body)) <= 4
        assert marks(body) == [("system", l1 - 1, {"type": "ephemeral", "ttl": "1h"}),
                               ("system", len(prefix) - 1, {"type": "ephemeral", "ttl": "1h"}),
                               ("message", len(body["messages"]) - 1, {"type": "ephemeral"})]
        assert "cache_control" in body["messages"][-1]["content"][-1]
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user", "assistant", "user"][
            : len(body["messages"])]
    assert json.dumps(bodies[0]["system"]) == json.dumps(bodies[1]["system"]) == json.dumps(bodies[2]["system"])
    for before, after in zip(bodies, bodies[1:]):
        earlier = without_marks(before["messages"])
        assert json.dumps(without_marks(after["messages"])[: len(earlier)]) == json.dumps(earlier)
    assert replies[0].usage == {"prompt_tokens": 1620, "cached_tokens": 1500, "computed_tokens": 120,
                                "completion_tokens": 10, "cache_write_tokens": 100}


def test_anthropic_skips_breakpoints_below_the_model_minimum():
    assert min_cacheable_tokens("claude-opus-4-5-20251101") == 4096
    assert min_cacheable_tokens("claude-3-5-haiku-latest") == 2048
    assert min_cacheable_tokens("claude-sonnet-4-6") == 1024
    counter = TiktokenCounter()
    context = context_with_turns(0)
    total = sum(counter.count(block_message(b)["content"]) for b in context)
    bodies, _ = run_anthropic_turns("claude-opus-4-5-20251101", "5m", 1)
    assert total < 4096 and marks(bodies[0]) == []
    l1 = sum(1 for b in context.prefix if b.layer == Layer.L1)
    l1_tokens = sum(counter.count(block_message(b)["content"]) for b in context.prefix[:l1])
    l2_tokens = sum(counter.count(block_message(b)["content"]) for b in context.prefix)
    assert 1024 <= l2_tokens  # so a 1024 model caches the end of L2
    expected = [("system", l1 - 1, {"type": "ephemeral"})] if l1_tokens >= 1024 else []
    expected += [("system", len(context.prefix) - 1, {"type": "ephemeral"}), ("message", 0, {"type": "ephemeral"})]
    bodies, _ = run_anthropic_turns("claude-sonnet-4-6", "5m", 1)
    assert marks(bodies[0]) == expected  # a breakpoint only where the prefix up to it reaches the minimum


@pytest.mark.parametrize("args, message", [
    (["--backend", "nope"], "backend must be one of local, openai, anthropic, got 'nope'"),
    (["--backend", "anthropic"], "the anthropic backend needs --model with a Claude model id"),
    (["--backend", "openai"], "the openai backend needs --base-url"),
])
def test_run_with_a_bad_backend_setting_is_one_error_line(tmp_path, args, message):
    import os
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    shutil.copytree(EXAMPLE, tmp_path / "repo")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "agentcache.cli", "run", "hi", "--repo", str(tmp_path / "repo"),
                           *args], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_openai_time_to_first_token_comes_from_server_timings_when_reported():
    timed = {**COMPLETION, "timings": {"queue_s": 0.01, "ttft_s": 0.2, "tpot_s": 0.05, "total_s": 0.4}}
    with RecordingServer([(404, {"error": {"message": "Not Found"}}), (200, timed), (200, COMPLETION)]) as server:
        backend = OpenAIBackend(server.url + "/v1", "m", "key")
        started = time.perf_counter()
        with_timings = backend.complete(context_with_turns(0), SPECS, ENABLED, GenSettings())
        between = time.perf_counter()
        without = backend.complete(context_with_turns(0), SPECS, ENABLED, GenSettings())
        ended = time.perf_counter()
    t = with_timings.timings
    assert with_timings.trace["timings_from"] == "server" and without.trace["timings_from"] == "request"
    assert t["queue_s"] == 0.01 and t["tpot_s"] == 0.05
    # the server's first-token time plus what the round trip spent outside the server (never negative)
    assert t["ttft_s"] == pytest.approx(0.2 + max(0.0, t["total_s"] - 0.4))
    assert t["total_s"] <= between - started
    assert without.timings["ttft_s"] == without.timings["total_s"] <= ended - between


def two_request_cost(ttl: str, gap_s: float) -> float:
    """A prefix written now and needed again after `gap_s`, in units of its base input price, computed here from
    the published multipliers: 5m writes 1.25, 1h writes 2, reads 0.1."""
    write, lives = {"5m": (1.25, 300), "1h": (2.0, 3600)}[ttl]
    return write + (0.1 if gap_s <= lives else write)


@pytest.mark.parametrize("gap_s", [1, 60, 300, 301, 900, 3600, 3601, 86400])
def test_auto_ttl_is_the_cheaper_one_for_the_gap(gap_s):
    cheaper = min(("5m", "1h"), key=lambda ttl: two_request_cost(ttl, gap_s))
    assert break_even_ttl(gap_s) == cheaper
    assert break_even_ttl(None) == "5m"  # no gap seen yet


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("gap_s, expected", [(30, "5m"), (600, "1h"), (7200, "5m")])
def test_auto_ttl_follows_the_gaps_between_requests(gap_s, expected):
    clock = Clock()
    with RecordingServer([(200, anthropic_message())]) as server:
        backend = AnthropicBackend("claude-opus-5", "key", server.url, ttl="auto", clock=clock)
        chosen = []
        for turns in range(3):
            chosen.append(backend.complete(context_with_turns(turns), SPECS, ENABLED, GenSettings()).trace["cache_ttl"])
            clock.now += gap_s
    bodies = [body for _, _, body in server.requests]
    assert chosen == ["5m", expected, expected]  # the first request has no gap to go by
    want = {"type": "ephemeral", **({"ttl": "1h"} if expected == "1h" else {})}
    assert {json.dumps(mark) for _, _, mark in marks(bodies[2])} == {json.dumps(want)}  # every breakpoint


def test_an_expired_provider_cache_triggers_a_compaction_that_pays_and_a_live_one_does_not(tmp_path):
    import shutil

    from agentcache.agent import COMPACT_PROMPT, Agent
    from agentcache.config import RunConfig
    from agentcache.session import Session

    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    clock = Clock()
    summary = anthropic_message('{"answer": "Listed the files twice; nothing else to do."}')
    with RecordingServer([(200, anthropic_message()), (200, anthropic_message()), (200, summary),
                          (200, anthropic_message())]) as server:
        backend = AnthropicBackend("claude-sonnet-4-5", "key", server.url, ttl="5m", clock=clock)
        config = RunConfig(backend="anthropic", model="claude-sonnet-4-5", max_turns=1)
        session = Session.create(repo)
        agent = Agent(repo, backend, config, session)
        agent.run_start("List the files.")
        agent.step(1)
        for i in range(6):  # long tool results: what a compaction removes pays for the summary
            arguments = {"path": "textstats/stats.py"}
            result = agent.toolbox.run("read_file", arguments)
            agent._append([ToolCall("read_file", arguments).to_block(),
                           ToolResult("read_file", result.output).to_block()], {"type": "filler", "i": i})
        clock.now += 299  # within the 5 minutes: the cache is live, compacting would throw it away
        agent.step(2)
        assert not any(r["type"] == "compaction" for r in session.records())
        clock.now += 301  # past them: the next request writes everything again anyway
        agent.step(3)
    bodies = [body for _, _, body in server.requests]
    assert len(bodies) == 4
    assert bodies[2]["messages"][-1]["content"][-1]["text"] == COMPACT_PROMPT.read_text()  # the summary request
    compaction = next(r for r in session.records() if r["type"] == "compaction")
    assert compaction["trigger"] == "expired" and compaction["dropped"] >= 10
    assert "Listed the files twice" in json.dumps(bodies[3]["messages"])
    assert len(json.dumps(bodies[3]["messages"])) < len(json.dumps(bodies[1]["messages"]))

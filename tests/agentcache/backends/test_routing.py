"""The routing-key contract of the openai backend, through `run` against a recording server: the key is the session
lineage (a resumed session and a fork keep it), the L1+L2 context id under `routing: prefix`, absent under
`routing: none`; it travels as two headers and `prompt_cache_key`, and the session records it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agentcache.cli import main
from agentcache.records import requests_of
from agentcache.session import Session
from agentcache.wiring import run_task
from tests.agentcache.http_helpers import RecordingServer

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "repo"
NO_CONTEXTS = (404, {"error": {"message": "Not Found"}})
MODELS = (200, {"object": "list", "data": [{"id": "m", "object": "model", "created": 0, "owned_by": "test",
                                            "max_model_len": 8192}]})


def one_run(answer: tuple[int, dict]) -> list[tuple[int, dict]]:
    """What one `run` of one answered request asks, in order: the models (its window), contexts (none), the chat."""
    return [MODELS, NO_CONTEXTS, answer]


def completion(replica: str | None = None) -> dict:
    body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": '{"answer": "ok"}'},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105,
                      "prompt_tokens_details": {"cached_tokens": 64}}}
    return {**body, "replica": replica} if replica else body


@pytest.fixture()
def repo(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(EXAMPLE, root)
    return root


def run(repo: Path, server: RecordingServer, routing: str | None = None, resume: str | None = None) -> dict:
    overrides = {"backend": "openai", "base_url": server.url + "/v1", "model": "m", "tool_choice": "auto",
                 "routing": routing}
    return run_task(repo, "Answer ok.", overrides, resume, on_line=lambda line: None)


def sent_keys(server: RecordingServer) -> list[tuple[str | None, str | None, str | None]]:
    """(X-Session-ID, X-SMG-Routing-Key, prompt_cache_key) of every chat request."""
    return [(headers.get("x-session-id"), headers.get("x-smg-routing-key"), (body or {}).get("prompt_cache_key"))
            for headers, (_, path, body) in zip(server.headers, server.requests) if path.endswith("/completions")]


def test_the_key_is_the_session_and_a_resumed_session_keeps_it(repo, capsys):
    answer = (200, completion("http://replica-a"))
    with RecordingServer(one_run(answer) * 2) as server:
        first = run(repo, server)
        again = run(repo, server, resume=first["session_id"])
    assert again["session_id"] == first["session_id"]
    assert sent_keys(server) == [(first["session_id"],) * 3] * 2
    creates = [h for h, (_, path, _) in zip(server.headers, server.requests) if path.endswith("/contexts")]
    assert [h.get("x-session-id") for h in creates] == [first["session_id"]] * 2  # a context goes where its key does
    records = requests_of(Session.open(repo, first["session_id"]).records())
    assert [(r.routing_key, r.replica) for r in records] == [(first["session_id"], "http://replica-a")] * 2
    with pytest.raises(SystemExit) as done:
        main(["inspect", first["session_id"], "--repo", str(repo)])
    assert done.value.code == 0
    routing = capsys.readouterr().out.split("routing", 1)[1]  # the table after the usage table
    assert routing.count(first["session_id"]) == 2 and routing.count("http://replica-a") == 2


def test_prefix_routing_keys_by_the_context_id_and_none_sends_no_key(repo):
    with RecordingServer(one_run((200, completion())) * 2) as server:
        by_prefix = run(repo, server, routing="prefix")
        unrouted = run(repo, server, routing="none")
    assert sent_keys(server) == [(by_prefix["context_id"],) * 3, (None, None, None)]
    records = requests_of(Session.open(repo, unrouted["session_id"]).records())
    assert records[0].routing_key is None and "routing_key" not in json.dumps(records[0].to_json())


def test_a_fork_resumed_on_its_own_keeps_its_root_parents_key(repo):
    """A fork of a fork: its first record names its parent, whose first record names the root."""
    root = Session.create(repo)
    root.append({"type": "agent", "script": "s", "agent": "a", "role": "coder", "forked_from": None})
    child = Session.create(repo)
    child.append({"type": "agent", "script": "s", "agent": "b", "role": "coder",
                  "forked_from": {"agent": "a", "session_id": root.id}})
    grandchild = Session.create(repo)
    grandchild.append({"type": "agent", "script": "s", "agent": "c", "role": "coder",
                       "forked_from": {"agent": "b", "session_id": child.id}})
    assert grandchild.lineage() == child.lineage() == root.lineage() == root.id
    with RecordingServer(one_run((200, completion()))) as server:
        run(repo, server, resume=grandchild.id)
    assert sent_keys(server) == [(root.id,) * 3]

"""Fast agent-loop checks on a random-weight model with the embedded tokenizer: the mechanics, not the choices."""

import json
from pathlib import Path

import pytest

from agentcache.agent import Agent
from agentcache.config import RunConfig
from agentcache.session import Session
from tests.agentcache.conftest import random_chat_backend

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "repo"


@pytest.fixture(scope="module")
def backend():
    return random_chat_backend()


def test_random_model_run_stays_warm_and_well_formed(backend, repo):
    session = Session.create(repo)
    config = RunConfig(max_turns=4, max_tokens=40, retries=10, cache_ttl="1h")
    outcome = Agent(repo, backend, config, session).run("Do it.")
    assert outcome.reason in {"max_turns", "finished", "answered"}
    records = [r for r in session.records() if r["type"] == "request"]
    assert len(records) == outcome.turns
    assert {r["cache_ttl"] for r in records} == {"1h"}  # what inspect prices cache writes with
    for previous, record in zip(records, records[1:]):
        assert record["usage"]["cached_tokens"] >= 0.9 * record["prefix_tokens"]
        assert record["layers"]["L1"] == previous["layers"]["L1"]
        assert record["layers"]["L2"] == previous["layers"]["L2"]
    for record in records:
        if record.get("error"):
            assert "JSON" in record["error"] or "cut off" in record["error"]
        else:
            assert record["tool_call"]["name"] in record["enabled_tools"] if record.get("tool_call") else \
                "answer" in json.loads(record["reply"])


def test_garbage_replies_end_with_a_clear_reason(backend, repo):
    session = Session.create(repo)
    config = RunConfig(max_turns=6, max_tokens=2, retries=1)  # two tokens can never close a JSON object
    outcome = Agent(repo, backend, config, session).run("Do it.")
    assert outcome.reason == "invalid_output" and outcome.turns == 2
    errors = [r["error"] for r in session.records() if r.get("error")]
    assert len(errors) == 2 and all("cut off" in e for e in errors)


@pytest.mark.parametrize("seed", range(6))
def test_look_first_makes_the_first_reply_a_tool_call(backend, repo, seed):
    """tool_choice "first": the first reply of a task is a call whatever the model would rather say; after a call,
    an answer is allowed again (the grammar, checked on the reply it let through)."""
    session = Session.create(repo)
    config = RunConfig(max_turns=1, max_tokens=200, retries=0, tool_choice="first", temperature=1.0)
    Agent(repo, backend, config, session).run(f"Do it {seed}.")
    first = next(r for r in session.records() if r["type"] == "request")
    assert first.get("tool_call") or (first.get("error") and "cut off" in first["error"])
    assert "answer" not in json.loads(first["reply"]) if not first.get("error") else True

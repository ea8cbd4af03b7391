"""`serve` reads Anthropic-style cache_control on messages as the pool's retention classes: up to the last 1h
breakpoint pinned-soft, up to the last breakpoint project, the rest turn; over HTTP, the pages keep those classes."""

from __future__ import annotations

import pytest

from agentcache.cache_dir import models_dir
from agentcache.serve.app import create_app
from agentcache.serve.chat import BadRequest, ChatService, retention_of
from engine import load_model
from engine.kv.block_manager import RETENTION
from tests.agentcache.http_helpers import http, uvicorn_running

LONG, SHORT = {"type": "ephemeral", "ttl": "1h"}, {"type": "ephemeral"}


def test_breakpoints_map_to_classes():
    raw = [{"role": "system", "content": "s", "cache_control": LONG}, {"role": "user", "content": "repo"},
           {"role": "user", "content": "more", "cache_control": SHORT}, {"role": "user", "content": "now"}]
    assert retention_of(raw, 0, 5) == ["pinned-soft", "project", "project", "turn", "turn"]
    assert retention_of(raw, 1, 6) == ["pinned-soft"] * 2 + ["project", "project", "turn", "turn"]  # tools ahead
    assert retention_of([{"role": "user", "content": "x"}], 0, 2) is None  # no hints: plain LRU
    with pytest.raises(BadRequest, match=r"messages\[0\]: cache_control must be"):
        retention_of([{"role": "user", "content": "x", "cache_control": {"type": "ephemeral", "ttl": "2h"}}], 0, 2)


def test_pages_over_http_keep_the_hinted_classes():
    service = ChatService(load_model("random-tiny-chat", cache_dir=models_dir()))
    system = "You answer questions about a small library. " * 30
    body = {"model": "random-tiny-chat", "max_tokens": 1,
            "messages": [{"role": "system", "content": system, "cache_control": LONG},
                         {"role": "user", "content": "Which module counts words? " * 10}]}
    with uvicorn_running(create_app(service)) as url:
        status, _ = http("POST", url + "/v1/chat/completions", body)
    assert status == 200
    classes = {RETENTION[p.retention] for p in service.engine.scheduler.kv.blocks.pages if p.hash != -1}
    assert classes == {"pinned-soft", "turn"}  # the system message's pages, then the user message's

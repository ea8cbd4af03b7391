"""`fleet status` against two real `agentcache serve` replicas on loopback (their counters checked against the
usage the clients got back), vLLM's exposition format, and a dead replica as one clear line."""

from __future__ import annotations

import json

import openai
import pytest

from agentcache.cli import main
from agentcache.errors import AgentcacheError
from agentcache.fleet.status import fleet_status, parse_metrics, replica_stats, total
from agentcache.cache_dir import models_dir
from agentcache.serve.app import create_app
from agentcache.serve.chat import ChatService
from engine import load_model
from tests.agentcache.http_helpers import free_port, uvicorn_running

VLLM_TEXT = """# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 4096.0
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 3072.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 5.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 2.0
vllm:prompt_tokens_total{engine="0",model_name="m"} 4100.0
vllm:prompt_tokens_cached_total{engine="0",model_name="m"} 3072.0
"""


def test_vllm_counters_are_summed_over_their_label_sets():
    samples = parse_metrics(VLLM_TEXT)
    assert total(samples, "vllm:request_success_total") == 7
    assert total(samples, "vllm:prefix_cache_hits_total") == 3072
    assert total(samples, "vllm:no_such_counter") is None


def test_status_adds_up_what_the_replicas_answered(capsys):
    system = {"role": "system", "content": "You answer questions about a small text-statistics library. " * 20}
    answered = []
    services = [ChatService(load_model("random-tiny-chat", cache_dir=models_dir())) for _ in range(2)]
    with uvicorn_running(create_app(services[0])) as first, uvicorn_running(create_app(services[1])) as second:
        for url, questions in ((first, 3), (second, 1)):
            client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
            for i in range(questions):
                answered.append((url, client.chat.completions.create(
                    model="random-tiny-chat", messages=[system, {"role": "user", "content": f"Question {i}?"}],
                    max_tokens=2, temperature=0).usage))
        report = fleet_status([first, second])
        with pytest.raises(SystemExit) as done:
            main(["fleet", "status", "--metrics", first, "--metrics", second, "--json"])
        assert done.value.code == 0
        printed = json.loads(capsys.readouterr().out)
    rows = {r["url"]: r for r in report["replicas"]}
    for url in (first, second):
        mine = [usage for served, usage in answered if served == url]
        assert rows[url]["kind"] == "agentcache" and rows[url]["requests"] == len(mine)
        assert rows[url]["hits"] == rows[url]["cached_tokens"] == sum(u.prompt_tokens_details.cached_tokens
                                                                      for u in mine)
        assert rows[url]["prompt_tokens"] == sum(u.prompt_tokens for u in mine)
        assert rows[url]["routed"] is None
    assert rows[first]["hits"] > 0 and rows[second]["hits"] == 0  # the first replica saw the system prompt again
    fleet = report["fleet"]
    assert fleet["hits"] == rows[first]["hits"] and fleet["requests"] == 4
    assert fleet["hit_rate"] == pytest.approx(fleet["hits"] / fleet["queries"])
    assert printed["fleet"] == fleet


def test_a_dead_replica_is_one_clear_line():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(AgentcacheError, match=rf"cannot read {url}/metrics \("):
        replica_stats(url)
    with pytest.raises(AgentcacheError, match="no replicas"):
        fleet_status([])

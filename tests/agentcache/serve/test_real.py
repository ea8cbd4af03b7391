"""`agentcache serve` on the real embedded model: the OpenAI SDK, cached tokens, and `agentcache run --backend
openai` against it giving the same per-turn cached tokens as `--backend local`."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from agentcache.cache_dir import models_dir
from agentcache.render import ChatRenderer
from agentcache.serve.app import create_app
from agentcache.serve.chat import ChatService
from engine import load_model
from tests.agentcache.http_helpers import free_port, http, uvicorn_running

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "repo"
MODEL = "smollm2-135m"
PAGE = 16
TASK = "List the Python files of this project, then read the main module."
pytestmark = pytest.mark.slow


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "agentcache.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_openai_sdk_gets_a_completion_and_the_engine_cached_count():
    service = ChatService(load_model(MODEL, cache_dir=models_dir()))
    tokenizer = service.model.tokenizer
    system = {"role": "system", "content": (EXAMPLE / "README.md").read_text() * 3}
    with uvicorn_running(create_app(service)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        first = client.chat.completions.create(model=MODEL, messages=[system, {"role": "user", "content": "Hi"}],
                                               max_tokens=8, temperature=0)
        assert first.object == "chat.completion" and first.choices[0].message.content.strip()
        assert first.usage.prompt_tokens_details.cached_tokens == 0
        before = service.engine.stats()["prefix_hit_tokens"]
        second_messages = [system, {"role": "user", "content": "What is this?"}]
        second = client.chat.completions.create(model=MODEL, messages=second_messages, max_tokens=8, temperature=0)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached > 0 and cached == service.engine.stats()["prefix_hit_tokens"] - before
    system_ids = [len(tokenizer.encode(s, add_special_tokens=False)) for s in ChatRenderer(tokenizer).segments([system])]
    assert cached == system_ids[0] // PAGE * PAGE  # the system message's full pages; the user message differs


def run_json(repo: Path, *extra: str) -> dict:
    proc = cli("run", TASK, "--repo", str(repo), "--max-turns", "2", "--max-tokens", "32",
               "--tools", "list_files,read_file,search", "--json", *extra)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def session_records(repo: Path, session_id: str) -> list[dict]:
    path = repo / ".agentcache" / "sessions" / f"{session_id}.jsonl"
    return [r for r in map(json.loads, path.read_text().splitlines()) if r.get("type") == "request"]


def test_run_against_serve_caches_like_the_local_backend(tmp_path):
    local_repo, remote_repo = tmp_path / "local", tmp_path / "remote"
    for repo in (local_repo, remote_repo):  # the OpenAI backend sends JSON-format messages: the local run does too
        shutil.copytree(EXAMPLE, repo)
        (repo / "agentcache.yaml").write_text("tool_format: json\n")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    server = subprocess.Popen([sys.executable, "-m", "agentcache.cli", "serve", "--port", str(port),
                               "--api-key", "k1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while http_ready(url) is False:
            assert server.poll() is None and time.monotonic() < deadline, "agentcache serve did not start"
            time.sleep(0.5)
        local = run_json(local_repo)
        remote = run_json(remote_repo, "--backend", "openai", "--base-url", url + "/v1", "--api-key", "k1")
        bad = cli("run", TASK, "--repo", str(remote_repo), "--backend", "openai", "--base-url", url + "/v1",
                  "--api-key", "wrong")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert [r["turn"] for r in remote["requests"]] == [r["turn"] for r in local["requests"]]
    assert len(local["requests"]) >= 2
    local_records = session_records(local_repo, local["session_id"])
    remote_records = session_records(remote_repo, remote["session_id"])
    assert {r["backend"] for r in local_records} == {"local"} and {r["backend"] for r in remote_records} == {"openai"}
    for l_req, r_req in zip(local["requests"], remote["requests"]):
        assert r_req["usage"]["prompt_tokens"] == l_req["usage"]["prompt_tokens"]
    # turn 1: the server context already prefilled L1+L2, so exactly its full pages are cached
    assert remote["requests"][0]["usage"]["cached_tokens"] == local_records[0]["prefix_tokens"] // PAGE * PAGE
    assert remote_records[0]["prefix_tokens"] == local_records[0]["prefix_tokens"]
    for l_req, r_req in list(zip(local["requests"], remote["requests"]))[1:]:
        assert abs(r_req["usage"]["cached_tokens"] - l_req["usage"]["cached_tokens"]) <= PAGE
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: ") and "rejected the API key (401)" in bad.stderr


def http_ready(url: str) -> bool:
    try:
        return http("GET", url + "/health", headers={"Authorization": "Bearer k1"})[0] == 200
    except OSError:
        return False


def test_a_salted_openai_backend_keeps_its_own_context_on_serve():
    """The backend creates its context under its salt (a context belongs to the salt that made it), so a salted
    session keeps sending only L3 after the context id, and no other tenant can see that context."""
    from agentcache.backends import GenSettings
    from agentcache.backends.openai import OpenAIBackend
    from tests.agentcache.backends.test_remote import ENABLED, SPECS, context_with_turns

    service = ChatService(load_model(MODEL, cache_dir=models_dir()))
    with uvicorn_running(create_app(service)) as url:
        backend = OpenAIBackend(url + "/v1", MODEL)
        settings = GenSettings(max_tokens=4, salt="tenant-a")
        first = backend.complete(context_with_turns(0), SPECS, ENABLED, settings)
        second = backend.complete(context_with_turns(1), SPECS, ENABLED, settings)
        [(_, context_id, tokens)] = backend._contexts.values()
        owner = http("GET", f"{url}/v1/contexts/{context_id}", headers={"X-Cache-Salt": "tenant-a"})[0]
        stranger = http("GET", f"{url}/v1/contexts/{context_id}")[0]
    assert backend.use_contexts and first.trace["context_tokens"] == second.trace["context_tokens"] == tokens > 0
    assert second.usage["cached_tokens"] >= tokens // PAGE * PAGE
    assert (owner, stranger) == (200, 404)


def test_a_streamed_reply_is_the_same_reply_with_its_first_token_timed():
    """`stream=True` against serve: the same greedy text and usage as the non-streamed request, its first token timed
    from the stream (before the whole reply ended)."""
    from agentcache.backends import GenSettings
    from agentcache.backends.openai import OpenAIBackend
    from tests.agentcache.backends.test_remote import ENABLED, SPECS, context_with_turns

    service = ChatService(load_model(MODEL, cache_dir=models_dir()))
    with uvicorn_running(create_app(service)) as url:
        settings = GenSettings(max_tokens=12, salt="stream-test")
        plain = OpenAIBackend(url + "/v1", MODEL, use_contexts=False).complete(context_with_turns(0), SPECS, ENABLED,
                                                                              settings)
        streamed = OpenAIBackend(url + "/v1", MODEL, use_contexts=False, stream=True).complete(
            context_with_turns(0), SPECS, ENABLED, settings)
    assert streamed.text == plain.text and streamed.finish_reason == plain.finish_reason
    assert streamed.usage["prompt_tokens"] == plain.usage["prompt_tokens"]
    assert streamed.usage["completion_tokens"] == plain.usage["completion_tokens"] > 1
    assert streamed.trace["timings_from"] == "stream"
    assert 0 < streamed.timings["ttft_s"] < streamed.timings["total_s"]

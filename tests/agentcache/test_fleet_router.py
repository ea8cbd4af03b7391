"""Two `agentcache serve` replicas behind the real vllm-router (consistent_hash), all real processes on loopback:
a session's requests stick to one replica, a fork follows its parent, different keys spread over both replicas,
`fleet status` adds up the replicas' own counters, and a replica that dies mid-run costs no session record."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentcache import PROMPTS_DIR as PROMPTS
from agentcache.backends import GenSettings
from agentcache.backends.openai import OpenAIBackend
from agentcache.fleet.status import fleet_status
from layers import ToolRegistry, UserInput, build_prefix
from tests.agentcache.http_helpers import free_port, http

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "repo"
ROUTER = ROOT / ".venv-router" / "bin" / "vllm-router"
MODEL = "random-tiny-chat"  # a random-weight model with SmolLM2's tokenizer: fast, and the routing is the test
pytestmark = pytest.mark.slow


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def wait_healthy(url: str, proc: subprocess.Popen, what: str, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if http("GET", url + "/health")[0] == 200:
                return
        except OSError:
            pass  # not listening yet
        assert proc.poll() is None, f"{what} exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}"
        assert time.monotonic() < deadline, f"{what} did not become healthy"
        time.sleep(0.3)


def start_replica() -> tuple[str, subprocess.Popen]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "agentcache.cli", "serve", "--model", MODEL, "--port", str(port)],
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc, "agentcache serve")
    return url, proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture()
def fleet():
    """Two replicas and the router in front of them: (router URL, router metrics URL, replicas {url: process})."""
    yield from two_replicas_behind_router()


def two_replicas_behind_router():
    """The `fleet` fixture's processes, for other modules' fixtures."""
    if not ROUTER.is_file():
        pytest.fail(f"vllm-router is not installed at {ROUTER.relative_to(ROOT)}; run: make router")
    replicas = dict(start_replica() for _ in range(2))
    port, metrics_port = free_port(), free_port()
    router = subprocess.Popen([str(ROUTER), "--host", "127.0.0.1", "--port", str(port), "--worker-urls",
                               *replicas, "--policy", "consistent_hash", "--prometheus-port", str(metrics_port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, router, "vllm-router", 60)
        yield url, f"http://127.0.0.1:{metrics_port}", replicas
    finally:
        for proc in [router, *replicas.values()]:
            stop(proc)


def backend(router: str) -> OpenAIBackend:
    return OpenAIBackend(router + "/v1", MODEL)


def ask(client: OpenAIBackend, key: str, question: str) -> str:
    """One request with routing key `key`: the replica that answered."""
    registry = ToolRegistry.from_dir(PROMPTS / "tools")
    context = build_prefix(EXAMPLE, PROMPTS, role="coder", tools=registry)
    context.append(UserInput(question).to_block())
    reply = client.complete(context, list(registry), set(registry.names()), GenSettings(max_tokens=4, routing_key=key))
    assert reply.routing_key == key and reply.replica is not None
    return reply.replica


def test_a_key_sticks_to_one_replica_and_different_keys_use_both(fleet):
    router, router_metrics, replicas = fleet
    client = backend(router)
    placed = {f"session-{i}": {ask(client, f"session-{i}", f"question {turn}") for turn in range(3)}
              for i in range(12)}
    assert all(len(served) == 1 for served in placed.values()), placed  # every key: one replica, three times
    placed_on = {key: served.pop() for key, served in placed.items()}
    assert set(placed_on.values()) == set(replicas)  # 12 keys on one replica alone: odds 1 in 2,048
    report = fleet_status(list(replicas), router_metrics)
    routed = {r["url"]: r["routed"] for r in report["replicas"]}
    # the router forwarded 36 chat requests and, per key, the creation of its L1+L2 context on its replica
    assert sum(routed.values()) == 36 + 12 and report["fleet"]["requests"] == 36
    for row in report["replicas"]:
        keys_here = sum(1 for served in placed_on.values() if served == row["url"])
        assert row["routed"] == row["requests"] + keys_here and row["requests"] == 3 * keys_here
        assert 0 < row["hits"] <= row["queries"]  # turns 2 and 3 of a key hit the replica that served turn 1


def trust(repo: Path) -> None:
    """What a user does to let the repo's agentcache.yaml name a remote backend (agentcache.trust)."""
    subprocess.run([sys.executable, "-m", "agentcache.cli", "trust", "--repo", str(repo)], check=True, env=env(),
                   capture_output=True, timeout=60)


def run_script(repo: Path, router: str) -> dict:
    (repo / "agentcache.yaml").write_text(f"backend: openai\nbase_url: {router}/v1\nmodel: {MODEL}\n"
                                          "tool_format: json\nmax_tokens: 16\n")
    trust(repo)
    script = repo / "fork.yaml"
    script.write_text("agents:\n  - name: reader\n    role: reviewer\n    max_turns: 2\nsteps:\n"
                      "  - run: reader\n    task: Read README.md.\n  - fork: reader\n    max_turns: 2\n    children:\n"
                      "      - name: a\n        instruction: Summarise it.\n"
                      "      - name: b\n        instruction: Name one file.\n")
    proc = subprocess.run([sys.executable, "-m", "agentcache.cli", "script", str(script), "--repo", str(repo),
                           "--json"], capture_output=True, text=True, env=env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def session_requests(repo: Path) -> dict[str, list[dict]]:
    sessions = {}
    for path in (repo / ".agentcache" / "sessions").glob("*.jsonl"):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        sessions[path.stem] = records
    return sessions


def test_forks_follow_their_parent_to_its_replica(fleet, tmp_path):
    router, _, replicas = fleet
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns(".agentcache"))
    run_script(repo, router)
    sessions = session_requests(repo)
    starts = {sid: next(r for r in records if r["type"] == "agent") for sid, records in sessions.items()}
    (parent,) = [sid for sid, start in starts.items() if start["forked_from"] is None]
    children = [sid for sid, start in starts.items() if start["forked_from"] is not None]
    assert len(children) == 2 and all(starts[c]["forked_from"]["session_id"] == parent for c in children)
    requests = [r for records in sessions.values() for r in records if r["type"] == "request"]
    assert len(requests) >= 3
    assert {r["routing_key"] for r in requests} == {parent}  # the lineage: the parent's session id
    assert len({r["replica"] for r in requests}) == 1 and requests[0]["replica"] in replicas


def test_a_replica_that_dies_mid_run_loses_no_session_record(fleet, tmp_path):
    router, _, replicas = fleet
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns(".agentcache"))
    (repo / "agentcache.yaml").write_text(f"backend: openai\nbase_url: {router}/v1\nmodel: {MODEL}\n"
                                          "tool_format: json\nmax_tokens: 16\ntool_choice: required\n")
    trust(repo)
    run = [sys.executable, "-m", "agentcache.cli", "run", "Read README.md.", "--repo", str(repo), "--json"]
    first = subprocess.run([*run, "--max-turns", "1"], capture_output=True, text=True, env=env(), timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    session_id = json.loads(first.stdout)["session_id"]
    path = repo / ".agentcache" / "sessions" / f"{session_id}.jsonl"
    before = path.read_text().splitlines()
    served = json.loads(before[-1])["replica"]
    stop(replicas[served])  # the replica holding this session's prefix goes away
    second = subprocess.run([*run, "--max-turns", "2", "--resume", session_id], capture_output=True, text=True,
                            env=env(), timeout=600)
    after = path.read_text().splitlines()
    assert after[: len(before)] == before  # nothing written before is lost or changed
    assert all(json.loads(line) for line in after)  # every line a whole record
    if second.returncode == 0:  # the router moved the session to the survivor
        (survivor,) = set(replicas) - {served}
        assert {json.loads(line).get("replica") for line in after[len(before):]} - {None} == {survivor}
    else:  # or the run stopped with one clear line
        assert second.returncode == 2
        lines = [line for line in second.stderr.splitlines() if not line.startswith("resume: verified")]
        assert lines[-1].startswith("error: ") and len(lines) == 1

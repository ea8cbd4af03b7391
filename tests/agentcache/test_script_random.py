"""Script mechanics on a random-weight model with the real tokenizer: forks, answer passing, limits, sessions, --json."""

import io
import json
import shutil
import textwrap
import threading
from pathlib import Path

import pytest

from agentcache.backends.local import LocalBackend, block_message
from agentcache.config import RunConfig
from agentcache.script_format import parse_script
from agentcache.script_report import script_report
from agentcache.script_run import ScriptRun
from agentcache.script_view import ScriptView, render_report
from agentcache.session import Session
from engine import Engine, load_model
from rich.console import Console
from layers import Block, Layer, build_prefix
from tests.agentcache.test_cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """\
agents:
  - {name: planner, role: planner, max_turns: 2, max_tokens: 40}
  - {name: worker, role: worker, max_turns: 2, max_tokens: 40}
steps:
  - run: planner
    task: Plan it.
  - parallel:
      - run: worker
        task: "Follow this plan: {{planner.answer}} Then stop."
      - fork: planner
        max_turns: 1
        children:
          - {name: a, instruction: First child.}
          - {name: b, instruction: Second child.}
          - {name: c, instruction: Third child.}
"""


@pytest.fixture(scope="module")
def backend():
    model = load_model("random-tiny-chat")
    return LocalBackend(model, Engine(model, capacity_bytes=64 << 20))


@pytest.fixture()
def repo(tmp_path):
    target = tmp_path / "repo"
    shutil.copytree(ROOT / "examples" / "repo", target)
    return target


@pytest.fixture(scope="module")
def ran(backend, tmp_path_factory):
    """SCRIPT run once in its own repo, with the plain view and the report printed to a string."""
    repo = tmp_path_factory.mktemp("ran") / "repo"
    shutil.copytree(ROOT / "examples" / "repo", repo)
    out = io.StringIO()
    console = Console(file=out, width=200, highlight=False)
    run = run_script(SCRIPT, repo, backend, ScriptView(console))
    report = script_report(run)
    render_report(report, console)
    return run, repo, report, out.getvalue()


def run_script(text: str, repo: Path, backend: LocalBackend, view: ScriptView | None = None) -> ScriptRun:
    on_event = view.on_event if view else lambda state, record: None
    run = ScriptRun(parse_script(textwrap.dedent(text), "test"), repo, backend, RunConfig(retries=5), on_event)
    run.run()
    return run


def records(repo: Path, session_id: str) -> list[dict]:
    return Session.open(repo, session_id).records()


def entry_block(entry: dict) -> Block:
    return Block(Layer.L3, entry["kind"], entry["key"], entry["text"].encode("utf-8"))


def final_context_hashes(repo: Path, role: str, session_records: list[dict]) -> list[str]:
    """The block hashes of an agent's final context, rebuilt from its role prefix and its session's L3 entries."""
    blocks = list(build_prefix(repo, role=role))
    blocks += [entry_block(e) for record in session_records for e in record.get("appended", [])]
    return [b.hash for b in blocks]


def test_fork_children_start_from_a_copy_of_the_parents_blocks_plus_one_instruction(ran):
    run, repo, _, _ = ran
    parent = final_context_hashes(repo, "planner", records(repo, run.states["planner"].session_id))
    for name, instruction in (("a", "First child."), ("b", "Second child."), ("c", "Third child.")):
        first = next(r for r in records(repo, run.states[name].session_id) if r["type"] == "request")
        hashes = [b["hash"] for b in first["blocks"]]
        assert hashes[:-1] == parent
        assert hashes[-1] == Block(Layer.L3, "user", "user", instruction.encode()).hash
        assert run.agents[name].context.blocks[: len(parent)] == run.agents["planner"].context.blocks


def test_the_parents_answer_is_substituted_into_the_task(ran):
    run, repo, _, _ = ran
    planner = records(repo, run.states["planner"].session_id)
    last = planner[-1]
    if last.get("tool_call", {}).get("name") == "finish":
        expected = last["tool_call"]["arguments"]["answer"]
    elif last.get("tool_call") is None and not last.get("error") and last["type"] == "request":
        expected = json.loads(last["reply"])["answer"]
    else:
        expected = f"(no answer: {run.states['planner'].outcome})"
    worker = records(repo, run.states["worker"].session_id)
    user = next(r for r in worker if r["type"] == "user")
    assert user["appended"][0]["text"] == f"Follow this plan: {expected} Then stop."


def test_forks_share_the_prefilled_prefix_and_the_plain_view_shows_each_agent(ran):
    run, repo, report, text = ran
    for name, state in run.states.items():
        assert f"[{name}] running (session {state.session_id})" in text
        assert f"[{name}] turn 1: prompt " in text
    assert f"prefill computed           {report['totals']['computed_tokens']} tokens" in text
    children = [a for a in report["agents"] if a["forked_from"] == "planner"]
    planner_last = [r for r in records(repo, run.states["planner"].session_id) if r["type"] == "request"][-1]
    page = planner_last["trace"]["page_size"]
    parent_prompt = planner_last["usage"]["prompt_tokens"]
    for child in children:  # each child's one request finds at least the parent's last prompt, in whole pages
        assert child["requests"] == 1
        assert child["cached_tokens"] >= (parent_prompt - 1) // page * page - page
        assert child["reusable_tokens"] >= (parent_prompt - 1) // page * page - page
    assert report["totals"]["shared_prefix_hit_rate"] >= 0.95


def test_script_limits_stop_every_agent(backend, repo):
    text = SCRIPT.replace("agents:", "limits: {max_turns: 3}\nagents:")
    run = run_script(text, repo, backend)
    requests = [r for s in run.states.values() for r in records(repo, s.session_id) if r["type"] == "request"]
    assert len(requests) <= 3
    assert sum(s.outcome == "script_limit" for s in run.states.values()) >= 2
    report = script_report(run)
    assert report["totals"]["requests"] == len(requests)


def test_local_backend_renders_and_counts_the_same_from_many_threads(backend, repo):
    prefix = list(build_prefix(repo, role="worker"))
    contexts = [prefix + [Block(Layer.L3, "user", "user", f"task {i} " .encode() * (i + 1))] for i in range(12)]
    messages = [[block_message(b) for b in blocks] for blocks in contexts]
    render = backend.model.tokenizer.apply_chat_template
    expected = [render(m, tokenize=False, add_generation_prompt=True) for m in messages]
    results: dict[int, str] = {}

    def work(i: int) -> None:
        for _ in range(3):
            results[i] = "".join(backend.renderer.segments(messages[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i in range(12)] == expected


def test_cli_json_report_has_agents_and_totals_and_each_session_inspects(repo, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SCRIPT, encoding="utf-8")
    result = run_cli("script", str(path), "--repo", str(repo), "--model", "random-tiny-chat", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {"script", "agents", "totals"}
    assert [a["name"] for a in report["agents"]] == ["planner", "worker", "a", "b", "c"]
    agent_keys = {"name", "role", "session_id", "turns", "outcome", "prompt_tokens", "cached_tokens",
                  "computed_tokens", "completion_tokens"}
    assert all(agent_keys <= set(a) for a in report["agents"])
    totals = report["totals"]
    assert {"prompt_tokens", "cached_tokens", "computed_tokens", "no_cache_computed_tokens", "hit_rate",
            "shared_prefix_hit_rate"} <= set(totals)
    usage = [r["usage"] for a in report["agents"] for r in records(repo, a["session_id"]) if r["type"] == "request"]
    for name in ("prompt_tokens", "cached_tokens", "computed_tokens", "completion_tokens"):
        assert totals[name] == sum(u[name] for u in usage)
    assert totals["no_cache_computed_tokens"] == sum(u["prompt_tokens"] for u in usage)
    assert totals["computed_tokens"] + totals["cached_tokens"] == totals["no_cache_computed_tokens"]
    assert totals["hit_rate"] == pytest.approx(totals["cached_tokens"] / totals["prompt_tokens"])
    inspected = run_cli("inspect", report["agents"][2]["session_id"], "--repo", str(repo), "--json")
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["totals"]["prompt_tokens"] == report["agents"][2]["prompt_tokens"]


def test_an_agent_that_fails_stops_with_an_error_and_the_script_goes_on(backend, repo):
    text = SCRIPT.replace("task: Plan it.", "task: '" + "overflow " * 2500 + "'")
    run = run_script(text, repo, backend)
    planner = run.states["planner"]
    assert planner.outcome == "error" and "exceeds the model window" in planner.error
    assert run.states["a"].outcome == "error"  # a fork of it inherits the oversized context
    worker = records(repo, run.states["worker"].session_id)
    user = next(r for r in worker if r["type"] == "user")
    assert user["appended"][0]["text"] == "Follow this plan: (no answer: error) Then stop."
    assert run.states["worker"].outcome in {"answered", "finished", "max_turns", "invalid_output"}

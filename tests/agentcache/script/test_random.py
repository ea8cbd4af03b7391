"""Script mechanics on a random-weight model with the real tokenizer: forks, answer passing, limits, sessions, --json."""

import io
import json
import re
import shutil
import textwrap
import threading
from pathlib import Path

import pytest
from rich.console import Console

from agentcache import PROMPTS_DIR
from agentcache.backends.local import LocalBackend
from agentcache.config import RunConfig
from agentcache.render import block_message
from agentcache.script.format import load_script, parse_script
from agentcache.script.report import script_report
from agentcache.script.run import AgentState, ScriptRun
from agentcache.script.view import ScriptView, render_report
from agentcache.session import Session
from engine import Engine
from layers import Block, Layer, build_prefix
from tests.agentcache.conftest import random_chat_backend
from tests.agentcache.test_cli import run_cli

ROOT = Path(__file__).resolve().parents[3]
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
    return random_chat_backend()


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
    blocks = list(build_prefix(repo, PROMPTS_DIR, role=role))
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
    prefix = list(build_prefix(repo, PROMPTS_DIR, role="worker"))
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
    text = SCRIPT.replace("task: Plan it.", "task: '" + "overflow " * 9000 + "'")  # past the 8k window
    run = run_script(text, repo, backend)
    planner = run.states["planner"]
    assert planner.outcome == "error" and "exceeds the model window" in planner.error
    assert run.states["a"].outcome == "error"  # a fork of it inherits the oversized context
    worker = records(repo, run.states["worker"].session_id)
    user = next(r for r in worker if r["type"] == "user")
    assert user["appended"][0]["text"] == "Follow this plan: (no answer: error) Then stop."
    assert run.states["worker"].outcome in {"answered", "finished", "max_turns", "invalid_output"}


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def requests_of(repo: Path, session_id: str) -> list[dict]:
    return [r for r in records(repo, session_id) if r["type"] == "request"]


def outcome_from(requests: list[dict], max_turns: int) -> str:
    """How an agent stopped, read from its session (retries=5, so two turns never end in invalid_output)."""
    last = requests[-1]
    if last.get("tool_call", {}).get("name") == "finish":
        return "finished"
    if last.get("tool_call") is None and not last.get("error"):
        return "answered"
    assert len(requests) == max_turns
    return "max_turns"


def table_rows(text: str) -> dict[str, list[str]]:
    """The body rows of a rendered agents table, by agent: name, the middle cells (from, state), turns..hit."""
    lines = [ANSI.sub("", line).strip() for line in text.splitlines()]
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["agent", "role"])
    rows = {}
    for line in lines[header + 1:]:
        cells = line.split()
        if len(cells) >= 7 and not set(line) <= set("─━ "):
            rows[cells[0]] = [cells[1], " ".join(cells[2:-4]), *cells[-4:]]
    return rows


def test_the_live_view_shows_one_row_per_agent_with_state_turns_and_hit_rate_from_the_sessions(backend, repo):
    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=True, color_system="standard")
    view = ScriptView(console)
    run = ScriptRun(parse_script(textwrap.dedent(SCRIPT), "test"), repo, backend, RunConfig(retries=5), view.on_event)
    with view.showing(run):
        run.run()
    shown = out.getvalue()
    assert "\x1b[2K" in shown and "[planner] running" not in shown  # redrawn live, not printed as event lines
    recorded = Console(file=io.StringIO(), width=160, record=True)
    recorded.print(view.table())
    rows = table_rows(recorded.export_text())
    assert table_rows(shown.split("\x1b[2K")[-1]) == rows  # the last frame drawn is the final table
    assert list(rows) == ["planner", "worker", "a", "b", "c"]
    for name, spec in run.script.agents.items():
        requests = requests_of(repo, run.states[name].session_id)
        prompt = sum(r["usage"]["prompt_tokens"] for r in requests)
        cached = sum(r["usage"]["cached_tokens"] for r in requests)
        state = outcome_from(requests, spec.max_turns)
        assert rows[name] == [spec.role, f"{spec.parent or ''} {state}".strip(), str(len(requests)), str(prompt),
                              str(cached), f"{100 * cached / prompt:.1f}%"]


def test_the_live_table_shows_error_text_as_it_is_not_as_markup():
    view = ScriptView(Console(file=io.StringIO()))
    view.states = [AgentState("a", "planner", None, state="done", outcome="error", error="tool said [/bold] [red]x")]
    recorded = Console(file=io.StringIO(), width=160, record=True)
    recorded.print(view.table())
    assert "error: tool said [/bold] [red]x" in recorded.export_text()


def spent_before_each(requests: list[dict]) -> list[int]:
    """Script tokens (computed + completion) spent by all requests issued before each one, in issue order."""
    spent, before = 0, []
    for r in sorted(requests, key=lambda r: r["trace"]["script_seq"]):
        before.append(spent)
        spent += r["usage"]["computed_tokens"] + r["usage"]["completion_tokens"]
    return before


def all_requests(run: ScriptRun, repo: Path) -> list[dict]:
    return [r for s in run.states.values() if s.session_id for r in requests_of(repo, s.session_id)]


def test_a_script_token_budget_of_one_token_allows_only_the_first_request(backend, repo):
    run = run_script(SCRIPT.replace("agents:", "limits: {token_budget: 1}\nagents:"), repo, backend)
    requests = all_requests(run, repo)
    assert len(requests) == 1 and requests[0]["turn"] == 1
    assert requests[0] in requests_of(repo, run.states["planner"].session_id)
    assert run.states["planner"].outcome in {"answered", "finished", "script_limit"}
    for name in ("worker", "a", "b", "c"):
        assert run.states[name].outcome == "script_limit" and run.states[name].turns == 0
    assert script_report(run)["totals"]["requests"] == 1


SEQUENTIAL = """\
agents:
  - {name: one, role: worker, max_turns: 2, max_tokens: 40}
  - {name: two, role: coder, max_turns: 2, max_tokens: 40}
  - {name: three, role: reviewer, max_turns: 2, max_tokens: 40}
steps:
  - run: one
    task: First.
  - run: two
    task: Second.
  - run: three
    task: Third.
"""


def test_a_script_token_budget_stops_agents_once_the_spent_tokens_reach_it(backend, tmp_path):
    """Run once with no budget, then with a budget the first two requests reach: no request starts after that."""
    def fresh_run(text: str, where: str) -> tuple[ScriptRun, Path]:
        target = tmp_path / where
        shutil.copytree(ROOT / "examples" / "repo", target)
        engine_backend = LocalBackend(backend.model, Engine(backend.model, capacity_bytes=64 << 20))
        return run_script(text, target, engine_backend), target

    free, free_repo = fresh_run(SEQUENTIAL, "free")
    unlimited = sorted(all_requests(free, free_repo), key=lambda r: r["trace"]["script_seq"])
    assert len(unlimited) >= 3
    budget = spent_before_each(unlimited)[2]  # reached by the first two requests exactly
    run, limited_repo = fresh_run(SEQUENTIAL.replace("agents:", f"limits: {{token_budget: {budget}}}\nagents:"),
                                  "limited")
    requests = all_requests(run, limited_repo)
    before = spent_before_each(requests)
    assert all(spent < budget for spent in before)  # every request started under the budget
    spent = sum(r["usage"]["computed_tokens"] + r["usage"]["completion_tokens"] for r in requests)
    assert spent >= budget and len(requests) == 2  # the same two requests as the free run, then nothing
    stopped = [s for s in run.states.values() if s.outcome == "script_limit"]
    assert stopped and run.states["three"].outcome == "script_limit" and run.states["three"].turns == 0
    assert run.limits.tokens == spent


def test_the_fanout_example_runs_end_to_end_and_its_totals_match_the_sessions(repo):
    result = run_cli("script", str(ROOT / "examples" / "scripts" / "fanout.yaml"), "--repo", str(repo),
                     "--model", "random-tiny-chat", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    script = load_script(ROOT / "examples" / "scripts" / "fanout.yaml")
    assert [a["name"] for a in report["agents"]] == list(script.agents)
    reader = report["agents"][0]
    per_agent = {a["name"]: requests_of(repo, a["session_id"]) for a in report["agents"]}
    for agent in report["agents"]:
        requests = per_agent[agent["name"]]
        first = records(repo, agent["session_id"])[0]
        assert first["type"] == "agent" and first["agent"] == agent["name"]
        if agent["name"] != "reader":
            assert agent["forked_from"] == "reader" and first["forked_from"]["session_id"] == reader["session_id"]
        assert agent["requests"] == len(requests) == agent["turns"]
        for name in ("prompt_tokens", "cached_tokens", "computed_tokens", "completion_tokens"):
            assert agent[name] == sum(r["usage"][name] for r in requests)
    everything = [r for requests in per_agent.values() for r in requests]
    totals = report["totals"]
    assert totals["requests"] == len(everything) >= 9
    assert sorted(r["trace"]["script_seq"] for r in everything) == list(range(len(everything)))
    for name in ("prompt_tokens", "cached_tokens", "computed_tokens", "completion_tokens"):
        assert totals[name] == sum(r["usage"][name] for r in everything)
    assert totals["no_cache_computed_tokens"] == sum(r["usage"]["prompt_tokens"] for r in everything)
    assert totals["hit_rate"] == pytest.approx(totals["cached_tokens"] / totals["prompt_tokens"])
    assert totals["computed_vs_no_cache"] == pytest.approx(totals["computed_tokens"] / totals["prompt_tokens"])
    tokens_spent = totals["computed_tokens"] + totals["completion_tokens"]
    assert tokens_spent <= 80000 and totals["requests"] <= 40  # the example's script limits

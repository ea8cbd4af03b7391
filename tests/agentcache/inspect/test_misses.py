"""`inspect --explain` / `--diff` on real sessions of the embedded model, with each miss cause planted on purpose.

The expected token position is computed independently: from the segments the backend really sent to the
engine (recorded live), tokenized here, not from the session file the explanation is rebuilt from.
"""

import json
from pathlib import Path

import pytest

from agentcache.agent import Agent
from agentcache.backends.local import LocalBackend
from agentcache.cache_dir import models_dir
from agentcache.cli import main
from agentcache.config import RunConfig
from agentcache.session import Session
from engine import Engine, Request, load_model
from layers import Block, Context, Layer

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "repo"
MAX_TOKENS = 6
POOL = 128 << 20


class RecordingBackend(LocalBackend):
    """The real local backend; also keeps the segments of every prompt it hands the engine."""

    def __init__(self, model, engine=None):
        super().__init__(model, engine or Engine(model, capacity_bytes=POOL))
        self.sent: list[list[str]] = []

    def complete(self, context, tools, enabled, settings):
        generate = self.engine.generate

        def recording(request, *args, **kwargs):
            self.sent.append(list(request.segments))
            return generate(request, *args, **kwargs)

        self.engine.generate = recording
        try:
            return super().complete(context, tools, enabled, settings)
        finally:
            del self.engine.generate


@pytest.fixture(scope="module")
def model():
    return load_model("smollm2-135m", cache_dir=models_dir())


@pytest.fixture(scope="module")
def shared(model):
    """One warm backend for the content-cause tests: each plants a change no other test makes."""
    return RecordingBackend(model)


def config(**changes) -> RunConfig:
    return RunConfig(max_turns=1, max_tokens=MAX_TOKENS, retries=10, **changes)


def first_turn(repo: Path, backend: LocalBackend) -> Session:
    session = Session.create(repo)
    Agent(repo, backend, config(), session).run("Where are words counted?")
    return session


def resumed(repo: Path, backend: LocalBackend, session: Session, **changes) -> Agent:
    agent = Agent(repo, backend, config(**changes), session)
    agent.resume()
    return agent


def replace_tools(agent: Agent, text: str) -> None:
    blocks = [Block(Layer.L1, "tools", "tools", text.encode()) if b.kind == "tools" else b for b in agent.context]
    agent.context = Context(blocks)


def tokens_of(backend: LocalBackend, segments: list[str]) -> tuple[list[int], list[int]]:
    parts = [backend.model.tokenizer.encode(s, add_special_tokens=False) for s in segments]
    return [t for p in parts for t in p], [len(p) for p in parts]


def first_difference(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def explain(capsys, repo: Path) -> list[dict]:
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", "--explain", "--json", "--repo", str(repo)])
    assert (exit_info.value.code or 0) == 0
    return json.loads(capsys.readouterr().out)["requests"]


def block_of_token(counts: list[int], position: int) -> int:
    total = 0
    for index, count in enumerate(counts):
        total += count
        if position < total:
            return index
    raise AssertionError("position past the prompt")


def check_content_miss(capsys, repo, backend, cause, layer, kind, key):
    entries = explain(capsys, repo)
    assert [e["miss"] is None for e in entries] == [True, False]
    miss = entries[1]["miss"]
    assert (miss["layer"], miss["kind"], miss["key"], miss["cause"]) == (layer, kind, key, cause)
    before, _ = tokens_of(backend, backend.sent[-2])
    after, _ = tokens_of(backend, backend.sent[-1])
    assert miss["token_position"] == first_difference(before, after)
    prompt_a, prompt_b = ("".join(s).encode() for s in backend.sent[-2:])
    assert miss["byte_offset"] == first_difference(list(prompt_a), list(prompt_b))
    assert miss["missed_tokens"] == entries[1]["reusable_tokens"] - entries[1]["cached_tokens"] > 0
    assert miss["prompt_rebuilt"] is True  # the rebuilt prompt has the logged per-segment token counts
    return miss


def test_edited_agents_md_is_content_changed_at_its_block(shared, repo, capsys):
    backend = shared
    session = first_turn(repo, backend)
    agents = repo / "AGENTS.md"
    agents.write_text(agents.read_text() + "\nAlways answer in one sentence.\n")
    resumed(repo, backend, session).run("And lines?")
    miss = check_content_miss(capsys, repo, backend, "content_changed", "L2", "doc", "AGENTS.md")
    assert miss["missed_prefill_s"] > 0
    assert "Always" in "".join(miss["tokens_after"])


def test_two_swapped_tools_are_reordered(shared, repo, capsys):
    backend = shared
    session = first_turn(repo, backend)
    agent = resumed(repo, backend, session)
    tools = json.loads(agent.context.layer(Layer.L1)[2].text)
    tools[0], tools[1] = tools[1], tools[0]
    replace_tools(agent, json.dumps(tools, sort_keys=True, separators=(",", ":")) + "\n")
    agent.run("And lines?")
    check_content_miss(capsys, repo, backend, "reordered", "L1", "tools", "tools")


def test_a_schema_with_other_key_order_is_bytes_only(shared, repo, capsys):
    backend = shared
    session = first_turn(repo, backend)
    agent = resumed(repo, backend, session)
    tools = json.loads(agent.context.layer(Layer.L1)[2].text)
    tools[0] = dict(reversed(list(tools[0].items())))
    replace_tools(agent, json.dumps(tools, separators=(",", ":")) + "\n")
    agent.run("And lines?")
    check_content_miss(capsys, repo, backend, "bytes_only", "L1", "tools", "tools")


def check_engine_miss(capsys, repo, backend, cause, stop_reason, ledger):
    entries = explain(capsys, repo)
    miss = entries[1]["miss"]
    assert entries[0]["miss"] is None and miss is not None and miss["cause"] == cause
    assert miss["ledger"] == ledger and miss["source"] == "engine"
    before, _ = tokens_of(backend, backend.sent[-2])
    after, counts = tokens_of(backend, backend.sent[-1])
    assert first_difference(before, after) >= entries[1]["reusable_tokens"]  # the content allowed it all
    raw = [json.loads(line) for line in next((repo / ".agentcache" / "sessions").glob("*.jsonl")).read_text().splitlines()]
    second = [r for r in raw if r["type"] == "request"][1]
    assert second["trace"]["stop_reason"] == stop_reason == miss["stop_reason"]  # the engine's own trace
    cached = second["usage"]["cached_tokens"]
    assert miss["token_position"] == cached == entries[1]["cached_tokens"]
    block = second["blocks"][block_of_token(counts, cached)]
    assert (miss["layer"], miss["kind"], miss["key"]) == (block["layer"], block["kind"], block["key"])


def test_another_salt_is_salt_or_model(shared, repo, capsys):
    backend = shared
    session = first_turn(repo, backend)
    resumed(repo, backend, session, salt="tenant-b").run("And lines?")
    check_engine_miss(capsys, repo, backend, "salt_or_model", "salt", "model_or_salt")


def test_a_small_pool_evicts_and_explain_says_so(model, repo, capsys):
    sizing = LocalBackend(model, Engine(model, capacity_bytes=POOL))
    prefix = sizing.count_tokens(Agent(repo, sizing, config(), Session(repo / "unused.jsonl")).context)
    pages = (prefix + 400) // sizing.engine.page_size  # room for one session's prompts, not for a second tenant
    backend = RecordingBackend(model, Engine(model, capacity_bytes=pages * sizing.engine.page_bytes))
    session = first_turn(repo, backend)
    for salt in ("other-1", "other-2", "other-3"):  # another tenant fills the pool
        backend.engine.generate(Request(backend.sent[-1], max_tokens=1, salt=salt))
    resumed(repo, backend, session).run("And lines?")
    check_engine_miss(capsys, repo, backend, "evicted", "evicted", "eviction")


def test_a_resume_on_an_engine_without_the_pages_is_a_restart(model, repo, capsys):
    backend = RecordingBackend(model)
    session = first_turn(repo, backend)
    backend.engine = Engine(model, capacity_bytes=POOL)  # as in a new process: an empty pool, no disk tier
    resumed(repo, backend, session).run("And lines?")
    check_engine_miss(capsys, repo, backend, "content_changed", "absent", "restart")


def test_a_cache_lost_with_no_record_saying_why_is_counted_unexplained(model, repo, capsys):
    backend = RecordingBackend(model)
    session = Session.create(repo)
    agent = Agent(repo, backend, config(), session)
    agent.run("Where are words counted?")
    backend.engine = Engine(model, capacity_bytes=POOL)  # the pool is lost behind the agent's back
    agent.run("And lines?")
    with pytest.raises(SystemExit):
        main(["inspect", "--explain", "--json", "--repo", str(repo)])
    view = json.loads(capsys.readouterr().out)
    assert view["requests"][1]["miss"]["ledger"] == "unexplained"
    assert view["ledger"]["unexplained"] == 1 and view["ledger"]["misses"] == 1
    assert view["ledger"]["causes"]["unexplained"]["tokens"] == view["requests"][1]["miss"]["missed_tokens"] > 0


def test_diff_of_two_sessions_lists_blocks_with_status_and_cause(shared, repo, capsys):
    backend = shared
    first = first_turn(repo, backend)
    (repo / "AGENTS.md").write_text("Short rules now.\n")
    second = first_turn(repo, backend)
    with pytest.raises(SystemExit):
        main(["inspect", "--diff", second.id, first.id, "--json", "--repo", str(repo)])
    entry = json.loads(capsys.readouterr().out)["diff"][0]
    assert entry["a"] == f"{first.id}:-1" and entry["b"] == f"{second.id}:1"
    status = {(b["kind"], b["key"]): b["status"] for b in entry["blocks"]}
    assert status[("doc", "AGENTS.md")] == "changed" and status[("tools", "tools")] == "same"
    assert entry["miss"]["key"] == "AGENTS.md" and entry["miss"]["cause"] == "content_changed"
    before, _ = tokens_of(backend, backend.sent[-2])
    after, _ = tokens_of(backend, backend.sent[-1])
    assert entry["miss"]["token_position"] == first_difference(before, after)

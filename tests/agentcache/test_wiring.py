"""The one wiring path: `run` and `script` take the engine's pool size and disk tier from agentcache.yaml, a script
agent asking for another backend is refused at its line, and the tool registry is loaded once per run."""

from pathlib import Path

import pytest

from agentcache import cache_dir, wiring
from agentcache.agent import Agent
from agentcache.config import RunConfig
from agentcache.script.format import ScriptError
from agentcache.session import Session
from layers import ToolRegistry
from tests.agentcache.conftest import random_chat_backend

SETTINGS = {"model": "random-tiny-chat", "max_turns": 1, "max_tokens": 8}
SCRIPT = """\
model: random-tiny-chat
agents:
  - {name: planner, role: planner, max_turns: 1, max_tokens: 8}
  - {name: worker, role: worker, max_turns: 1, max_tokens: 8}
steps:
  - run: planner
    task: Plan it.
  - run: worker
    task: "Follow: {{planner.answer}}"
"""


@pytest.fixture()
def kv(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_dir, "kv_dir", lambda: tmp_path / "kv")
    return tmp_path / "kv"


@pytest.fixture()
def engines(monkeypatch):
    """Every engine the wiring builds, as built (the real factory, only recorded)."""
    built = []
    real = wiring.local_engine

    def recorded(config):
        model, engine = real(config)
        built.append(engine)
        return model, engine

    monkeypatch.setattr(wiring, "local_engine", recorded)
    return built


@pytest.fixture()
def registry_loads(monkeypatch):
    """How many times a tool registry is read from its spec files."""
    loads = []
    real = ToolRegistry.from_dir.__func__

    def counted(cls, tools_dir):
        loads.append(tools_dir)
        return real(cls, tools_dir)

    monkeypatch.setattr(ToolRegistry, "from_dir", classmethod(counted))
    return loads


def write_config(repo: Path, text: str) -> None:
    (repo / "agentcache.yaml").write_text(text, encoding="utf-8")


def script_file(tmp_path: Path, text: str = SCRIPT) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def pool_pages(engine) -> int:
    return engine.stats()["pages_total"]


def test_run_takes_pool_size_and_disk_tier_from_config(repo, kv, engines):
    write_config(repo, "kv_capacity_mb: 3\ndisk_cache: true\n")
    wiring.run_task(repo, "Say hello.", SETTINGS, None, on_line=lambda _line: None)
    [engine] = engines
    assert pool_pages(engine) == (3 << 20) // engine.page_bytes
    assert list(kv.rglob("*.page"))


def test_run_without_disk_cache_in_config_writes_no_pages(repo, kv, engines):
    write_config(repo, "kv_capacity_mb: 2\ndisk_cache: false\n")
    wiring.run_task(repo, "Say hello.", SETTINGS, None, on_line=lambda _line: None)
    assert pool_pages(engines[0]) == (2 << 20) // engines[0].page_bytes
    assert not list(kv.rglob("*.page"))


def test_script_takes_pool_size_and_disk_tier_from_config(repo, kv, engines, tmp_path):
    write_config(repo, "kv_capacity_mb: 3\ndisk_cache: true\n")
    run = wiring.open_script_run(script_file(tmp_path), repo, None, lambda state, record: None)
    run.run()
    [engine] = engines
    assert pool_pages(engine) == (3 << 20) // engine.page_bytes
    assert list(kv.rglob("*.page"))


def test_script_without_disk_cache_in_config_writes_no_pages(repo, kv, engines, tmp_path):
    write_config(repo, "kv_capacity_mb: 4\ndisk_cache: false\n")
    wiring.open_script_run(script_file(tmp_path), repo, None, lambda state, record: None).run()
    assert pool_pages(engines[0]) == (4 << 20) // engines[0].page_bytes
    assert not list(kv.rglob("*.page"))


def test_script_agent_asking_for_another_backend_is_refused_at_its_line(repo, engines, tmp_path):
    text = SCRIPT.replace("{name: worker, role: worker,", "{name: worker, role: worker, backend: openai,")
    with pytest.raises(ScriptError) as refused:
        wiring.open_script_run(script_file(tmp_path, text), repo, None, lambda state, record: None)
    assert str(refused.value).startswith("s.yaml line 4: agent 'worker' asks for backend 'openai' but one backend "
                                         "serves the whole script ('local'")
    assert engines == []  # refused before any model is loaded


def test_script_agent_naming_the_config_backend_runs(repo, engines, tmp_path):
    text = SCRIPT.replace("{name: worker, role: worker,", "{name: worker, role: worker, backend: local,")
    write_config(repo, "kv_capacity_mb: 4\ndisk_cache: false\n")
    run = wiring.open_script_run(script_file(tmp_path, text), repo, None, lambda state, record: None)
    run.run()
    assert run.states["worker"].state == "done" and run.states["worker"].error is None


def test_run_loads_the_tool_registry_once(repo, kv, registry_loads):
    write_config(repo, "kv_capacity_mb: 4\n")
    wiring.run_task(repo, "Say hello.", {**SETTINGS, "max_turns": 2}, None, on_line=lambda _line: None)
    assert len(registry_loads) == 1


def test_script_loads_the_tool_registry_once_for_all_agents(repo, tmp_path, registry_loads):
    write_config(repo, "kv_capacity_mb: 4\ndisk_cache: false\n")
    run = wiring.open_script_run(script_file(tmp_path), repo, None, lambda state, record: None)
    run.run()
    assert len(run.agents) == 2
    assert len(registry_loads) == 1


def test_the_loop_asks_its_check_before_every_turn(repo):
    backend, config = random_chat_backend(), RunConfig(model="random-tiny-chat", max_turns=3, max_tokens=4)
    session, checks = Session.create(repo), []
    outcome = Agent(repo, backend, config, session).run("Say hello.", check=lambda: checks.append(1))
    requests = [r for r in session.records() if r.get("type") == "request"]
    assert len(checks) == len(requests) == outcome.turns


def test_the_loop_stops_with_the_reason_its_check_gives(repo):
    session = Session.create(repo)
    agent = Agent(repo, random_chat_backend(), RunConfig(model="random-tiny-chat"), session)
    outcome = agent.run("Say hello.", check=lambda: "script_limit")
    assert (outcome.reason, outcome.answer, outcome.turns) == ("script_limit", None, 0)
    assert not [r for r in session.records() if r.get("type") == "request"]


def test_run_with_a_draft_model_in_config_drafts_with_it(repo, kv, engines):
    write_config(repo, "draft_model: random-tiny-chat\nspeculate: draft\ndisk_cache: false\n")
    wiring.run_task(repo, "Say hello.", SETTINGS, None, on_line=lambda _line: None)
    [engine] = engines
    assert engine.drafter is not None and engine.drafter.engine.model.name == "random-tiny-chat"
    assert engine.stats()["drafted_tokens_total"] > 0
    assert engine.drafter.engine.stats()["requests"] > 0


def test_the_draft_model_is_the_configs_else_the_registrys_pair_under_draft_only():
    from agentcache.errors import AgentcacheError

    assert wiring.draft_model_name(RunConfig(model="qwen2.5-coder-1.5b", speculate="draft")) == "qwen2.5-coder-0.5b"
    assert wiring.draft_model_name(RunConfig()) == ""  # auto loads none unless asked
    assert wiring.draft_model_name(RunConfig(draft_model="smollm2-135m")) == "smollm2-135m"
    with pytest.raises(AgentcacheError, match="'smollm2-135m' has no pair in the registry: set draft_model"):
        wiring.draft_model_name(RunConfig(model="smollm2-135m", speculate="draft"))

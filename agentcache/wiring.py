"""The one factory: config -> model -> engine -> backend -> session -> agent, for `run`, `script` and `serve`; what
they print is agentcache.display's."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from agentcache import PROMPTS_DIR
from agentcache.agent import Agent
from agentcache.backends import Backend
from agentcache.config import BACKENDS, CONFIG_FILE, RunConfig, check_config, check_text, ignored_line, load_config
from agentcache.display import refill_cost_text, resume_line, run_request, turn_line
from agentcache.errors import AgentcacheError
from agentcache.records import requests_of
from agentcache.session import Session
from agentcache.terminal import inert
from layers import ToolRegistry
from layers.repo import open_repo

if TYPE_CHECKING:
    from agentcache.script.format import Script
    from agentcache.script.run import OnEvent, ScriptRun
    from engine import Engine, LoadedModel


def load_registry() -> ToolRegistry:
    """The tool specs of the shipped prompts: loaded once per run and handed to every agent."""
    return ToolRegistry.from_dir(PROMPTS_DIR / "tools")


def local_engine(config: RunConfig) -> tuple[LoadedModel, Engine]:
    """The config's model and an engine with its KV pool size, its draft model (draft_model_name) and, if
    `disk_cache`, the shared disk tier (a host tier on CUDA, the engine's default)."""
    from agentcache.cache_dir import kv_dir, models_dir
    from engine import Engine, load_model

    model = load_model(config.model, dtype=config.dtype, cache_dir=models_dir(), quant=config.quant)
    draft_name = draft_model_name(config)
    draft = load_model(draft_name, dtype=config.dtype, cache_dir=models_dir(), quant=config.quant) if draft_name else None
    disk_dir = kv_dir() if config.disk_cache else None
    return model, Engine(model, capacity_bytes=config.kv_capacity_mb << 20, disk_dir=disk_dir, draft=draft)


def draft_model_name(config: RunConfig) -> str:
    """The draft model the config asks for: `draft_model`, else under `speculate: draft` the registry's pair for the
    model; '' for none (a draft model is loaded only when asked for: on a 2-core CPU its guesses cost more than they
    save, docs/engine.md)."""
    from engine import registry

    if config.draft_model:
        return config.draft_model
    if config.speculate != "draft":
        return ""
    entry = registry.find(config.model)
    if entry is None or not entry.draft:
        raise AgentcacheError(f"speculate draft needs a draft model and '{config.model}' has no pair in the registry: "
                              "set draft_model in agentcache.yaml")
    return entry.draft


def build_backend(config: RunConfig, api_key: str | None) -> Backend:
    """The backend the config names (the openai backend's routing key comes with each request: Agent)."""
    if config.backend == "local":
        from agentcache.backends.local import LocalBackend

        return LocalBackend(*local_engine(config), tool_format=config.tool_format,
                            tool_choice=config.tool_choice, speculate=config.speculate)
    if config.backend == "openai":
        from agentcache.backends.openai import OpenAIBackend

        key = api_key or os.environ.get("OPENAI_API_KEY")
        return OpenAIBackend(config.base_url, config.model, key)
    if config.backend == "anthropic":
        from agentcache.backends.anthropic import AnthropicBackend

        if config.model == RunConfig().model:
            raise AgentcacheError("the anthropic backend needs --model with a Claude model id")
        return AnthropicBackend(config.model, api_key, config.base_url or None, config.cache_ttl)
    raise AgentcacheError(f"unknown backend '{config.backend}' (known: {', '.join(BACKENDS)})")


def repo_config(root: Path) -> RunConfig:
    """The repo's agentcache.yaml over the defaults; what an untrusted file could not set is said on stderr."""
    config, ignored = load_config(root)
    if ignored:
        print(ignored_line(ignored), file=sys.stderr)
    return config


def check_resumable(session: Session) -> None:
    """Refuse a session with a bad line before anything runs or is appended; a torn last line (a killed run) is
    only warned about and skipped, as inspect does."""
    _, bad = session.read()
    refused = next((line for line in bad if not line.torn), None)
    if refused is not None:
        raise AgentcacheError(f"cannot resume session {session.id}: line {refused.number} is not a valid record "
                              f"({refused.problem}); nothing was run or appended")
    for line in bad:
        print(inert(line.warning(session.id)), file=sys.stderr)


def run_task(repo: Path, task: str, overrides: dict[str, Any], resume: str | None,
             on_line: Callable[[str], Any], api_key: str | None = None) -> dict[str, Any]:
    root = open_repo(repo)
    config = repo_config(root)
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
    check_config(config)
    check_text("the task", task)
    if api_key is not None:
        check_text("the API key", api_key)
    session = Session.open(root, resume) if resume else Session.create(root)
    if resume:
        check_resumable(session)
    if resume and config.samples > 1:
        raise AgentcacheError("--samples cannot continue a session: resume it with one sample")
    backend = build_backend(config, api_key)
    if config.samples > 1:
        return sampled_task(root, task, backend, config, session, on_line)
    agent = Agent(root, backend, config, session, registry=load_registry())
    agent.on_turn = lambda record: on_line(turn_line(record, lambda tokens: refill_cost_text(agent, tokens)))
    if resume:
        session.end_at_line()
    if resume:
        agent.resume()
        on_line(resume_line(agent, session))
    outcome = agent.run(task)
    requests = requests_of(session.records())
    return {
        "session_id": session.id, "reason": outcome.reason, "answer": outcome.answer, "turns": outcome.turns,
        "context_id": agent.context.context_id,
        "prefix_tokens": requests[-1].prefix_tokens if requests else None,
        "requests": [run_request(r) for r in requests],
    }


def sampled_task(root: Path, task: str, backend: Backend, config: RunConfig, session: Session,
                 on_line: Callable[[str], Any]) -> dict[str, Any]:
    """`run --samples N`: the candidates and the pick (agentcache.samples); the summary is the pick's, under the run's
    own session, which holds the samples record."""
    from agentcache.samples import best_of

    outcome, pick = best_of(root, task, backend, config, session, load_registry(), config.samples, on_line)
    requests = requests_of(pick.session.records())
    return {
        "session_id": session.id, "reason": outcome.reason, "answer": outcome.answer, "turns": outcome.turns,
        "context_id": requests[-1].context_id if requests else None,
        "prefix_tokens": requests[-1].prefix_tokens if requests else None,
        "requests": [run_request(r) for r in requests], "samples": session.records()[-1],
    }


def open_script_run(path: Path, repo: Path, model: str | None, on_event: OnEvent) -> ScriptRun:
    """A run of the script at `path` in `repo`: one backend from the repo's config (its model: the flag, else the
    script's, else the config's) for all agents, one tool registry for the check and every agent."""
    from agentcache.script.format import load_script
    from agentcache.script.run import ScriptRun

    registry = load_registry()
    script = load_script(path, registry=registry)
    root = open_repo(repo)
    base = repo_config(root)
    base.model = model or script.model or base.model
    check_config(base)
    check_script_backends(script, base)
    return ScriptRun(script, root, build_backend(base, None), base, on_event, registry)


def check_script_backends(script: Script, base: RunConfig) -> None:
    """One backend serves the whole script: an agent that names another one is refused at its line."""
    from agentcache.script.format import ScriptError

    for spec in script.agents.values():
        if spec.backend is not None and spec.backend != base.backend:
            raise ScriptError(f"{script.source} line {spec.line}: agent '{spec.name}' asks for backend "
                              f"'{spec.backend}' but one backend serves the whole script ('{base.backend}', from "
                              f"{CONFIG_FILE} or the default): set 'backend' in {CONFIG_FILE} instead")

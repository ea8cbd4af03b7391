"""The one factory: config -> model -> engine -> backend -> session -> agent, for `run`, `script` and `serve`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from agentcache import PROMPTS_DIR
from agentcache.agent import Agent
from agentcache.backends import Backend
from agentcache.config import BACKENDS, CONFIG_FILE, RunConfig, check_config, check_text, ignored_line, load_config
from agentcache.errors import AgentcacheError
from agentcache.records import Compaction, Request, parse_record, requests_of
from agentcache.session import Session
from agentcache.terminal import inert
from layers import ToolRegistry
from layers.repo import open_repo

if TYPE_CHECKING:
    from agentcache.script.format import Script
    from agentcache.script.run import OnEvent, ScriptRun
    from engine import Engine, LoadedModel


RATE_MIN_TOKENS = 128


def load_registry() -> ToolRegistry:
    """The tool specs of the shipped prompts: loaded once per run and handed to every agent."""
    return ToolRegistry.from_dir(PROMPTS_DIR / "tools")


def local_engine(config: RunConfig) -> tuple[LoadedModel, Engine]:
    """The config's model and an engine with its KV pool size and, if `disk_cache`, the shared disk tier (a host
    tier on CUDA, the engine's default)."""
    from agentcache.cache_dir import kv_dir, models_dir
    from engine import Engine, load_model

    model = load_model(config.model, dtype=config.dtype, cache_dir=models_dir(), quant=config.quant)
    disk_dir = kv_dir() if config.disk_cache else None
    return model, Engine(model, capacity_bytes=config.kv_capacity_mb << 20, disk_dir=disk_dir)


def build_backend(config: RunConfig, api_key: str | None) -> Backend:
    """The backend the config names (the openai backend's routing key comes with each request: Agent)."""
    if config.backend == "local":
        from agentcache.backends.local import LocalBackend

        return LocalBackend(*local_engine(config), tool_format=config.tool_format,
                            tool_choice=config.tool_choice)
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


def resume_line(agent: Agent, session: Session) -> str:
    """The line `run --resume` prints before sending: the rebuilt request verified against the session's last one,
    or a warning naming what changed, with the tokens that will be prefilled again and what they cost."""
    check = agent.resume_check
    if check is None or check.blocks == 0:
        return f"resume: session {session.id} has no request yet"
    prompt = check.reusable_tokens + check.recompute_tokens
    if not check.problems:
        return (f"resume: verified against the last request of session {session.id}: {check.matched_blocks} of "
                f"{check.blocks} blocks and their tokens match; {check.reusable_tokens} of its {prompt} prompt "
                "tokens can be reused")
    return (f"warning: resume: {'; '.join(check.problems)}: {check.recompute_tokens} of the last request's {prompt} "
            f"prompt tokens will be prefilled again ({refill_cost_text(agent, check.recompute_tokens)})")


def refill_cost_text(agent: Agent, tokens: int) -> str:
    """What prefilling `tokens` again costs the agent's backend: USD at its prices, or seconds at the prefill rate
    its session measured (over its requests that computed at least RATE_MIN_TOKENS: a few tokens' time to first
    token is mostly fixed cost)."""
    from agentcache.inspect.cost import refill_cost
    from agentcache.inspect.explain import prefill_seconds_per_token

    requests = [r for r in requests_of(agent.session.records())
                if r.usage.computed_tokens >= RATE_MIN_TOKENS and prefill_seconds_per_token(r) is not None]
    seconds = sum(prefill_seconds_per_token(r) * r.usage.computed_tokens for r in requests)
    rate = seconds / sum(r.usage.computed_tokens for r in requests) if requests else None
    return refill_cost(tokens, agent.backend.name, agent.config.cache_ttl, rate)


def run_request(request: Request) -> dict[str, Any]:
    """One request of `run --json`: its usage, also flat, its TTFT and the tool it called (None for an answer)."""
    usage = request.usage
    return {"turn": request.turn, "usage": usage.to_json(), "prompt_tokens": usage.prompt_tokens,
            "cached_tokens": usage.cached_tokens, "computed_tokens": usage.computed_tokens,
            "ttft_s": request.ttft_s, "tool": request.tool}


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


def turn_line(record: dict, refill_cost: Callable[[int], str] | None = None) -> str:
    """The progress line of one record the agent's on_turn hands over (a line as written): a request's counts,
    TTFT and what it did; for a compaction, the warning of the tokens it makes the next request prefill again
    (what that costs, by `refill_cost`); "" for any other record (the user's task)."""
    request = parse_record(record)
    if isinstance(request, Compaction) and request.tokens_before is not None:
        again = (request.tokens_after or 0) - (request.kept_tokens or 0)
        cost = f" ({refill_cost(again)})" if refill_cost is not None else ""
        return (f"warning: compaction: {request.dropped} earlier entries replaced by the model's summary; the next "
                f"request prefills {again} tokens after the task again{cost}, and every later one is "
                f"{(request.tokens_before or 0) - (request.tokens_after or 0)} tokens shorter")
    if not isinstance(request, Request):
        return ""  # the user's task, an older compaction
    usage, call = request.usage, request.tool_call
    action = f"{call['name']} {json.dumps(call['arguments'], ensure_ascii=False)}" if call else request.reply or ""
    action = action.replace("\r", "\\r").replace("\n", "\\n")  # a reply's newlines cannot forge a turn line
    if request.error:
        action = f"invalid reply: {request.error}"
    if request.stopped:
        action = f"[{request.stopped}] {action}"
    if request.purpose:
        action = f"[{request.purpose}] {action}"
    disk = f" (disk {usage.disk_tokens})" if usage.disk_tokens else ""
    return (f"turn {request.turn}: prompt {usage.prompt_tokens}  cached {usage.cached_tokens}{disk}  "
            f"computed {usage.computed_tokens}  completion {usage.completion_tokens}  "
            f"ttft {request.ttft_s:.2f}s  -> {action[:160]}")


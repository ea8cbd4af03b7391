"""`agentcache run` wiring: config, model, backend and session into one agent run, summarised."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from agentcache.agent import Agent
from agentcache.config import load_config
from agentcache.session import Session
from layers.repo import open_repo


def run_task(repo: Path, task: str, overrides: dict[str, Any], resume: str | None,
             on_line: Callable[[str], Any]) -> dict[str, Any]:
    from agentcache.backends.local import LocalBackend
    from engine import load_model

    root = open_repo(repo)
    config = load_config(root)
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
    session = Session.open(root, resume) if resume else Session.create(root)
    backend = LocalBackend(load_model(config.model))
    agent = Agent(root, backend, config, session, on_turn=lambda record: on_line(turn_line(record)))
    previous_id = agent.resume() if resume else None
    if previous_id is not None and previous_id != agent.context.context_id:
        on_line(f"note: the prefix changed since session {session.id} (context id {previous_id[:12]} -> "
                f"{agent.context.context_id[:12]}); it will be recomputed")
    outcome = agent.run(task)
    requests = [r for r in session.records() if r.get("type") == "request"]
    return {
        "session_id": session.id, "reason": outcome.reason, "answer": outcome.answer, "turns": outcome.turns,
        "context_id": agent.context.context_id,
        "requests": [{"turn": r["turn"], "usage": r["usage"], "ttft_s": r["timings"]["ttft_s"]} for r in requests],
    }


def turn_line(record: dict) -> str:
    usage, timings = record.get("usage"), record.get("timings")
    if usage is None:
        return ""
    call = record.get("tool_call")
    action = f"{call['name']} {json.dumps(call['arguments'], ensure_ascii=False)}" if call else record.get("reply", "")
    if record.get("error"):
        action = f"invalid reply: {record['error']}"
    return (f"turn {record['turn']}: prompt {usage['prompt_tokens']}  cached {usage['cached_tokens']}  "
            f"computed {usage['computed_tokens']}  completion {usage['completion_tokens']}  "
            f"ttft {timings['ttft_s']:.2f}s  -> {action[:160]}")


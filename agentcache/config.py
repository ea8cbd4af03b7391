"""Run settings: defaults, overridden by the repo's `agentcache.yaml`, overridden by command-line flags."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from agentcache.errors import AgentcacheError

CONFIG_FILE = "agentcache.yaml"


@dataclass(slots=True)
class RunConfig:
    model: str = "smollm2-135m-instruct"
    role: str = "coder"
    max_turns: int = 8
    max_tokens: int = 256
    token_budget: int = 200_000
    allow_shell: bool = False
    tools: list[str] = field(default_factory=list)  # empty: every tool
    temperature: float = 0.0
    retries: int = 2
    backend: str = "local"  # local, openai or anthropic
    base_url: str = ""  # the openai backend's server, e.g. http://127.0.0.1:8000/v1
    cache_ttl: str = "5m"  # the anthropic backend's L1/L2 cache TTL: 5m or 1h
    salt: str = ""  # cache salt: requests with different salts never share KV pages
    kv_capacity_mb: int = 1024  # local engine KV pool size
    disk_cache: bool = True  # keep full KV pages on disk so the next run starts warm


def load_config(repo: Path) -> RunConfig:
    path = repo / CONFIG_FILE
    if not path.is_file():
        return RunConfig()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise AgentcacheError(f"{CONFIG_FILE}{where}: malformed YAML ({getattr(exc, 'problem', exc)})") from None
    return config_from(data or {})


def config_from(data: Any) -> RunConfig:
    if not isinstance(data, dict):
        raise AgentcacheError(f"{CONFIG_FILE}: expected a mapping of settings")
    config = RunConfig()
    known = {f.name: f for f in fields(RunConfig)}
    for key, value in data.items():
        if key not in known:
            raise AgentcacheError(f"{CONFIG_FILE}: unknown setting '{key}' (known: {', '.join(known)})")
        expected = type(getattr(config, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise AgentcacheError(f"{CONFIG_FILE}: '{key}' must be {expected.__name__}, got {type(value).__name__}")
        setattr(config, key, value)
    return config

"""agentcache: the harness (CLI, agent loop, tools, sessions, backends, inspect)."""

from importlib.resources import files
from pathlib import Path

PROMPTS_DIR = Path(str(files("agentcache") / "prompts"))  # system prompt, roles, tool specs: package data

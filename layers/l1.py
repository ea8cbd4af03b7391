"""L1 builder: system prompt, agent role and tool schemas as byte-stable blocks."""
from __future__ import annotations

import re
from pathlib import Path

from layers.block import Block, Layer
from layers.errors import PromptError
from layers.prompts import load_prompt
from layers.tools import ToolRegistry

ROLE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


def available_roles(prompts_dir: Path) -> list[str]:
    return sorted(p.stem for p in (prompts_dir / "roles").glob("*.md"))


def _role_path(prompts_dir: Path, role: str) -> Path:
    path = prompts_dir / "roles" / f"{role}.md"
    if not ROLE_NAME.fullmatch(role) or not path.is_file():
        known = ", ".join(available_roles(prompts_dir)) or "none"
        raise PromptError(f"unknown role '{role}' (available: {known})")
    return path


def build_l1(role: str, prompts_dir: Path, tools: ToolRegistry | None = None) -> list[Block]:
    """The L1 blocks for `role`, read from the caller's `prompts_dir` (the harness ships one as package data);
    `tools`: the registry the caller already loaded from `prompts_dir`/tools (loaded here when None)."""
    prompts_dir = Path(prompts_dir)
    if not prompts_dir.is_dir():
        raise PromptError(f"{prompts_dir}: prompts directory not found")
    system = load_prompt(prompts_dir / "system.md")
    role_prompt = load_prompt(_role_path(prompts_dir, role))
    tools = tools if tools is not None else ToolRegistry.from_dir(prompts_dir / "tools")
    return [
        Block(Layer.L1, "system", "system.md", system.body.encode("utf-8")),
        Block(Layer.L1, "role", f"roles/{role}.md", role_prompt.body.encode("utf-8")),
        Block(Layer.L1, "tools", "tools", tools.render().encode("utf-8")),
    ]

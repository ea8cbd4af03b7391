"""The cached prefix of a context: L1 for a role plus L2 for a repo."""
from __future__ import annotations

from pathlib import Path

from layers.context import Context
from layers.l1 import build_l1
from layers.l2 import L2Config, build_l2
from layers.tokens import TokenCounter
from layers.tools import ToolRegistry


def build_prefix(
    repo: Path | str,
    prompts_dir: Path,
    role: str = "coder",
    config: L2Config | None = None,
    counter: TokenCounter | None = None,
    tools: ToolRegistry | None = None,
) -> Context:
    return Context([*build_l1(role, prompts_dir, tools), *build_l2(repo, config, counter)])

"""What every tool shares: the outcome it returns (with the change a write made), the error it raises, and the Tool
record."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentcache.errors import AgentcacheError
from layers import ToolSpec

if TYPE_CHECKING:
    from agentcache.tools.workspace import Workspace


class ToolError(AgentcacheError):
    """A tool could not do what it was asked; the message goes back to the model."""


@dataclass(frozen=True, slots=True)
class Change:
    """What a write or edit replaced, enough to undo it: `after` now stands at `line` of `path` where `before` was
    (`before` is None for a file the write created)."""
    path: str
    line: int
    before: str | None
    after: str


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    output: str
    is_error: bool = False
    finished: bool = False
    answer: str | None = None
    change: Change | None = None


ToolFunction = Callable[["Workspace", dict[str, Any]], ToolOutcome]


@dataclass(frozen=True, slots=True)
class Tool:
    spec: ToolSpec
    function: ToolFunction

    @property
    def name(self) -> str:
        return self.spec.name

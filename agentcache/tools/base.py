"""What every tool shares: the outcome it returns, the error it raises, and the Tool record."""
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
class ToolOutcome:
    output: str
    is_error: bool = False
    finished: bool = False
    answer: str | None = None


ToolFunction = Callable[["Workspace", dict[str, Any]], ToolOutcome]


@dataclass(frozen=True, slots=True)
class Tool:
    spec: ToolSpec
    function: ToolFunction

    @property
    def name(self) -> str:
        return self.spec.name

"""agentcache.tools: the tools the agent loop runs (files, search, shell, finish), confined to the repo root."""
from agentcache.tools.base import Tool, ToolError, ToolOutcome
from agentcache.tools.toolbox import ToolBox, load_tools
from agentcache.tools.workspace import Workspace

__all__ = ["Tool", "ToolBox", "ToolError", "ToolOutcome", "Workspace", "load_tools"]

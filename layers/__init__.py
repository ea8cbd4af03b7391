"""layers: context assembly (L1/L2/L3 blocks, canonical bytes, hashes, lint, repo map); no torch, no engine."""
from layers.block import Block, Layer, chain_hash
from layers.canonical import canonical_json, normalize_text
from layers.context import Context
from layers.errors import (
    LayerOrderError,
    LayersError,
    PromptError,
    RepoError,
    TokenizerError,
    VolatileContentError,
)
from layers.l1 import available_roles, build_l1
from layers.l2 import L2Config, build_l2, fit_to_budget, render_tree
from layers.l3 import AssistantMessage, ToolCall, ToolResult, UserInput
from layers.lint import Finding, lint_blocks
from layers.outline import Symbol, defined_names, enclosing, outline, syntax_error
from layers.prefix import build_prefix
from layers.prompts import Prompt, load_prompt
from layers.repo import is_secret_name, list_files
from layers.repomap import MAP_TOKENS, lookup
from layers.tokens import FunctionCounter, TiktokenCounter, TokenCounter
from layers.tools import ToolRegistry, ToolSpec

__all__ = [
    "AssistantMessage", "Block", "Context", "Finding", "FunctionCounter",
    "L2Config", "Layer", "LayerOrderError", "LayersError", "MAP_TOKENS", "Prompt", "PromptError", "RepoError", "Symbol",
    "TiktokenCounter", "TokenCounter", "TokenizerError", "ToolCall", "ToolRegistry", "ToolResult",
    "ToolSpec", "UserInput", "VolatileContentError", "available_roles", "build_l1", "build_l2",
    "build_prefix", "canonical_json", "chain_hash", "defined_names", "enclosing", "fit_to_budget",
    "is_secret_name", "lint_blocks", "list_files", "load_prompt", "lookup", "normalize_text", "outline",
    "render_tree", "syntax_error",
]

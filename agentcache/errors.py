"""Errors the harness raises for bad input: one clear line each, all under AgentcacheError."""


class AgentcacheError(Exception):
    """Base for every user-facing harness error."""

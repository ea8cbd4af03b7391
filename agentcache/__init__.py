"""agentcache: the harness (CLI, agent loop, tools, sessions, backends, inspect)."""

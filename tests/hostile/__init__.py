"""Hostile-input tests: what an attacker or a careless user sends, across the harness, server and engine."""

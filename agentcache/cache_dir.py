"""Where agentcache keeps what outlives a process: $AGENTCACHE_CACHE_DIR when set, else the platform's user cache
dir; converted model weights under models/, KV pages under kv/. The engine is handed these paths."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cache_root() -> Path:
    env = os.environ.get("AGENTCACHE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("agentcache"))


def models_dir() -> Path:
    """Where the embedded model is kept once converted to safetensors."""
    return cache_root() / "models"


def kv_dir() -> Path:
    """The disk tier's KV pages, shared by every run and process."""
    return cache_root() / "kv"

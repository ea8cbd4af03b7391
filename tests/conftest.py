"""Every test gets its own empty cache root (so KV pages on disk never leak between tests or runs), sharing only
the converted model weights, which are the same for every test and slow to make."""

import os
from pathlib import Path

import platformdirs
import pytest


@pytest.fixture(autouse=True)
def own_cache_root(tmp_path_factory, monkeypatch):
    # the real cache root, as engine.model.cache_root finds it (not imported here: tests/layers run without torch)
    real = os.environ.get("AGENTCACHE_CACHE_DIR") or platformdirs.user_cache_dir("agentcache")
    models = Path(real).expanduser() / "models"
    models.mkdir(parents=True, exist_ok=True)
    root = Path(tmp_path_factory.mktemp("cache-root"))
    os.symlink(models, root / "models", target_is_directory=True)
    monkeypatch.setenv("AGENTCACHE_CACHE_DIR", str(root))
    return root

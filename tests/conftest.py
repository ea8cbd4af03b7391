"""Every test gets its own empty cache root (so KV pages on disk never leak between tests or runs), sharing only
the converted model weights, which are the same for every test and slow to make, and its own empty config dir (so
no test trusts a repo's agentcache.yaml by accident, or touches the user's)."""

import os
from pathlib import Path

import platformdirs
import pytest


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The real cache root's models/, as agentcache.cache_dir finds it (not imported here: tests/layers and
    tests/engine run without the harness). Engine tests pass it to load_model as the embedded model's cache_dir."""
    real = os.environ.get("AGENTCACHE_CACHE_DIR") or platformdirs.user_cache_dir("agentcache")
    models = Path(real).expanduser() / "models"
    models.mkdir(parents=True, exist_ok=True)
    return models


@pytest.fixture(autouse=True)
def own_cache_root(tmp_path_factory, monkeypatch, models_dir):
    root = Path(tmp_path_factory.mktemp("cache-root"))
    os.symlink(models_dir, root / "models", target_is_directory=True)
    monkeypatch.setenv("AGENTCACHE_CACHE_DIR", str(root))
    monkeypatch.setenv("AGENTCACHE_MODEL", "smollm2-135m")  # the fast tests' model; Qwen tests name theirs
    monkeypatch.setenv("AGENTCACHE_CONFIG_DIR", str(tmp_path_factory.mktemp("config-dir")))
    return root

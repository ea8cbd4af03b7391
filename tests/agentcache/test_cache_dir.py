"""The cache-root policy lives in the harness: $AGENTCACHE_CACHE_DIR, else the platform's user cache dir."""

from pathlib import Path

import platformdirs

from agentcache import cache_dir


def test_the_environment_names_the_cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTCACHE_CACHE_DIR", str(tmp_path / "root"))
    assert cache_dir.cache_root() == tmp_path / "root"
    assert (cache_dir.models_dir(), cache_dir.kv_dir()) == (tmp_path / "root" / "models", tmp_path / "root" / "kv")


def test_a_user_cache_dir_without_it(monkeypatch):
    monkeypatch.delenv("AGENTCACHE_CACHE_DIR")
    assert cache_dir.cache_root() == Path(platformdirs.user_cache_dir("agentcache"))


def test_a_home_relative_root_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AGENTCACHE_CACHE_DIR", "~/cache")
    assert cache_dir.kv_dir() == tmp_path / "cache" / "kv"

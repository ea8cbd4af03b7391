"""Fixtures the harness tests share: a fresh copy of the example repo per test."""

import shutil
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "repo"


@pytest.fixture()
def repo(tmp_path):
    target = tmp_path / "repo"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", ".agentcache"))
    return target


def random_chat_backend():
    """The agent loop's local backend on random weights with the embedded tokenizer: fast, mechanics only."""
    from agentcache.backends.local import LocalBackend
    from agentcache.cache_dir import models_dir
    from engine import Engine, load_model

    model = load_model("random-tiny-chat", cache_dir=models_dir())
    return LocalBackend(model, Engine(model, capacity_bytes=64 << 20))

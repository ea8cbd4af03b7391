"""`agentcache run` keeps KV pages on disk by default: the next run starts warm; --no-disk-cache turns it off."""

from pathlib import Path

import pytest

from agentcache import cache_dir
from agentcache.wiring import run_task

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "repo"
SETTINGS = {"model": "random-tiny-chat", "max_turns": 1, "max_tokens": 8}


@pytest.fixture()
def kv(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_dir, "kv_dir", lambda: tmp_path / "kv")
    return tmp_path / "kv"


def first_usage(summary: dict) -> dict:
    return summary["requests"][0]["usage"]


def test_second_run_starts_warm_from_disk(repo, kv):
    first = run_task(repo, "Say hello.", SETTINGS, None, on_line=lambda _line: None)
    assert first_usage(first)["disk_tokens"] == 0
    pages = list(kv.rglob("*.page"))
    assert pages
    lines: list[str] = []
    second = run_task(repo, "Say hello.", SETTINGS, None, on_line=lines.append)
    usage = first_usage(second)
    assert f"cached {usage['cached_tokens']} (disk {usage['disk_tokens']})" in next(line for line in lines if line.startswith("turn"))
    assert usage["prompt_tokens"] == first_usage(first)["prompt_tokens"]  # the same first prompt
    assert usage["disk_tokens"] == usage["cached_tokens"] == (usage["prompt_tokens"] - 1) // 16 * 16


def test_no_disk_cache_neither_reads_nor_writes(repo, kv):
    run_task(repo, "Say hello.", SETTINGS, None, on_line=lambda _line: None)
    files = sorted(kv.rglob("*.page"))
    off = run_task(repo, "Say hello.", {**SETTINGS, "disk_cache": False}, None, on_line=lambda _line: None)
    assert first_usage(off)["cached_tokens"] == 0
    assert sorted(kv.rglob("*.page")) == files

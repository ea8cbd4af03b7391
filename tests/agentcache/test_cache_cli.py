"""`agentcache cache stats|clear|prune` against page files counted independently on disk."""

import json
import os
import random
from pathlib import Path

import pytest

from agentcache.cli import main
from engine import Engine, Request, load_model

P = 16


def cache_cli(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as done:
        main(["cache", *args])
    assert done.value.code == 0
    return capsys.readouterr().out


def cache_json(capsys, *args: str) -> dict:
    return json.loads(cache_cli(capsys, *args, "--json"))


def on_disk(kv: Path) -> tuple[int, int]:
    """Page files and their bytes, walked without the package's code."""
    files = [Path(d) / n for d, _, names in os.walk(kv) for n in names if n.endswith(".page")]
    return len(files), sum(f.stat().st_size for f in files)


@pytest.fixture
def kv(tmp_path: Path) -> Path:
    kv = tmp_path / "kv"
    engine = Engine(load_model("random-tiny"), page_size=P, capacity_bytes=8 << 20, disk_dir=kv)
    rng = random.Random(0)
    for pages in (3, 5):
        engine.generate(Request([[rng.randrange(3, 512) for _ in range(pages * P + 1)]], max_tokens=1))
    return kv


def test_stats_counts_files_bytes_and_tokens(kv, capsys):
    files, size = on_disk(kv)
    assert files == 8
    report = cache_json(capsys, "stats", "--dir", str(kv))
    assert (report["files"], report["bytes"], report["tokens"]) == (files, size, files * P)
    assert report["bytes_per_token"] == pytest.approx(size / (files * P))
    [model] = report["models"]
    assert model["model"] == "random-tiny" and model["files"] == files
    table = cache_cli(capsys, "stats", "--dir", str(kv))
    assert "random-tiny" in table and str(size) in table


def test_prune_removes_unknown_and_damaged_files_then_applies_the_cap(kv, capsys):
    folder = next(p for p in kv.iterdir() if p.is_dir())
    (folder / "notes.txt").write_text("not a page")
    (folder / ".a.page.1.tmp").write_text("a writer at work")
    (folder / ".b.page.2.tmp").write_text("a writer that died")
    os.utime(folder / ".b.page.2.tmp", (1, 1))
    damaged = sorted(folder.glob("*.page"))[0]
    damaged.write_bytes(damaged.read_bytes()[:50])
    files, size = on_disk(kv)
    one = max(f.stat().st_size for f in folder.glob("*.page"))
    report = cache_json(capsys, "prune", "--dir", str(kv), "--max-bytes", str(4 * one))
    assert report["removed_unknown"] == 3
    left, left_bytes = on_disk(kv)
    assert left == 4 and left_bytes <= 4 * one and not (folder / "notes.txt").exists()
    assert (folder / ".a.page.1.tmp").exists() and not (folder / ".b.page.2.tmp").exists()
    assert (report["files"], report["bytes"]) == (left, left_bytes)
    assert report["removed_lru"] == files - 1 - left


def test_clear_deletes_the_kv_dir(kv, capsys):
    files, size = on_disk(kv)
    report = cache_json(capsys, "clear", "--dir", str(kv))
    assert (report["removed_files"], report["removed_bytes"]) == (files, size)
    assert not kv.exists()
    assert cache_json(capsys, "stats", "--dir", str(kv))["files"] == 0


def test_default_dir_follows_the_cache_root(kv, capsys, monkeypatch):
    monkeypatch.setenv("AGENTCACHE_CACHE_DIR", str(kv.parent))
    assert cache_json(capsys, "stats")["files"] == on_disk(kv)[0]

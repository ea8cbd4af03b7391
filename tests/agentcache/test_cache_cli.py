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


def test_prune_removes_damaged_pages_and_dead_temp_files_then_applies_the_cap(kv, capsys):
    folder = next(p for p in kv.iterdir() if p.is_dir())
    live, dead = folder / f".{'a' * 16}.page.1.1f.tmp", folder / f".{'b' * 16}.page.2.2f.tmp"
    live.write_text("a writer at work")
    dead.write_text("a writer that died")
    os.utime(dead, (1, 1))
    damaged = sorted(folder.glob("*.page"))[0]
    damaged.write_bytes(damaged.read_bytes()[:50])
    files, size = on_disk(kv)
    one = max(f.stat().st_size for f in folder.glob("*.page"))
    report = cache_json(capsys, "prune", "--dir", str(kv), "--max-bytes", str(4 * one))
    assert report["removed_damaged"] == 2
    left, left_bytes = on_disk(kv)
    assert left == 4 and left_bytes <= 4 * one and not damaged.exists()
    assert live.exists() and not dead.exists() and (folder / "model.json").exists()
    assert (report["files"], report["bytes"]) == (left, left_bytes)
    assert report["removed_lru"] == files - 1 - left


def test_clear_deletes_every_page_and_keeps_the_dir(kv, capsys):
    files, size = on_disk(kv)
    report = cache_json(capsys, "clear", "--dir", str(kv))
    assert (report["removed_files"], report["removed_bytes"]) == (files, size)
    assert kv.is_dir() and list(kv.iterdir()) == []
    assert cache_json(capsys, "stats", "--dir", str(kv))["files"] == 0


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes (None for folders), walked without the package's code."""
    out: dict[str, bytes | None] = {}
    for d, dirs, names in os.walk(root):
        out.update({os.path.join(d, n): None for n in dirs})
        out.update({os.path.join(d, n): Path(d, n).read_bytes() for n in names})
    return out


def plant_notes(kv: Path) -> Path:
    (kv / "notes.txt").write_text("mine")
    return kv


def plant_in_model_folder(kv: Path) -> Path:
    (next(p for p in kv.iterdir() if p.is_dir()) / "notes.txt").write_text("mine")
    return kv


def plant_other_folder(kv: Path) -> Path:
    (kv / "photos").mkdir()
    (kv / "photos" / "cat.page").write_text("not a page either")
    return kv


def plant_symlinked_folder(kv: Path) -> Path:
    elsewhere = kv.parent / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / f"{'c' * 16}.page").write_text("someone else's")
    (kv / ("d" * 32)).symlink_to(elsewhere, target_is_directory=True)
    return kv


def home_like(kv: Path) -> Path:
    """Not a KV dir at all: a folder of someone's files, one of them inside a subfolder."""
    home = kv.parent / "home"
    (home / "src").mkdir(parents=True)
    (home / "src" / "main.py").write_text("print('hi')")
    (home / "todo.txt").write_text("buy milk")
    return home


@pytest.mark.parametrize("plant", [plant_notes, plant_in_model_folder, plant_other_folder, plant_symlinked_folder,
                                   home_like])
@pytest.mark.parametrize("verb", [["clear"], ["prune", "--max-bytes", "0"]])
def test_clear_and_prune_refuse_a_dir_that_is_not_a_kv_cache(kv, capsys, plant, verb):
    damaged = sorted(kv.rglob("*.page"))[0]
    damaged.write_bytes(damaged.read_bytes()[:50])  # prune would delete it, were the dir accepted
    target = plant(kv)
    before = snapshot(kv.parent)
    with pytest.raises(SystemExit) as done:
        main(["cache", *verb, "--dir", str(target)])
    assert done.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert err.startswith("error: ") and "does not look like a KV cache directory" in err and "Traceback" not in err
    assert snapshot(kv.parent) == before


def test_clear_and_prune_of_a_missing_dir_do_nothing(tmp_path, capsys):
    missing = tmp_path / "missing"
    assert cache_json(capsys, "clear", "--dir", str(missing))["removed_files"] == 0
    assert cache_json(capsys, "prune", "--dir", str(missing))["files"] == 0
    assert not missing.exists()


def test_default_dir_follows_the_cache_root(kv, capsys, monkeypatch):
    monkeypatch.setenv("AGENTCACHE_CACHE_DIR", str(kv.parent))
    assert cache_json(capsys, "stats")["files"] == on_disk(kv)[0]

"""KV page files that are not regular files of their page's size (a FIFO, links, a 1 TiB sparse file, a directory,
a socket, cut or padded files) and kv dirs that are links or not directories: a real engine process refuses each
unread, recomputes, gives the cold run's output, heals what it safely can, and never hangs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import Engine, Request, load_model
from engine.kv.block_manager import chain_hashes, root_hash
from engine.kv.page_file import file_name
from tests.engine.conftest import reference_logits, rel_err
from tests.engine.kv.disk_helpers import as_tensor, check_page_file, page_paths, start_worker
from tests.hostile.test_state_dir import plant_socket

P = 16  # the worker's engine page size (the default)
PAGES = 4
WORKER_S = 300  # a worker loads the tiny model and sends one request: a hang fails here instead of blocking


@pytest.fixture(scope="module")
def tiny():
    return load_model("random-tiny")


def prompt(pages: int) -> list[int]:
    return [100 + (i * 37) % 400 for i in range(pages * P + 1)]


TOKENS = prompt(PAGES)


@pytest.fixture(scope="module")
def cold(tiny) -> torch.Tensor:
    return reference_logits(tiny, TOKENS)


def worker(kv: Path, tokens: list[int] = TOKENS, repeat: int = 1) -> tuple[list[dict], str]:
    proc = start_worker("random-tiny", kv, [tokens], "--repeat", str(repeat))
    try:
        out, err = proc.communicate(timeout=WORKER_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"the engine hung on {kv}") from None
    assert proc.returncode == 0, err
    return json.loads(out), err


def written(tiny, tmp_path: Path, tokens: list[int] = TOKENS) -> tuple[Path, list[Path]]:
    """A kv dir holding every page of the prompt, written by a real run, and the page paths in chain order."""
    kv = tmp_path / "kv"
    Engine(tiny, page_size=P, capacity_bytes=8 << 20, disk_dir=kv).generate(Request([tokens], max_tokens=1))
    hashes = chain_hashes(tokens, P, root_hash(tiny.fingerprint, None))
    paths = [kv / tiny.fingerprint / file_name(h) for h in hashes]
    assert all(p.is_file() for p in paths)
    return kv, paths


def outside_copy(path: Path) -> Path:
    target = path.parents[2] / "outside.page"
    target.write_bytes(path.read_bytes())
    return target


def fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def link_to_dev_zero(path: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")


def link_to_its_own_valid_copy_outside(path: Path) -> None:
    target = outside_copy(path)
    path.unlink()
    path.symlink_to(target)


def link_loop(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.name)


def sparse_terabyte(path: Path) -> None:
    with path.open("r+b") as f:  # the valid page, then a hole to 1 TiB
        f.truncate(1 << 40)


def truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def empty(path: Path) -> None:
    path.write_bytes(b"")


def one_byte_more(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"\0")


def directory(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "inside").write_text("x")


def unix_socket(path: Path) -> None:
    path.unlink()
    plant_socket(path)


DAMAGES = {  # name: (plant, reason reported, whether the engine can put a valid page back)
    "fifo": (fifo, "special", True),
    "link to /dev/zero": (link_to_dev_zero, "special", True),
    "link to its own valid copy outside": (link_to_its_own_valid_copy_outside, "special", True),
    "link loop": (link_loop, "special", True),
    "1 TiB sparse": (sparse_terabyte, "size", True),
    "one byte more": (one_byte_more, "size", True),
    "truncated": (truncated, "truncated", True),
    "empty": (empty, "truncated", True),
    "socket": (unix_socket, "special", True),
    "directory": (directory, "special", False),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_bad_page_file_is_refused_unread_recomputed_and_healed(tiny, cold, tmp_path, damage):
    plant, reason, heals = DAMAGES[damage]
    kv, paths = written(tiny, tmp_path)
    bad = paths[1]
    outside = tmp_path / "outside.page"
    plant(bad)
    outside_before = outside.read_bytes() if outside.exists() else None

    [first, second], _ = worker(kv, repeat=2)
    assert rel_err(as_tensor(first["logits"]), cold) <= 1e-4
    assert first["usage"]["disk_tokens"] == P  # page 0 loads; the bad page 1 ends the disk match
    assert first["trace"]["disk_rejected"] == [{"hash": bad.name.removesuffix(".page"), "reason": reason}]
    assert second["usage"]["cached_tokens"] == PAGES * P  # the device pool has them all now
    assert (outside.read_bytes() if outside.exists() else None) == outside_before  # a link's target is untouched

    if heals:
        assert not bad.is_symlink() and check_page_file(bad)["token_ids"] == TOKENS[P : 2 * P]
        [warm], _ = worker(kv)
        assert warm["usage"]["disk_tokens"] == PAGES * P and warm["trace"]["disk_rejected"] == []
        assert rel_err(as_tensor(warm["logits"]), cold) <= 1e-4
    else:  # a directory is never removed (that is not the engine's to do), only refused again
        assert bad.is_dir() and (bad / "inside").read_text() == "x"
        [again], _ = worker(kv)
        assert again["usage"]["disk_tokens"] == P and again["trace"]["disk_rejected"][0]["reason"] == "special"
        assert rel_err(as_tensor(again["logits"]), cold) <= 1e-4


def test_every_damage_at_once_after_the_first_page_is_healed_by_one_run(tiny, cold, tmp_path):
    """Pages past the first bad one are never loaded, only checked before they are written again: that check too
    reads nothing but regular files of the page's size."""
    tokens = prompt(len(DAMAGES) + 2)
    kv, paths = written(tiny, tmp_path, tokens)
    for path, (plant, _, _) in zip(paths[1:], DAMAGES.values()):
        plant(path)
    [healing], _ = worker(kv, tokens)
    assert healing["usage"]["disk_tokens"] == P
    assert rel_err(as_tensor(healing["logits"]), reference_logits(tiny, tokens)) <= 1e-4
    for i, (path, (_, _, heals)) in enumerate(zip(paths[1:], DAMAGES.values()), 1):
        if heals:
            assert check_page_file(path)["token_ids"] == tokens[i * P : (i + 1) * P], path
    assert len(page_paths(kv)) == len(paths) - 1  # all but the directory
    [warm], _ = worker(kv, tokens)
    assert warm["usage"]["disk_tokens"] == (1 + list(DAMAGES).index("directory")) * P


def warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "KV disk tier off" in line]


def kv_a_link_to_a_dir_outside(tiny, tmp_path: Path) -> Path:
    outside, _ = written(tiny, tmp_path / "elsewhere")
    kv = tmp_path / "kv"
    kv.symlink_to(outside, target_is_directory=True)
    return outside


def kv_a_file(tiny, tmp_path: Path) -> Path:
    (tmp_path / "kv").write_text("not a dir\n")
    return tmp_path / "kv"


def kv_a_fifo(tiny, tmp_path: Path) -> Path:
    os.mkfifo(tmp_path / "kv")
    return tmp_path / "kv"


def model_folder_a_link_outside(tiny, tmp_path: Path) -> Path:
    outside, _ = written(tiny, tmp_path / "elsewhere")
    kv = tmp_path / "kv"
    kv.mkdir()
    (kv / tiny.fingerprint).symlink_to(outside / tiny.fingerprint, target_is_directory=True)
    return outside


KV_DIRS = [kv_a_link_to_a_dir_outside, kv_a_file, kv_a_fifo, model_folder_a_link_outside]


def tree(path: Path) -> dict[str, tuple[int, int, bytes | None]]:
    """Every entry under path (or path itself when it is not a directory) with mode, mtime and bytes."""
    entries = [path] if not path.is_dir() else sorted(path.rglob("*"))
    return {str(p): (p.lstat().st_mode, p.lstat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
            for p in entries}


@pytest.mark.parametrize("plant", KV_DIRS, ids=lambda f: f.__name__)
def test_a_kv_dir_that_is_a_link_or_no_directory_turns_the_tier_off_with_one_warning(tiny, cold, tmp_path, plant):
    watched = plant(tiny, tmp_path)
    before = tree(watched)
    [result], err = worker(tmp_path / "kv")
    assert len(warning_lines(err)) == 1, err
    assert "not followed" in warning_lines(err)[0] or "not a directory" in warning_lines(err)[0], err
    assert result["usage"]["disk_tokens"] == 0  # valid pages behind a link are not read
    assert rel_err(as_tensor(result["logits"]), cold) <= 1e-4
    assert tree(watched) == before  # nothing written, touched or removed through the link


# --- the cache commands read page files the same way -------------------------------------------------------------

def run_cli(*args: str) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-m", "agentcache.cli", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=WORKER_S)


def test_cache_stats_and_prune_read_no_fifo_and_no_terabyte(tiny, tmp_path):
    kv, paths = written(tiny, tmp_path)
    sparse_terabyte(paths[0])
    truncated(paths[1])
    model_record = paths[0].parent / "model.json"
    model_record.unlink()
    os.mkfifo(model_record)
    stats = run_cli("cache", "stats", "--dir", str(kv), "--json")
    assert stats.returncode == 0 and "Traceback" not in stats.stderr, stats.stderr
    pruned = run_cli("cache", "prune", "--dir", str(kv))
    assert pruned.returncode == 2 and "nothing deleted" in pruned.stderr, pruned.stderr  # a FIFO is not ours
    model_record.unlink()
    pruned = run_cli("cache", "prune", "--dir", str(kv))
    assert pruned.returncode == 0, pruned.stderr
    assert sorted(page_paths(kv)) == sorted(paths[2:])
    link = tmp_path / "link"
    link.symlink_to(kv, target_is_directory=True)
    cleared = run_cli("cache", "clear", "--dir", str(link))
    assert cleared.returncode == 2 and "symbolic link" in cleared.stderr, cleared.stderr
    assert sorted(page_paths(kv)) == sorted(paths[2:])

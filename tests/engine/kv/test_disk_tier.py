"""The disk tier on the tiny random model: reuse across processes, damaged files, concurrent writers, errors, LRU."""

import dataclasses
import os
import random
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from engine import Engine, Request
from engine.kv.block_manager import chain_hashes, root_hash
from engine.kv.disk_dir import prune_damaged, prune_to
from engine.model import model_fingerprint, random_tiny_model, weights_digest_of
from engine.kv.page_file import file_name
from tests.engine.conftest import reference_logits, rel_err
from tests.engine.kv.disk_helpers import (as_tensor, check_page_file, finish, page_paths, run_worker,
                                      start_workers_ready)

P = 16


def prompt(seed: int, pages: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(100, 512) for _ in range(pages * P + 1)]  # 3-digit ids: equal-size headers


def engine(tiny, kv: Path, **kw) -> Engine:
    return Engine(tiny, page_size=P, capacity_bytes=8 << 20, disk_dir=kv, **kw)


def run(e: Engine, tokens: list[int]):
    return e.generate(Request([tokens], max_tokens=1, return_logits=True))


def test_second_process_reuses_prefix_from_disk(tiny, tmp_path):
    kv, tokens = tmp_path / "kv", prompt(1, 12)
    [first], _ = run_worker("random-tiny", kv, [tokens])
    assert first["usage"]["cached_tokens"] == 0
    assert len(page_paths(kv)) == 12
    [second], _ = run_worker("random-tiny", kv, [tokens[:-1] + [7, 8, 9]])
    assert second["usage"]["disk_tokens"] == second["usage"]["cached_tokens"] == 12 * P
    assert second["trace"]["tiers"] == {"device": 0, "host": 0, "disk": 12 * P}
    assert second["usage"]["computed_tokens"] == len(tokens) - 1 + 3 - 12 * P
    assert rel_err(as_tensor(second["logits"]), reference_logits(tiny, tokens[:-1] + [7, 8, 9])) <= 1e-4


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def plant_foreign(path: Path, tiny, tokens: list[int], kv: Path) -> None:
    """Overwrite the page with the same-position page of a different model (other weights, other fingerprint)."""
    weights = random_tiny_model(seed=1)
    other = dataclasses.replace(tiny, model=weights, fingerprint=model_fingerprint(weights_digest_of(weights),
                                                                                   tiny.dtype, None))
    run(engine(other, kv), tokens)
    (theirs,) = [p for p in page_paths(kv / other.fingerprint) if check_page_file(p)["token_ids"] ==
                 check_page_file(path)["token_ids"]]
    shutil.copyfile(theirs, path)


@pytest.mark.parametrize("damage,reason", [("flip", "checksum"), ("truncate", "truncated"), ("foreign", "foreign")])
def test_damaged_page_is_detected_deleted_recomputed_and_reported(tiny, tmp_path, damage, reason):
    kv, tokens, bad = tmp_path / "kv", prompt(2, 6), 3
    run(engine(tiny, kv), tokens)
    ours = kv / tiny.fingerprint
    by_tokens = {tuple(check_page_file(p)["token_ids"]): p for p in page_paths(ours)}
    path = by_tokens[tuple(tokens[bad * P : (bad + 1) * P])]
    {"flip": flip_byte, "truncate": truncate}.get(damage, lambda p: plant_foreign(p, tiny, tokens, kv))(path)
    result = run(engine(tiny, kv), tokens)
    assert result.trace.disk_rejected == [{"hash": path.name.removesuffix(".page"), "reason": reason}]
    assert result.usage.disk_tokens == bad * P and result.usage.computed_tokens == len(tokens) - bad * P
    assert rel_err(result.first_logits, reference_logits(tiny, tokens)) <= 1e-4
    assert check_page_file(path)["token_ids"] == tokens[bad * P : (bad + 1) * P]  # rewritten from the recompute
    again = run(engine(tiny, kv), tokens)
    assert again.usage.disk_tokens == 6 * P and again.trace.disk_rejected == []


def prune_until(stop: threading.Event, kv: Path, max_bytes: int, log: list) -> None:
    """What `agentcache cache prune` does, over and over: log (start, end) of each pass, or the error."""
    while not stop.is_set():
        started = time.time()
        try:
            prune_damaged(kv)
            prune_to(kv, max_bytes)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            log.append(exc)
            return
        log.append((started, time.time()))
        time.sleep(0.005)  # leave the CPU to the writers


def test_two_processes_writing_the_same_pages_during_a_prune_leave_a_consistent_cache(tiny, tmp_path):
    kv = tmp_path / "kv"
    prompts = [prompt(10 + i, 10) for i in range(8)]
    payload = 2 * 2 * 2 * P * 16 * 4  # layers * (k,v) * kv_heads * page * head_dim * fp32: just under a file
    stop, prunes = threading.Event(), []
    pruner = threading.Thread(target=prune_until, args=(stop, kv, 30 * payload, prunes))  # < 30 of 80 pages stay
    procs, go = start_workers_ready("random-tiny", kv, prompts, 2)
    pruner.start()
    go.touch()
    try:
        results = [finish(proc)[0] for proc in procs]
    finally:
        stop.set()
        pruner.join()
    assert not [e for e in prunes if isinstance(e, Exception)]
    spans = [(r[0]["started"], r[-1]["ended"]) for r in results]
    both_from, both_to = max(s for s, _ in spans), min(e for _, e in spans)
    assert both_from < both_to  # the two writers overlapped
    assert any(s < both_to and e > both_from for s, e in prunes)  # and a prune ran meanwhile
    for r in results:
        for tokens, one in zip(prompts, r):
            assert rel_err(as_tensor(one["logits"]), reference_logits(tiny, tokens)) <= 1e-4
    files = page_paths(kv)
    headers = [check_page_file(f) for f in files]  # every file left is whole and valid
    assert all(h["fingerprint"] == tiny.fingerprint for h in headers)
    assert [p for p in kv.rglob("*") if p.name.endswith(".tmp")] == []
    kept = {tuple(h["token_ids"]) for h in headers}
    fresh = engine(tiny, kv)
    for tokens in prompts:
        run_on_disk = next((i for i in range(10) if tuple(tokens[i * P : (i + 1) * P]) not in kept), 10)
        result = run(fresh, tokens)
        assert result.usage.disk_tokens == run_on_disk * P and result.trace.disk_rejected == []
        assert rel_err(result.first_logits, reference_logits(tiny, tokens)) <= 1e-4


def make_read_only(path: Path) -> list[str]:
    """chmod for users; for root (who ignores modes) the immutable flag. Returns the command that undoes it."""
    path.chmod(0o555)
    probe = path / "probe"
    try:
        probe.write_text("x")
    except OSError:
        return ["chmod", "755", str(path)]
    probe.unlink()
    subprocess.run(["chattr", "+i", str(path)], check=True)
    return ["chattr", "-i", str(path)]


def warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "KV disk tier off" in line]


def test_read_only_dir_degrades_to_no_disk_tier_with_one_warning(tiny, tmp_path):
    kv, tokens = tmp_path / "kv", prompt(3, 4)
    run_worker("random-tiny", kv, [tokens])  # creates the model folder and pages
    folder = kv / tiny.fingerprint
    undo = make_read_only(folder)
    try:
        results, err = run_worker("random-tiny", kv, [tokens, prompt(4, 4)], "--repeat", "2")
    finally:
        subprocess.run(undo, check=True)
    assert len(warning_lines(err)) == 1
    for r, tokens_sent in zip(results, [tokens, prompt(4, 4)] * 2):
        assert r["usage"]["disk_tokens"] == 0
        assert rel_err(as_tensor(r["logits"]), reference_logits(tiny, tokens_sent)) <= 1e-4
    assert results[2]["usage"]["cached_tokens"] == 4 * P  # the device pool still works


def test_full_disk_degrades_with_one_warning(tiny, tmp_path):
    kv, prompts = tmp_path / "kv", [prompt(5, 4), prompt(6, 4)]
    results, err = run_worker("random-tiny", kv, prompts, "--file-size-limit", "4096")  # a page file is ~8 KB
    assert len(warning_lines(err)) == 1
    assert [p for p in kv.rglob("*") if p.is_file() and p.name != "model.json"] == []
    for r, tokens in zip(results, prompts):
        assert rel_err(as_tensor(r["logits"]), reference_logits(tiny, tokens)) <= 1e-4


def test_size_cap_evicts_least_recently_used_pages(tiny, tmp_path):
    kv = tmp_path / "kv"
    a, b, c = prompt(7, 3), prompt(8, 3), prompt(9, 3)
    writer = engine(tiny, kv)
    run(writer, a)
    run(writer, b)
    size = page_paths(kv)[0].stat().st_size
    assert {p.stat().st_size for p in page_paths(kv)} == {size}
    capped = engine(tiny, kv, disk_bytes=6 * size)
    assert run(capped, a).usage.disk_tokens == 3 * P  # touches a's pages: b's are now the oldest
    run(capped, c)
    kept = {tuple(check_page_file(p)["token_ids"]) for p in page_paths(kv)}
    pages_of = lambda t: {tuple(t[i * P : (i + 1) * P]) for i in range(3)}  # noqa: E731
    assert kept == pages_of(a) | pages_of(c)


def test_a_page_saved_again_counts_as_recently_used(tiny, tmp_path):
    kv = tmp_path / "kv"
    a, b = prompt(11, 3), prompt(12, 3)
    writer = engine(tiny, kv)
    run(writer, a)
    run(writer, b)
    pages_of = lambda t: {tuple(t[i * P : (i + 1) * P]) for i in range(3)}  # noqa: E731
    for path in page_paths(kv):
        age = 1000 if tuple(check_page_file(path)["token_ids"]) in pages_of(a) else 2000  # a's pages the oldest
        os.utime(path, (age, age))
    # exactly 3 pages of a: 2 load from disk (at least one token is always computed), the 3rd is recomputed and
    # saved again over its existing file
    result = run(engine(tiny, kv), a[: 3 * P])
    assert result.usage.disk_tokens == 2 * P
    prune_to(kv, 3 * page_paths(kv)[0].stat().st_size)
    assert {tuple(check_page_file(p)["token_ids"]) for p in page_paths(kv)} == pages_of(a)


def test_a_match_that_stops_at_an_evicted_page_after_disk_pages_says_evicted(tiny, tmp_path):
    """Pages 0-2 come back from disk; page 3 was evicted from the pool and its file is gone: the trace says why."""
    kv, tokens = tmp_path / "kv", prompt(31, 6)
    e = Engine(tiny, page_size=P, capacity_bytes=7 * e_page_bytes(tiny), disk_dir=kv)
    run(e, tokens)
    run(e, prompt(32, 6))  # fills the 7-page pool: the first prompt's pages are evicted
    hashes = chain_hashes(tokens, P, root_hash(tiny.fingerprint, None))
    assert all(e.scheduler.kv.blocks.was_evicted(h) for h in hashes[:6])
    (kv / tiny.fingerprint / file_name(hashes[3])).unlink()
    again = run(e, tokens)
    assert again.usage.disk_tokens == again.usage.cached_tokens == 3 * P
    assert again.trace.stop_reason == "evicted"


def e_page_bytes(tiny) -> int:
    return Engine(tiny, page_size=P, capacity_bytes=1 << 20).page_bytes

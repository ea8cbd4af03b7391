"""The scheduler on tiny random models: batched decode equals solo, per-sequence features in a batch, a shared
prefix prefilled once, 32 agents on a pool too small for them, never-fitting requests fail alone, callers leading
in turn (an interrupted leader or follower loses nothing)."""

from __future__ import annotations

import ctypes
import gc
import os
import subprocess
import sys
import random
import signal
import threading
import warnings

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from engine import Engine, EngineCapacityError, LoadedModel, Request, SamplingParams
from engine.sequence import Cancelled
from tests.engine.scheduling import greedy_reference, run_together

P = 16
EOS = 2


def random_prompt(rng: random.Random, length: int) -> list[int]:
    return [rng.randrange(3, 512) for _ in range(length)]


def test_batched_greedy_equals_solo_and_uncached_reference(tiny):
    rng = random.Random(10)
    prompts = [random_prompt(rng, n) for n in (5, 17, 40, 96, 150, 33)]
    lengths = [20, 4, 13, 9, 20, 16]
    requests = [Request([p], max_tokens=n) for p, n in zip(prompts, lengths)]
    reference = [greedy_reference(tiny.model, p, n, {EOS}) for p, n in zip(prompts, lengths)]
    solo = [Engine(tiny, P, 8 << 20).generate(r).token_ids for r in requests]
    engine = Engine(tiny, P, 8 << 20, prefill_chunk=1 << 20)  # no chunk limit: all admitted in one loop turn
    batched = run_together(engine, requests)
    assert [r.token_ids for r in batched] == solo == reference
    stats = engine.stats()
    assert stats["decode_rows"] == sum(len(t) - 1 for t in reference)  # every token after the first is a batch row
    assert stats["decode_steps"] == max(len(t) for t in reference) - 1  # all rows step together
    for r in batched:
        t = r.timings
        assert 0 <= t.queue_s <= t.ttft_s <= t.total_s


def test_masks_stops_and_seeds_hold_per_sequence_in_a_batch(tiny):
    rng = random.Random(11)
    allowed = torch.zeros(512, dtype=torch.bool)
    allowed[[100, 200, 300]] = True
    prompts = [random_prompt(rng, n) for n in (30, 60, 45, 20)]
    plain = Engine(tiny, P, 8 << 20).generate(Request([prompts[1]], max_tokens=12)).token_ids
    requests = [
        Request([prompts[0]], max_tokens=10, logits_mask=lambda _ids: allowed),
        Request([prompts[1]], max_tokens=12, stop_token_ids=[plain[5]]),
        Request([prompts[2]], max_tokens=10, sampling=SamplingParams(temperature=0.9, top_p=0.9, seed=7)),
        Request([prompts[3]], max_tokens=10, sampling=SamplingParams(temperature=1.2, seed=3)),
    ]
    solo = [Engine(tiny, P, 8 << 20).generate(r) for r in requests]
    batched = run_together(Engine(tiny, P, 8 << 20), requests)
    assert [r.token_ids for r in batched] == [r.token_ids for r in solo]
    assert set(batched[0].token_ids) <= {100, 200, 300}
    assert batched[1].token_ids == plain[: plain.index(plain[5]) + 1] and batched[1].finish_reason == "stop"


def test_shared_prefix_from_8_threads_is_prefilled_once(tiny):
    """All 8 are queued at once (a first request holds the scheduler until they are), so each of them
    arrives before the shared prefix exists; only the first admitted computes it, the rest wait for its pages."""
    rng = random.Random(12)
    prefix = random_prompt(rng, 160)
    suffixes = [random_prompt(rng, rng.randrange(3, 12)) for _ in range(8)]
    blocker = random_prompt(rng, 5)
    engine = Engine(tiny, P, 8 << 20)
    out = run_together(engine, [Request([blocker], max_tokens=2)] +
                       [Request([prefix, suffix], max_tokens=6) for suffix in suffixes])
    results = dict(enumerate(out[1:]))
    computed = sum(results[i].usage.computed_tokens for i in range(8))
    assert computed == len(prefix) + sum(len(s) for s in suffixes)
    assert engine.stats()["prefix_hit_tokens"] == 7 * len(prefix)
    for i in range(8):
        assert results[i].token_ids == greedy_reference(tiny.model, prefix + suffixes[i], 6, {EOS})


def wide_kv_model() -> LoadedModel:
    """A random Llama whose KV is large per token (16 KiB) while its compute stays tiny."""
    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=8, head_dim=64, max_position_embeddings=1024,
                         bos_token_id=1, eos_token_id=EOS, pad_token_id=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        model = LlamaForCausalLM(config).eval()
    return LoadedModel("wide-kv-test", model, None, "wide-kv-test", torch.device("cpu"), torch.float32)


def memory_kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} missing")


def live_tensor_kib() -> int:
    """KiB of tensor storage reachable from Python objects, each storage counted once: what the engine keeps."""
    gc.collect()
    with warnings.catch_warnings():  # the isinstance check touches torch's deprecated aliases among the objects
        warnings.simplefilter("ignore", FutureWarning)
        tensors = [t for t in gc.get_objects() if isinstance(t, torch.Tensor)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values()) // 1024


def trimmed_rss_kib() -> int:
    """Resident memory after glibc hands freed heap memory back to the OS. Every thread that leads the scheduler
    gets its own malloc arena, whose free memory would otherwise count as growth; a leaked KV would not."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return memory_kib("VmRSS")


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def run_agents(engine: Engine, prompts: list[list[int]], max_tokens: int) -> list:
    results: list = [None] * len(prompts)
    barrier = threading.Barrier(len(prompts))

    def agent(i: int) -> None:
        barrier.wait()
        results[i] = engine.generate(Request([prompts[i]], max_tokens=max_tokens))

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


CHILD = "AGENTCACHE_MEMORY_TEST_CHILD"


def test_32_agents_on_a_pool_too_small_for_all_contexts():
    """Runs in a fresh process with glibc's malloc arenas capped: the arenas earlier tests and the leading threads
    left behind made resident memory vary by up to 70 MiB, which is noise, not the engine's memory."""
    if os.environ.get(CHILD) != "1":
        env = {**os.environ, CHILD: "1", "MALLOC_ARENA_MAX": "2"}
        test = f"{__file__}::test_32_agents_on_a_pool_too_small_for_all_contexts"
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
                              env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        return
    memory_of_32_agents()


def memory_of_32_agents():
    lm = wide_kv_model()
    rng = random.Random(13)
    waves = [[random_prompt(rng, rng.randrange(150, 250)) for _ in range(32)] for _ in range(3)]
    max_tokens = 6
    expected = [[greedy_reference(lm.model, p, max_tokens, {EOS}) for p in wave] for wave in waves[:2]]
    page_bytes = 4 * 2 * 8 * 64 * 4 * P  # layers * (k, v) * kv_heads * head_dim * fp32 * page
    pages = 120
    need = sum(-(-(len(p) + max_tokens) // P) for p in waves[0])
    assert need > 3 * pages  # the 32 contexts need over three pools
    gc.collect()
    before = memory_kib("VmRSS")
    reset_peak_rss()
    engine = Engine(lm, P, pages * page_bytes)
    assert engine.page_bytes == page_bytes
    results = [run_agents(engine, waves[0], max_tokens)]
    peak, after_first, tensors_first = memory_kib("VmHWM"), trimmed_rss_kib(), live_tensor_kib()
    results += [run_agents(engine, wave, max_tokens) for wave in waves[1:]]
    after_third, tensors_third = trimmed_rss_kib(), live_tensor_kib()

    assert [[r.token_ids for r in wave] for wave in results[:2]] == expected
    # allowance: activations, one layer's gathered KV, 32 threads, and the malloc arenas of the threads that led
    # the scheduler in turn (glibc gives each its own, up to 8 per core), each keeping a turn's freed activations
    pool_kib, allowance_kib = pages * page_bytes // 1024, 64 << 10
    assert peak - before <= pool_kib + allowance_kib, (peak - before, pool_kib)
    # 64 more requests must not leave their KV behind (16 KiB a token, about 200 MiB in all). Exactly: the live
    # tensors grow at most by the prefill workspace reaching the longest prompt. Coarsely, for memory Python
    # cannot see: resident memory grows by under half of that KV (the malloc arenas of the threads that led
    # in turn made it vary by up to 70 MiB here).
    later_kv_kib = sum(len(p) + max_tokens for wave in waves[1:] for p in wave) * 16
    longest_kib = max(len(p) for wave in waves for p in wave) * 16
    assert tensors_third - tensors_first <= longest_kib, (tensors_third - tensors_first, longest_kib)
    assert after_third - after_first <= later_kv_kib // 2, (after_third - after_first, later_kv_kib)

    flat = [r for wave in results for r in wave]
    prompts = [p for wave in waves for p in wave]
    stats = engine.stats()
    assert stats["requests"] == stats["prefix_queries"] == 96  # each matched once, however long it waited
    assert stats["prompt_tokens_total"] == stats["prefix_query_tokens"] == sum(map(len, prompts))
    assert stats["completion_tokens_total"] == sum(len(r.token_ids) for r in flat)
    assert stats["cached_tokens_total"] + stats["computed_tokens_total"] == stats["prompt_tokens_total"]
    assert stats["evictions"] > 0 and stats["pages_used"] == 0
    assert stats["pages_used"] + stats["pages_cached"] + stats["pages_free"] == pages


def test_request_that_can_never_fit_fails_alone(tiny):
    page_bytes = Engine(tiny, P, 1 << 20).page_bytes
    engine = Engine(tiny, P, 8 * page_bytes)
    small = [Request([list(range(10 + i, 50 + i))], max_tokens=6) for i in range(2)]
    huge = Request([list(range(3, 200))], max_tokens=4)
    results = run_together(engine, [small[0], huge, small[1]])
    assert isinstance(results[1], EngineCapacityError)
    assert "needs 13 new KV pages (201 tokens, 16 per page) but only 8 of 8" in str(results[1])
    for request, result in zip(small, (results[0], results[2])):
        assert result.token_ids == greedy_reference(tiny.model, request.segments[0], 6, {EOS})
    assert engine.stats()["pages_used"] == 0 and engine.stats()["requests"] == 2


class Interrupted(BaseException):
    """Stands in for a KeyboardInterrupt raised in the leading caller's thread."""


def test_a_lone_caller_computes_on_its_own_thread(tiny):
    """No engine thread: with nothing else running, the caller leads the scheduler, so its tokens are chosen on
    its own thread and no thread is left behind (on a CPU, a second thread running torch ops slows them all)."""
    engine = Engine(tiny, P, 8 << 20)
    threads_before = threading.active_count()
    seen: list[int] = []
    result = engine.generate(Request([list(range(3, 40))], max_tokens=4),
                             on_token=lambda _token, _text: seen.append(threading.get_ident()))
    assert len(result.token_ids) == 4 and seen == [threading.get_ident()] * 4
    assert threading.active_count() == threads_before


def test_an_interrupted_leader_frees_its_pages_and_hands_over(tiny):
    """The leader is interrupted in its own prefill while two others wait: it gets the interrupt, its pages are
    released, and a waiting caller takes over and finishes both."""
    rng = random.Random(14)
    prompts = [random_prompt(rng, n) for n in (40, 70, 25)]

    def interrupt(_ids: list[int]) -> None:
        raise Interrupted()

    requests = [Request([prompts[0]], max_tokens=5, logits_mask=interrupt)]
    requests += [Request([p], max_tokens=8) for p in prompts[1:]]
    engine = Engine(tiny, P, 8 << 20)
    results = run_together(engine, requests)
    assert isinstance(results[0], Interrupted)
    for prompt, result in zip(prompts[1:], results[1:]):
        assert result.token_ids == greedy_reference(tiny.model, prompt, 8, {EOS})
    stats = engine.stats()
    assert stats["requests"] == 2 and stats["pages_used"] == 0


def test_an_interrupted_follower_withdraws_its_request(tiny):
    """The main thread waits as a follower while another caller leads; an interrupt (a signal handler's
    exception, as Ctrl-C would raise) ends its wait, and its request leaves the queue unrun."""
    holding, release = threading.Event(), threading.Event()

    def hold(_ids: list[int]) -> None:
        holding.set()
        release.wait(timeout=60)

    engine = Engine(tiny, P, 8 << 20)
    results: list[object] = []
    prompt = list(range(3, 30))
    leader = threading.Thread(target=lambda: results.append(
        engine.generate(Request([prompt], max_tokens=3, logits_mask=hold))))
    leader.start()
    assert holding.wait(timeout=60)

    def interrupt(_signum: int, _frame: object) -> None:
        raise Interrupted()

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(Interrupted):
            engine.generate(Request([list(range(40, 90))], max_tokens=3))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert not engine.scheduler.waiting
    release.set()
    leader.join(timeout=60)
    assert len(results) == 1 and results[0].token_ids == greedy_reference(tiny.model, prompt, 3, {EOS})
    stats = engine.stats()
    assert stats["requests"] == 1 and stats["pages_used"] == 0


def test_a_cancelled_request_stops_at_the_next_turn_wherever_it_is_and_frees_its_pages(tiny):
    """Cancelled while queued, while its prompt is prefilled in chunks, and while it decodes: each raises
    Cancelled at the next loop turn with its pages released, and the request decoding beside them is exact."""
    rng = random.Random(15)
    steady, chunked, short = random_prompt(rng, 30), random_prompt(rng, 200), random_prompt(rng, 20)
    solo = Engine(tiny, P, 8 << 20).generate(Request([steady], max_tokens=30)).token_ids
    assert len(solo) == 30  # no early stop: it is still decoding while the others are cancelled
    engine = Engine(tiny, P, 8 << 20, prefill_chunk=16)
    queued, prefilling, decoding = threading.Event(), threading.Event(), threading.Event()
    queued.set()
    with pytest.raises(Cancelled):
        engine.generate(Request([short], max_tokens=5), cancel=queued)
    chunked_request, decoded, outcomes = Request([chunked], max_tokens=5), [], {}

    def run(name: str, request: Request, **kw: object) -> None:
        try:
            outcomes[name] = engine.generate(request, **kw)
        except Cancelled as error:
            outcomes[name] = error

    def count_then_cancel(_token: int, _text: str) -> None:
        decoded.append(_token)
        if len(decoded) == 3:
            decoding.set()

    threads = [threading.Thread(target=run, args=("chunked", chunked_request), kwargs={"cancel": prefilling}),
               threading.Thread(target=run, args=("decoding", Request([short], max_tokens=50)),
                                kwargs={"cancel": decoding, "on_token": count_then_cancel})]

    def steer(_token: int, _text: str) -> None:
        if not threads[0].is_alive() and "chunked" not in outcomes:
            for thread in threads:
                thread.start()
                while thread is threads[0] and not engine.scheduler.waiting:
                    pass
        seq = engine.scheduler.prefilling
        if seq is not None and seq.request is chunked_request and seq.prefilled >= 48:
            prefilling.set()

    result = engine.generate(Request([steady], max_tokens=30), on_token=steer)
    for thread in threads:
        thread.join(timeout=60)
    assert result.token_ids == solo
    assert isinstance(outcomes["chunked"], Cancelled) and isinstance(outcomes["decoding"], Cancelled)
    assert len(decoded) == 3  # no token after the one that cancelled it
    stats = engine.stats()
    assert stats["requests"] == 1 and stats["pages_used"] == 0
    assert not engine.scheduler.waiting and not engine.scheduler.running and engine.scheduler.prefilling is None

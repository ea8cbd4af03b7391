"""The runner on a tiny random model: warm equals cold, salts isolate, eviction stays correct, usage adds up."""

import random
import threading

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Engine, EngineCapacityError, Request, load_model
from tests.engine.conftest import reference_logits, rel_err

P = 16
vocab_ids = st.integers(min_value=3, max_value=511)


def lcp(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tokens=st.lists(vocab_ids, min_size=2, max_size=200), data=st.data())
def test_warm_logits_equal_cold(tiny, tokens, data):
    split = data.draw(st.integers(min_value=1, max_value=len(tokens) - 1))
    engine = Engine(tiny, page_size=P, capacity_bytes=8 << 20)
    engine.generate(Request([tokens[:split]], max_tokens=1))
    warm = engine.generate(Request([tokens[:split], tokens[split:]], max_tokens=1, return_logits=True))
    assert warm.usage.cached_tokens == min(split, len(tokens) - 1) // P * P
    assert rel_err(warm.first_logits, reference_logits(tiny, tokens)) <= 1e-4


def test_usage_matches_independent_prefix_count(tiny):
    rng = random.Random(1)
    engine = Engine(tiny, page_size=P, capacity_bytes=8 << 20)
    base = [rng.randrange(3, 512) for _ in range(120)]
    seen: list[list[int]] = []
    for _ in range(12):
        cut = rng.randrange(0, 120)
        prompt = base[:cut] + [rng.randrange(3, 512) for _ in range(rng.randrange(1, 60))]
        result = engine.generate(Request([prompt], max_tokens=rng.randrange(1, 6)))
        best = max((lcp(prompt, s) for s in seen), default=0)
        assert result.usage.cached_tokens == min(best, len(prompt) - 1) // P * P
        assert result.usage.computed_tokens == len(prompt) - result.usage.cached_tokens
        assert result.usage.completion_tokens == len(result.token_ids)
        seen.append(prompt + result.token_ids[:-1])  # the last sampled token has no KV yet


def test_salts_never_share_pages(tiny):
    engine = Engine(tiny, page_size=P, capacity_bytes=8 << 20)
    prompt = list(range(10, 110))
    engine.generate(Request([prompt], max_tokens=1, salt="tenant-a"))
    other = engine.generate(Request([prompt], max_tokens=1, salt="tenant-b"))
    assert other.usage.cached_tokens == 0 and other.trace.stop_reason == "salt"
    same = engine.generate(Request([prompt], max_tokens=1, salt="tenant-a"))
    assert same.usage.cached_tokens == 96


def test_eviction_keeps_results_correct_and_counters_add_up(tiny):
    rng = random.Random(2)
    page_bytes = 2 * 2 * 2 * P * 16 * 4  # layers * (k,v) * kv_heads * page * head_dim * fp32
    engine = Engine(tiny, page_size=P, capacity_bytes=24 * page_bytes)
    assert engine.page_bytes == page_bytes
    prefixes = [[rng.randrange(3, 512) for _ in range(160)] for _ in range(4)]
    total_prompt = total_cached = 0
    for _ in range(16):
        prompt = rng.choice(prefixes) + [rng.randrange(3, 512) for _ in range(8)]
        result = engine.generate(Request([prompt], max_tokens=2, return_logits=True))
        assert rel_err(result.first_logits, reference_logits(tiny, prompt)) <= 1e-4
        total_prompt += len(prompt)
        total_cached += result.usage.cached_tokens
    stats = engine.stats()
    assert stats["evictions"] > 0
    assert stats["prefix_query_tokens"] == total_prompt
    assert stats["prefix_hit_tokens"] == total_cached
    assert stats["prefix_hit_tokens"] + stats["computed_tokens_total"] == stats["prefix_query_tokens"]
    assert stats["prefix_queries"] == 16
    assert stats["pages_used"] == 0
    assert stats["pages_used"] + stats["pages_cached"] + stats["pages_free"] == stats["pages_total"] == 24


def test_request_too_big_for_pool_fails_cleanly(tiny):
    engine = Engine(tiny, page_size=P, capacity_bytes=4 * engine_page_bytes(tiny))
    engine.generate(Request([list(range(3, 40))], max_tokens=1))
    before = engine.stats()
    with pytest.raises(EngineCapacityError, match=r"needs 5 new KV pages \(100 tokens, 16 per page\) but only 2 of 4"):
        engine.generate(Request([list(range(3, 99))], max_tokens=4))
    assert engine.stats()["pages_used"] == 0
    assert engine.stats()["pages_cached"] == before["pages_cached"]
    ok = engine.generate(Request([list(range(3, 40))], max_tokens=1, return_logits=True))
    assert ok.usage.cached_tokens == 32
    assert rel_err(ok.first_logits, reference_logits(tiny, list(range(3, 40)))) <= 1e-4


def engine_page_bytes(loaded) -> int:
    return Engine(loaded, page_size=P, capacity_bytes=1 << 20).page_bytes


def test_concurrent_submissions_match_serial(tiny):
    rng = random.Random(3)
    prefix = [rng.randrange(3, 512) for _ in range(64)]
    prompts = [prefix + [rng.randrange(3, 512) for _ in range(10)] for _ in range(6)]
    serial = [Engine(tiny, page_size=P, capacity_bytes=8 << 20).generate(Request([p], max_tokens=8)).token_ids
              for p in prompts]
    engine = Engine(tiny, page_size=P, capacity_bytes=8 << 20)
    results: dict[int, list[int]] = {}

    def worker(i: int) -> None:
        results[i] = engine.generate(Request([prompts[i]], max_tokens=8)).token_ids

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(len(prompts))] == serial
    assert engine.stats()["cached_tokens_total"] >= 5 * 64


def test_streaming_and_stop_tokens(tiny):
    engine = Engine(tiny, page_size=P, capacity_bytes=8 << 20)
    prompt = list(range(20, 60))
    full = engine.generate(Request([prompt], max_tokens=6))
    streamed: list[int] = []
    engine.generate(Request([prompt], max_tokens=6), on_token=lambda tok, _text: streamed.append(tok))
    assert streamed == full.token_ids
    stop_at = full.token_ids[2]
    cut = engine.generate(Request([prompt], max_tokens=6, stop_token_ids=[stop_at]))
    assert cut.token_ids == full.token_ids[: full.token_ids.index(stop_at) + 1]
    assert cut.finish_reason == "stop" and full.finish_reason == "length"


def test_seeded_sampling_is_reproducible(tiny):
    from engine import SamplingParams

    engine = Engine(tiny, page_size=P, capacity_bytes=8 << 20)
    params = SamplingParams(temperature=0.9, top_p=0.9, seed=7)
    a = engine.generate(Request([list(range(5, 50))], max_tokens=10, sampling=params)).token_ids
    b = engine.generate(Request([list(range(5, 50))], max_tokens=10, sampling=params)).token_ids
    assert a == b


def test_logits_mask_restricts_choices(tiny):
    import torch

    engine = Engine(tiny, page_size=P, capacity_bytes=8 << 20)
    allowed = torch.zeros(512, dtype=torch.bool)
    allowed[[100, 200, 300]] = True
    result = engine.generate(Request([list(range(5, 50))], max_tokens=8, logits_mask=lambda _ids: allowed))
    assert set(result.token_ids) <= {100, 200, 300}


def test_streamed_text_is_the_result_text_with_split_characters_and_stop_strings(models_dir):
    """Tokens forced through a logits mask: a character split over several byte tokens is streamed whole, and the
    start of a stop string is held back until it is known not to be one."""
    chat = load_model("random-tiny-chat", cache_dir=models_dir)
    tokenizer = chat.tokenizer
    target = tokenizer.encode("é漢字 <EN or <END> tail", add_special_tokens=False)
    assert any("\ufffd" in tokenizer.decode(target[: i + 1]) for i in range(len(target)))  # a split character

    def forced(ids: list[int]) -> torch.Tensor:
        allowed = torch.zeros(chat.config.vocab_size, dtype=torch.bool)
        allowed[target[len(ids)]] = True
        return allowed

    engine = Engine(chat, page_size=P, capacity_bytes=8 << 20)
    chunks: list[str] = []
    result = engine.generate(Request(["Hello"], max_tokens=len(target), stop=["<END>"], logits_mask=forced),
                             on_token=lambda _tok, text: chunks.append(text))
    assert result.text == "é漢字 <EN or " and result.finish_reason == "stop"
    assert "".join(chunks) == result.text
    assert not any("\ufffd" in c for c in chunks)

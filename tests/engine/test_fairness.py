"""Chunked prefill: a long prompt arriving while another request decodes does not stall that decode, and its
logits and tokens equal an unchunked computation."""

from __future__ import annotations

import random
import threading
import time

import torch

from engine import Engine, Request
from tests.engine.conftest import reference_logits, rel_err

P = 16


def test_a_long_prefill_does_not_stall_a_running_decode(tiny):
    rng = random.Random(21)
    short = [rng.randrange(3, 512) for _ in range(20)]
    long = [rng.randrange(3, 512) for _ in range(640)]
    engine = Engine(tiny, P, 16 << 20, prefill_chunk=64)  # the long prompt takes 10 chunks
    short_times: list[float] = []
    long_times: list[float] = []
    first_short = threading.Event()
    results: dict[str, object] = {}

    def on_short(_token: int, _text: str) -> None:
        short_times.append(time.perf_counter())
        first_short.set()

    def run(name: str, request: Request, on_token) -> None:
        results[name] = engine.generate(request, on_token)

    no_eos = torch.ones(tiny.config.vocab_size, dtype=torch.bool)
    no_eos[list(tiny.eos_token_ids)] = False  # every request decodes to its limit
    requests = {"short": Request([short], max_tokens=6, logits_mask=lambda _ids: no_eos),
                "long": Request([long], max_tokens=2, logits_mask=lambda _ids: no_eos, return_logits=True)}
    a = threading.Thread(target=run, args=("short", requests["short"], on_short))
    a.start()
    assert first_short.wait(timeout=60)
    b = threading.Thread(target=run, args=("long", requests["long"],
                                           lambda _t, _x: long_times.append(time.perf_counter())))
    b.start()
    a.join()
    b.join()
    short_result, long_result = results["short"], results["long"]
    # five decode steps of the short request remained when the long one arrived; its 10 chunks each let one run
    assert len(short_times) == 6 and short_times[-1] < long_times[0], "the short request waited for the prefill"
    for name, result in results.items():
        alone = Engine(tiny, P, 16 << 20).generate(requests[name])  # unchunked, nothing else running
        assert result.token_ids == alone.token_ids
    assert rel_err(long_result.first_logits, reference_logits(tiny, long)) <= 1e-4
    assert long_result.usage.computed_tokens == len(long)


def test_a_prefill_alone_is_one_forward_and_its_pages_are_shared(tiny):
    rng = random.Random(22)
    prefix = [rng.randrange(3, 512) for _ in range(300)]
    engine = Engine(tiny, P, 16 << 20, prefill_chunk=64)
    first = engine.generate(Request([prefix, [7, 8, 9]], max_tokens=1))
    second = engine.generate(Request([prefix, [10, 11]], max_tokens=1, return_logits=True))
    assert first.usage.computed_tokens == len(prefix) + 3
    assert second.usage.cached_tokens == len(prefix) // P * P
    assert rel_err(second.first_logits, reference_logits(tiny, prefix + [10, 11])) <= 1e-4

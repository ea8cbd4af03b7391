"""Helpers for scheduler tests: submit requests so they provably decode as one batch; plain greedy reference."""

from __future__ import annotations

import threading
import time

import torch

from engine import Engine, Request, Result


def run_together(engine: Engine, requests: list[Request]) -> list[Result | BaseException]:
    """All requests from their own threads. The first one leads and holds the scheduler (in its logits mask) until
    the rest are queued, so all are admitted before the first decode step (when their prompts fit in one prefill
    chunk, or the engine's chunk is unlimited) and decode as one batch."""
    holding, queued = threading.Event(), threading.Event()
    own_mask = requests[0].logits_mask

    def hold(ids: list[int]):
        holding.set()
        queued.wait(timeout=60)
        return own_mask(ids) if own_mask else None

    first = Request(**{name: getattr(requests[0], name) for name in requests[0].__slots__})
    first.logits_mask = hold
    results: list[Result | BaseException | None] = [None] * len(requests)

    def worker(i: int, request: Request) -> None:
        try:
            results[i] = engine.generate(request)
        except BaseException as error:  # noqa: BLE001 - reported to the test
            results[i] = error

    threads = [threading.Thread(target=worker, args=(0, first))]
    threads[0].start()
    assert holding.wait(timeout=60)
    threads += [threading.Thread(target=worker, args=(i, r)) for i, r in enumerate(requests[1:], 1)]
    for t in threads[1:]:
        t.start()
    deadline = time.monotonic() + 60
    while len(engine.scheduler.waiting) < len(requests) - 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    queued.set()
    for t in threads:
        t.join()
    return results


def greedy_reference(model, prompt: list[int], max_tokens: int, stop_ids: set[int]) -> list[int]:
    """Greedy tokens from plain transformers, recomputing the whole sequence each step (no cache at all)."""
    out: list[int] = []
    with torch.inference_mode():
        while len(out) < max_tokens:
            logits = model(input_ids=torch.tensor([prompt + out]), use_cache=False).logits[0, -1]
            out.append(int(torch.argmax(logits)))
            if out[-1] in stop_ids:
                break
    return out

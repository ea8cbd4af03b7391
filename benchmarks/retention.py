"""Retention classes under pool pressure: the L1+L2 hit rate with retention classes against plain LRU.

Two teams share one engine: 16 sessions, 8 on each of two L1+L2 prefixes (L1 256 tokens, L2 768), 4 rounds; in a
round every session of the first prefix takes a turn, then every session of the second (a turn resends its L1+L2
and its own L3 so far, plus 128 new tokens, and gets a one-token reply). The pool holds about a quarter of all the
distinct tokens, so between two bursts of one team the other team's turns fill it. With classes (L1 pinned-soft, L2
project, L3 turn) the other team's turns evict L3 pages first; with plain LRU (no classes) they evict whatever was
used longest ago, which is the idle team's prefix.

l12_hit_rate: cached L1+L2 tokens / L1+L2 tokens over every request but each prefix's first (that one is cold
either way).

    python -m benchmarks.retention [--model smollm2-135m] [--json PATH]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agentcache.cache_dir import models_dir
from benchmarks.report import write_json
from engine import Engine, Request, load_model

L1, L2, L3_TURN = 256, 768, 128
SESSIONS_PER_PREFIX, ROUNDS = 8, 4
PAGE = 16
POOL_SHARE = 0.25  # the pool holds this share of all the distinct tokens the run sends


def run(model: Any, classes: bool, seed: int = 0) -> dict[str, Any]:
    rng = random.Random(seed)
    vocab = model.config.vocab_size

    def tokens(n: int) -> list[int]:
        return [rng.randrange(10, vocab) for _ in range(n)]

    prefixes = [(tokens(L1), tokens(L2)) for _ in range(2)]
    history: dict[tuple[int, int], list[int]] = {}
    distinct = 2 * (L1 + L2) + 2 * SESSIONS_PER_PREFIX * ROUNDS * L3_TURN
    probe = Engine(model, page_size=PAGE, capacity_bytes=1 << 20)
    pages = int(distinct * POOL_SHARE) // PAGE
    engine = Engine(model, page_size=PAGE, capacity_bytes=pages * probe.page_bytes)
    hit = asked = 0
    seen: set[int] = set()
    start = time.perf_counter()
    for _ in range(ROUNDS):
        for team, (l1, l2) in enumerate(prefixes):
            for session in range(SESSIONS_PER_PREFIX):
                l3 = history.setdefault((team, session), [])
                l3 += tokens(L3_TURN)
                retention = {"retention": ["pinned-soft", "project", "turn"]} if classes else {}
                result = engine.generate(Request([l1, l2, list(l3)], max_tokens=1, **retention))
                if team in seen:
                    hit += min(result.usage.cached_tokens, L1 + L2)
                    asked += L1 + L2
                seen.add(team)
    stats = engine.stats()
    return {"l12_hit_rate": hit / asked, "l12_cached_tokens": hit, "l12_tokens": asked,
            "evictions": stats["evictions"], "wall_s": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    console = Console(highlight=False)
    model = load_model(args.model, dtype="auto", cache_dir=models_dir())
    report = {"model": args.model, "sessions": 2 * SESSIONS_PER_PREFIX, "rounds": ROUNDS,
              "l1_tokens": L1, "l2_tokens": L2, "l3_tokens_per_turn": L3_TURN, "pool_share": POOL_SHARE,
              "lru": run(model, classes=False), "classes": run(model, classes=True)}
    table = Table("pool", "L1+L2 hit rate", "L1+L2 cached / asked", "evictions", "wall s",
                  title=f"retention: {report['sessions']} sessions on 2 prefixes, pool = {POOL_SHARE:.0%} of tokens")
    for name in ("lru", "classes"):
        r = report[name]
        table.add_row(name, f"{r['l12_hit_rate']:.3f}", f"{r['l12_cached_tokens']} / {r['l12_tokens']}",
                      str(r["evictions"]), f"{r['wall_s']:.1f}")
    console.print(table)
    write_json(args.json, report, console)
    return report


if __name__ == "__main__":
    main()

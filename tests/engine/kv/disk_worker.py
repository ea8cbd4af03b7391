"""A separate process for the disk tier tests: fresh engines over a shared KV dir, results as JSON on stdout.

    python -m tests.engine.kv.disk_worker MODEL DIR PROMPTS_JSON [--repeat N] [--file-size-limit BYTES]
                                       [--ready FILE --go FILE] [--models DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from engine import Engine, Request, load_model

GO_TIMEOUT_S = 300


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + GO_TIMEOUT_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"no {path} after {GO_TIMEOUT_S} s")
        time.sleep(0.001)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("dir", type=Path)
    parser.add_argument("prompts", type=Path, help="JSON list of token id lists, one request each")
    parser.add_argument("--repeat", type=int, default=1, help="send the prompts this many times")
    parser.add_argument("--file-size-limit", type=int, default=0, help="RLIMIT_FSIZE: writes past it fail")
    parser.add_argument("--ready", type=Path, help="create this file once the engine is built")
    parser.add_argument("--go", type=Path, help="then wait for this file before the first request")
    parser.add_argument("--models", type=Path, help="the cache_dir of the embedded model's converted weights")
    args = parser.parse_args()
    if args.file_size_limit:
        resource.setrlimit(resource.RLIMIT_FSIZE, (args.file_size_limit, args.file_size_limit))
    model = load_model(args.model, cache_dir=args.models)
    engine = Engine(model, capacity_bytes=256 << 20, disk_dir=args.dir)
    prompts = json.loads(args.prompts.read_text())
    if args.ready:
        args.ready.touch()
    if args.go:
        wait_for(args.go)
    results = []
    for _ in range(args.repeat):
        for prompt in prompts:
            started = time.time()
            r = engine.generate(Request([prompt], max_tokens=2, return_logits=True))
            results.append({"usage": r.usage.to_dict(), "trace": r.trace.to_dict(), "token_ids": r.token_ids,
                            "logits": r.first_logits.float().tolist(), "started": started, "ended": time.time()})
    print(json.dumps(results))


if __name__ == "__main__":
    main()

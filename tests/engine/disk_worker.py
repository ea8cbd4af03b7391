"""A separate process for the disk tier tests: fresh engines over a shared KV dir, results as JSON on stdout.

    python -m tests.engine.disk_worker MODEL DIR PROMPTS_JSON [--requests N] [--file-size-limit BYTES]
"""

from __future__ import annotations

import argparse
import json
import resource
from pathlib import Path

from engine import Engine, Request, load_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("dir", type=Path)
    parser.add_argument("prompts", type=Path, help="JSON list of token id lists, one request each")
    parser.add_argument("--repeat", type=int, default=1, help="send the prompts this many times")
    parser.add_argument("--file-size-limit", type=int, default=0, help="RLIMIT_FSIZE: writes past it fail")
    args = parser.parse_args()
    if args.file_size_limit:
        resource.setrlimit(resource.RLIMIT_FSIZE, (args.file_size_limit, args.file_size_limit))
    model = load_model(args.model)
    engine = Engine(model, capacity_bytes=256 << 20, disk_dir=args.dir)
    results = []
    for _ in range(args.repeat):
        for prompt in json.loads(args.prompts.read_text()):
            r = engine.generate(Request([prompt], max_tokens=2, return_logits=True))
            results.append({"usage": r.usage.to_dict(), "trace": r.trace.to_dict(), "token_ids": r.token_ids,
                            "logits": r.first_logits.float().tolist()})
    print(json.dumps(results))


if __name__ == "__main__":
    main()

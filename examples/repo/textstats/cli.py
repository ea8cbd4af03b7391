"""Command line: print statistics for a file or standard input."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from textstats.stats import compute_stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="textstats", description="Word statistics for a text file.")
    parser.add_argument("file", nargs="?", help="text file to read (default: standard input)")
    parser.add_argument("--top", type=int, default=5, help="how many frequent words to show")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    try:
        text = open(args.file, encoding="utf-8").read() if args.file else sys.stdin.read()
    except OSError as exc:
        print(f"error: {exc.strerror}: {args.file}", file=sys.stderr)
        return 2
    stats = compute_stats(text, args.top)
    if args.json:
        print(json.dumps(asdict(stats)))
        return 0
    print(f"words: {stats.words}")
    print(f"unique words: {stats.unique_words}")
    print(f"sentences: {stats.sentences}")
    print(f"average word length: {stats.average_word_length}")
    for word, count in stats.top_words:
        print(f"  {count:4d}  {word}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

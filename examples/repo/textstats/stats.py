"""Counting statistics over the words of a text."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from textstats.words import split_sentences, words


@dataclass(frozen=True)
class TextStats:
    words: int
    unique_words: int
    sentences: int
    average_word_length: float
    top_words: list[tuple[str, int]]


def top_words(tokens: list[str], n: int) -> list[tuple[str, int]]:
    counts = Counter(tokens)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:n]


def compute_stats(text: str, top: int = 5) -> TextStats:
    tokens = words(text)
    average = sum(map(len, tokens)) / len(tokens) if tokens else 0.0
    return TextStats(
        words=len(tokens),
        unique_words=len(set(tokens)),
        sentences=len(split_sentences(text)),
        average_word_length=round(average, 2),
        top_words=top_words(tokens, top),
    )

"""Splitting text into words and sentences."""
from __future__ import annotations

import re

WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def words(text: str, lower: bool = True) -> list[str]:
    found = WORD.findall(text)
    return [w.lower() for w in found] if lower else found


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_END.split(text.strip()) if s.strip()]

"""Readability: syllables per word and words per sentence."""
from __future__ import annotations

import re

from textstats.words import split_sentences, words

VOWEL_GROUP = re.compile(r"[aeiouy]+")


def syllables(word: str) -> int:
    """Vowel groups in the word, at least one; a silent final "e" (as in "cake") is not counted.
    Case does not matter."""
    count = len(VOWEL_GROUP.findall(word))
    if word.endswith("e") and count > 1:
        count -= 1
    return max(count, 1)


def words_per_sentence(text: str) -> float:
    """The mean number of words in a sentence, rounded to 2 places; 0.0 for a text without sentences."""
    sentences = split_sentences(text)
    if not sentences:
        return 0.0
    return round(len(words(text)) // len(sentences), 2)

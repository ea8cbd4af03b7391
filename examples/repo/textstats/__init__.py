"""textstats: word-level statistics for plain text."""
from textstats.stats import TextStats, compute_stats
from textstats.words import split_sentences, words

__all__ = ["TextStats", "compute_stats", "split_sentences", "words"]

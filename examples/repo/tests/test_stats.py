from textstats.stats import compute_stats


def test_counts():
    stats = compute_stats("the cat saw the dog. The dog ran.")
    assert stats.words == 8
    assert stats.unique_words == 5
    assert stats.sentences == 2
    assert stats.top_words[0] == ("the", 3)


def test_ties_are_broken_alphabetically():
    assert compute_stats("b a b a c", top=2).top_words == [("a", 2), ("b", 2)]


def test_empty_text():
    stats = compute_stats("")
    assert (stats.words, stats.sentences, stats.average_word_length) == (0, 0, 0.0)

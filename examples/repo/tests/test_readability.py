from textstats.readability import syllables, words_per_sentence


def test_syllables_counts_vowel_groups_without_a_silent_e():
    assert [syllables(w) for w in ("cat", "water", "cake", "the")] == [1, 2, 1, 1]


def test_words_per_sentence():
    assert words_per_sentence("Red fish. Blue fish.") == 2.0
    assert words_per_sentence("") == 0.0

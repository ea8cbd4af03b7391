from textstats.words import split_sentences, words


def test_words_lowercases_and_drops_punctuation():
    assert words("Hello, World! Hello again.") == ["hello", "world", "hello", "again"]


def test_words_keeps_apostrophes_and_hyphens():
    assert words("It's a well-known fact") == ["it's", "a", "well-known", "fact"]


def test_words_ignores_numbers():
    assert words("3 cats and 42 dogs") == ["cats", "and", "dogs"]


def test_split_sentences():
    assert split_sentences("One. Two!  Three? ") == ["One.", "Two!", "Three?"]

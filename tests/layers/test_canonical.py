import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from layers import canonical_json, normalize_text


def test_canonical_json_sorts_keys_and_uses_fixed_separators():
    assert canonical_json({"b": 1, "a": [1, {"d": "é", "c": None}]}) == '{"a":[1,{"c":null,"d":"é"}],"b":1}'


def test_canonical_json_refuses_nan():
    with pytest.raises(ValueError):
        canonical_json({"x": math.nan})


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("a\r\nb\rc", "a\nb\nc\n"),
        ("a  \nb\t\n\n\n", "a\nb\n"),
        ("no newline", "no newline\n"),
        ("", "\n"),
        ("\ufeffbom\n", "bom\n"),
        ("  indented\n", "  indented\n"),
    ],
)
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


@given(st.text())
def test_normalize_text_is_idempotent_and_ends_with_one_newline(text):
    once = normalize_text(text)
    assert normalize_text(once) == once
    assert once.endswith("\n") and not once.endswith("\n\n") or once == "\n"
    assert "\r" not in once

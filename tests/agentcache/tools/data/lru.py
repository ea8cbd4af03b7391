"""A small least-recently-used cache."""
from __future__ import annotations

from collections import OrderedDict

DEFAULT_SIZE = 128


class CacheError(Exception):
    """Raised when a cache is used wrongly."""


class LRUCache:
    """A mapping that forgets its least recently used key past maxsize."""

    def __init__(self, maxsize: int = DEFAULT_SIZE) -> None:
        if maxsize < 1:
            raise CacheError("maxsize must be at least 1")
        self.maxsize = maxsize
        self.data: OrderedDict = OrderedDict()

    def __getitem__(self, key):
        value = self.data.pop(key)
        self.data[key] = value
        return value

    def __setitem__(self, key, value) -> None:
        self.data.pop(key, None)
        self.data[key] = value
        while len(self.data) > self.maxsize:
            self.popitem()

    def __len__(self) -> int:
        return len(self.data)

    def popitem(self):
        """Remove and return the least recently used (key, value)."""
        return self.data.popitem(last=False)

    def clear(self) -> None:
        self.data.clear()


def cached(cache: LRUCache):
    """Decorate a one-argument function to keep its results in `cache`."""
    def wrap(function):
        def inner(arg):
            try:
                return cache[arg]
            except KeyError:
                cache[arg] = result = function(arg)
                return result
        return inner
    return wrap

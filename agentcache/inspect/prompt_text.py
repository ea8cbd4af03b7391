"""A logged request's prompt rebuilt from its session: segments, bytes and tokens, as the local backend sent them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentcache.records import Request
from agentcache.render import ChatRenderer, segment_ids
from layers import Block, Layer


@dataclass(slots=True)
class Prompt:
    blocks: list[dict[str, Any]]  # layer, kind, key, hash, as logged
    texts: list[str | None]  # the block texts, None where the session holds no text for a hash
    segments: list[str] | None  # one per block and a final generation prompt; None without every text
    tokens: list[list[int]] | None  # per segment; None without a tokenizer

    @property
    def data(self) -> bytes:
        return "".join(self.segments or []).encode("utf-8")

    @property
    def ids(self) -> list[int]:
        return [t for part in self.tokens or [] for t in part]

    def segment_starts(self) -> list[int]:
        """Byte offset of each segment in the prompt, plus the prompt's length."""
        starts = [0]
        for segment in self.segments or []:
            starts.append(starts[-1] + len(segment.encode("utf-8")))
        return starts

    def segment_at_byte(self, offset: int) -> int:
        starts = self.segment_starts()
        return max(i for i in range(len(starts) - 1) if starts[i] <= offset) if len(starts) > 1 else 0


def build_prompt(request: Request, texts: dict[str, str], tokenizer: Any | None) -> Prompt:
    blocks = list(request.blocks)
    block_texts = [texts.get(digest) for digest in request.block_hashes]
    if any(t is None for t in block_texts):
        return Prompt(blocks, block_texts, None, None)
    rebuilt = [Block(Layer[b["layer"]], b["kind"], b["key"], t.encode("utf-8")) for b, t in zip(blocks, block_texts)]
    segments = ChatRenderer(tokenizer).block_segments(rebuilt, request.layout)
    tokens = segment_ids(tokenizer, segments) if tokenizer is not None else None
    return Prompt(blocks, block_texts, segments, tokens)


def token_byte_span(prompt: Prompt, index: int, tokenizer: Any) -> tuple[int, int] | None:
    """Byte start and end of token `index` in the prompt, from the tokenizer's offsets within its segment."""
    if prompt.tokens is None or prompt.segments is None:
        return None
    starts = prompt.segment_starts()
    for number, part in enumerate(prompt.tokens):
        if index < len(part):
            segment = prompt.segments[number]
            offsets = tokenizer(segment, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            begin, end = offsets[index]
            base = starts[number]
            return base + len(segment[:begin].encode("utf-8")), base + len(segment[:end].encode("utf-8"))
        index -= len(part)
    return None


def first_difference(a: bytes | list[int], b: bytes | list[int]) -> int:
    """Index of the first element where `a` and `b` differ (the shorter length when one is a prefix)."""
    for index, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return index
    return min(len(a), len(b))

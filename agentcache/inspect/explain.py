"""Miss analysis: which block, byte and token stopped a request's prefix reuse, and why (one fixed cause)."""

from __future__ import annotations

import json
from typing import Any

from agentcache.inspect.cost import minimum_cacheable
from agentcache.inspect.prompt_text import Prompt, build_prompt, first_difference, token_byte_span
from agentcache.records import Request, reusable_after_previous

CAUSES = ("content_changed", "reordered", "bytes_only", "tokenization", "evicted", "salt_or_model", "below_minimum")
CONTEXT_TOKENS = 3


def identity(block: dict[str, Any]) -> tuple[str, str, str]:
    return block.get("layer", ""), block.get("kind", ""), block.get("key", "")


def text_cause(before: str | None, after: str | None) -> str:
    """Why two texts of one block differ: same JSON value or same words -> bytes_only; permuted list -> reordered."""
    if before is None or after is None:
        return "content_changed"
    try:
        old, new = json.loads(before), json.loads(after)
    except ValueError:
        return "bytes_only" if before.split() == after.split() else "content_changed"
    if old == new:
        return "bytes_only"
    if isinstance(old, list) and isinstance(new, list) and _sorted_items(old) == _sorted_items(new):
        return "reordered"
    return "content_changed"


def _sorted_items(items: list[Any]) -> list[str]:
    return sorted(json.dumps(item, sort_keys=True) for item in items)


def block_cause(previous: Prompt, current: Prompt, index: int) -> str:
    """Cause for the first divergent block `index` of `current`, against the block at the same place before."""
    if index >= len(current.blocks):
        return "content_changed"
    block = current.blocks[index]
    before = previous.blocks[index] if index < len(previous.blocks) else None
    if before is not None and identity(before) == identity(block):
        return text_cause(previous.texts[index], current.texts[index])
    old_ids = [identity(b) for b in previous.blocks]
    new_ids = [identity(b) for b in current.blocks]
    return "reordered" if [i for i in old_ids if i in new_ids] != [i for i in new_ids if i in old_ids] else \
        "content_changed"  # same relative order: blocks were only added or removed


STOP_CAUSES = {"evicted": "evicted", "salt": "salt_or_model", "model": "salt_or_model"}


def engine_cause(before: Request, after: Request) -> str:
    """Cause when the content allowed more than the engine served: the provider's minimum, a salt or model change
    in the records, else the engine trace's stop reason. `evicted` only when the trace says so; a stop the trace
    does not explain (`absent`: the pages were never in this engine, `collision`, or no trace) is content_changed:
    the cache did not hold this content."""
    minimum = minimum_cacheable(after.backend)
    if minimum and after.usage.prompt_tokens < minimum:
        return "below_minimum"
    if (before.salt, before.model, before.fingerprint) != (after.salt, after.model, after.fingerprint):
        return "salt_or_model"
    return STOP_CAUSES.get(after.stop_reason, "content_changed")


def token_segment(prompt: Prompt, position: int) -> int:
    """Index of the segment holding token `position` of the prompt."""
    total = 0
    for index, part in enumerate(prompt.tokens or []):
        total += len(part)
        if position < total:
            return index
    return max(len(prompt.tokens or []) - 1, 0)


def is_tokenization_boundary(before: Prompt, after: Prompt, position: int, offset: int,
                             spans: list[tuple[int, int]]) -> bool:
    """Same bytes, other tokens: both prompts' bytes agree over their token `position` (`spans`, ending at or
    before the first differing byte `offset`), and no edit explains it. Each segment is tokenized on its own, so
    an edit inside the segment holding the token (same start in both prompts) explains any re-tokenization there;
    what is left is a segment boundary that moved over identical bytes."""
    if offset < max(end for _, end in spans):
        return False
    starts_b, starts_a = before.segment_starts(), after.segment_starts()
    seg_b, seg_a = token_segment(before, position), token_segment(after, position)
    edited = starts_b[seg_b] == starts_a[seg_a] and offset < max(starts_b[seg_b + 1], starts_a[seg_a + 1])
    return not edited


def block_at_token(request: Request, position: int) -> int:
    total = 0
    for index, count in enumerate(request.segment_tokens):
        total += count
        if position < total:
            return index
    return max(len(request.segment_tokens) - 1, 0)


def prefill_seconds_per_token(request: Request) -> float | None:
    computed = request.usage.computed_tokens
    if not computed or request.ttft_s is None:
        return None
    return max(float(request.ttft_s) - float(request.queue_s or 0.0), 0.0) / computed


def rebuilds(prompt: Prompt, request: Request) -> bool:
    """Whether the prompt rebuilt from the session has the request's recorded token count in every segment."""
    return prompt.tokens is not None and [len(p) for p in prompt.tokens] == request.segment_tokens


def mismatched(prompt: Prompt, request: Request) -> bool:
    """Whether the prompt rebuilt from the session was tokenized and differs from the request's recorded counts
    (without a tokenizer its bytes cannot be checked, and are used as they are)."""
    return prompt.tokens is not None and not rebuilds(prompt, request)


class Explainer:
    """Explains request pairs; block texts come from each request's own session."""

    def __init__(self, tokenizer: Any | None) -> None:
        self.tokenizer = tokenizer

    def entry(self, previous: Request | None, current: Request, previous_texts: dict[str, str],
              current_texts: dict[str, str]) -> dict[str, Any]:
        cached = current.usage.cached_tokens
        reusable = reusable_after_previous(previous, current)
        out: dict[str, Any] = {"turn": current.turn, "cached_tokens": cached,
                               "reusable_tokens": reusable, "miss": None}
        if previous is not None and cached < reusable:
            out["miss"] = self.miss(previous, current, previous_texts, current_texts, reusable - cached)
        return out

    def miss(self, previous: Request, current: Request, previous_texts: dict[str, str],
             current_texts: dict[str, str], missed: int) -> dict[str, Any]:
        before = build_prompt(previous, previous_texts, self.tokenizer)
        after = build_prompt(current, current_texts, self.tokenizer)
        rebuilt = rebuilds(after, current)
        if mismatched(after, current) or mismatched(before, previous):  # rendered since with other bytes (new
            # format instructions): only the blocks and the recorded token counts are to be trusted
            before, after = (Prompt(p.blocks, p.texts, None, None) for p in (before, after))
        cached, page = current.usage.cached_tokens, current.page_size
        position = self._first_token_difference(before, after, previous, current)
        if position // page * page > cached or position >= cached + missed:
            miss = self._at(after, current, cached, engine_cause(previous, current))
            miss["source"] = "engine"  # the content allowed more than was served
        else:
            miss = self.content_miss(before, after, current, position)
            miss.update(source="content", change=prefix_change(previous.blocks, current.blocks, previous_texts,
                                                               current_texts))
        seconds = prefill_seconds_per_token(current)
        miss.update(missed_tokens=missed, missed_prefill_s=None if seconds is None else missed * seconds,
                    stop_reason=current.stop_reason, prompt_rebuilt=rebuilt)
        return miss

    def _first_token_difference(self, before: Prompt, after: Prompt, previous: Request, current: Request) -> int:
        if before.tokens is not None and after.tokens is not None:
            return first_difference(before.ids, after.ids)
        index = first_difference(previous.block_hashes, current.block_hashes)
        return sum(current.segment_tokens[:index])

    def content_miss(self, before: Prompt, after: Prompt, current: Request, position: int) -> dict[str, Any]:
        """The miss row when the prompts differ at token `position`: the first differing byte and its block's
        cause, or `tokenization` (at the token's first byte) when the same bytes were only split differently."""
        if before.segments is None or after.segments is None:
            index = block_at_token(current, position)
            return self._row(after, index, None, None, position, block_cause(before, after, index))
        offset = first_difference(before.data, after.data)
        spans = [token_byte_span(p, position, self.tokenizer) for p in (before, after)] if self.tokenizer else []
        if spans and all(spans) and is_tokenization_boundary(before, after, position, offset, spans):
            index = after.segment_at_byte(spans[1][0])
            return self._row(after, index, spans[1][0], before, position, "tokenization")
        index = after.segment_at_byte(offset)
        return self._row(after, index, offset, before, position, block_cause(before, after, index))

    def _at(self, prompt: Prompt, request: Request, position: int, cause: str) -> dict[str, Any]:
        span = token_byte_span(prompt, position, self.tokenizer) if self.tokenizer else None
        return self._row(prompt, block_at_token(request, position), span[0] if span else None, None, position, cause)

    def _row(self, prompt: Prompt, index: int, offset: int | None, before: Prompt | None, position: int,
             cause: str) -> dict[str, Any]:
        block = prompt.blocks[index] if index < len(prompt.blocks) else {"layer": "-", "kind": "generation", "key": ""}
        layer, kind, key = identity(block)
        starts = prompt.segment_starts() if prompt.segments is not None else None
        row: dict[str, Any] = {
            "layer": layer, "kind": kind, "key": key, "byte_offset": offset,
            "block_byte_offset": offset - starts[index] if offset is not None and starts else None,
            "token_position": position, "cause": cause,
        }
        row.update(self._tokens_around(prompt, before, position))
        return row

    def _tokens_around(self, after: Prompt, before: Prompt | None, position: int) -> dict[str, Any]:
        if self.tokenizer is None or after.tokens is None:
            return {}
        decode = lambda ids: [self.tokenizer.decode([t]) for t in ids]  # noqa: E731
        out = {"tokens_before": decode(after.ids[max(position - CONTEXT_TOKENS, 0):position]),
               "tokens_after": decode(after.ids[position:position + CONTEXT_TOKENS])}
        if before is not None and before.tokens is not None:
            out["previous_tokens_after"] = decode(before.ids[position:position + CONTEXT_TOKENS])
        return out


def block_status(current: list[dict[str, Any]], previous: list[dict[str, Any]],
                 current_texts: dict[str, str] | None = None,
                 previous_texts: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """same / changed / new per block of `current` (with a cause when not same), then one `gone` row per lost block."""
    current_texts, previous_texts = current_texts or {}, previous_texts or {}
    old = {identity(b): (i, b) for i, b in enumerate(previous)}
    order = [identity(b) for b in previous if identity(b) in {identity(c) for c in current}]
    kept = [identity(b) for b in current if identity(b) in old]
    rows = []
    for block in current:
        row = {"layer": block["layer"], "kind": block["kind"], "key": block["key"], "hash": block["hash"]}
        found = old.get(identity(block))
        if found is None:
            row.update(status="new", cause="content_changed")
        elif found[1]["hash"] == block["hash"]:
            moved = order.index(identity(block)) != kept.index(identity(block))
            row.update(status="same", cause="reordered" if moved else None)
        else:
            cause = text_cause(previous_texts.get(found[1]["hash"]), current_texts.get(block["hash"]))
            row.update(status="changed", cause=cause)
        rows.append(row)
    now = {identity(b) for b in current}
    for block in previous:
        if identity(block) not in now:
            rows.append({"layer": block["layer"], "kind": block["kind"], "key": block["key"],
                         "hash": block["hash"], "status": "gone", "cause": "content_changed"})
    return rows


def _name(block: dict[str, Any]) -> str:
    return " ".join(part for part in identity(block) if part)


Key = tuple[str, str, str, str, int]


def _keys(blocks: list[dict[str, Any]]) -> list[Key]:
    """Each block's identity and its occurrence among blocks of that identity. L3 entries repeat kinds and keys and
    are never edited, only added or dropped: theirs includes the hash, so another entry is added, not changed."""
    seen: dict[tuple[str, ...], int] = {}
    keys = []
    for block in blocks:
        name = (*identity(block), block.get("hash", "") if block.get("layer") == "L3" else "")
        seen[name] = seen.get(name, -1) + 1
        keys.append((*name, seen[name]))
    return keys


def change_causes(previous: list[dict[str, Any]], current: list[dict[str, Any]],
                  previous_texts: dict[str, str] | None = None,
                  current_texts: dict[str, str] | None = None) -> list[str]:
    """What changed between two block lists, named by the blocks that caused it rather than by the first place the
    lists differ: a block whose text changed (and whether it also moved: the repo layer puts files with uncommitted
    changes after clean ones), added, removed, or, when no text changed, the blocks that moved."""
    previous_texts, current_texts = previous_texts or {}, current_texts or {}
    old_keys, new_keys = _keys(previous), _keys(current)
    old = {key: (i, b) for i, (key, b) in enumerate(zip(old_keys, previous))}
    new = {key: i for i, key in enumerate(new_keys)}
    old_rank = {key: i for i, key in enumerate(k for k in old_keys if k in new)}
    new_rank = {key: i for i, key in enumerate(k for k in new_keys if k in old)}
    last_common = max((i for i, key in enumerate(new_keys) if key in old), default=-1)
    causes = []
    for index_now, (key, block) in enumerate(zip(new_keys, current)):
        if key not in old and index_now > last_common:
            continue  # appended after everything the previous blocks had: an extension, not a change
        if key not in old:
            causes.append(f"{_name(block)} added at block {new[key] + 1}")
            continue
        index, before = old[key]
        if before["hash"] == block["hash"]:
            continue
        why = text_cause(previous_texts.get(before["hash"]), current_texts.get(block["hash"]))
        what = {"bytes_only": "changed bytes only (same value)", "reordered": "reordered its items"}.get(why, "changed")
        if old_rank[key] != new_rank[key]:
            hint = " (files with uncommitted changes go after clean ones)" if block.get("layer") == "L2" else ""
            what += f" and moved from block {index + 1} to block {new[key] + 1}{hint}"
        causes.append(f"{_name(block)} {what}")
    causes += [f"{_name(b)} removed from block {i + 1}" for i, (key, b) in enumerate(zip(old_keys, previous))
               if key not in new]
    if not causes:
        moved = [b for key, b in zip(new_keys, current) if key in old and old_rank[key] != new_rank[key]]
        if moved:
            causes.append(f"blocks reordered: {', '.join(map(_name, moved[:4]))}")
    return causes


def divergence(previous: list[dict[str, Any]], current: list[dict[str, Any]]) -> int | None:
    """Index of the first block of `current` that is not the block at the same place in `previous` (the prefix
    diverges there), or None when `current` starts with all of `previous`."""
    for index, (a, b) in enumerate(zip(previous, current)):
        if a.get("hash") != b.get("hash"):
            return index
    return None if len(current) >= len(previous) else len(current)


def prefix_change(previous: list[dict[str, Any]], current: list[dict[str, Any]],
                  previous_texts: dict[str, str] | None = None,
                  current_texts: dict[str, str] | None = None) -> str | None:
    """One sentence: what changed in the prefix and where it diverged because of it; None when `current` extends
    `previous` unchanged."""
    index = divergence(previous, current)
    if index is None:
        return None
    where = f"block {index + 1} ({_name(current[index])})" if index < len(current) else "its end"
    causes = change_causes(previous, current, previous_texts, current_texts) or ["the blocks differ"]
    return f"{'; '.join(causes)}; the prefix diverges at {where}"

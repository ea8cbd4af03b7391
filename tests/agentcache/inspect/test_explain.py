"""Cause classes of `inspect --explain` that need no model: text comparisons and engine/provider causes."""

import json

import pytest
import yaml

from agentcache.cli import main
from agentcache.inspect.cost import PRICES_FILE
from agentcache.inspect.explain import engine_cause, text_cause
from agentcache.records import Request


@pytest.mark.parametrize("before, after, cause", [
    ('{"a":1,"b":[1,2]}', '{"b":[1,2],"a":1}', "bytes_only"),  # key order
    ('{"a":1.0}', '{"a": 1}', "bytes_only"),  # number formatting and whitespace
    ("one rule\n", "one  rule \n", "bytes_only"),  # whitespace in prose
    ('[{"n":"a"},{"n":"b"}]', '[{"n":"b"},{"n":"a"}]', "reordered"),
    ('[{"n":"a"},{"n":"b"}]', '[{"n":"a"},{"n":"c"}]', "content_changed"),
    ("one rule\n", "two rules\n", "content_changed"),
    (None, "text", "content_changed"),  # no stored text: cannot tell more
])
def test_text_causes(before, after, cause):
    assert text_cause(before, after) == cause


def raw_record(backend="local", prompt=2000, salt="", stop="evicted", model="m") -> dict:
    return {"backend": backend, "salt": salt, "model": model, "fingerprint": "f",
            "usage": {"prompt_tokens": prompt}, "trace": {"stop_reason": stop}}


def record(*args, **kwargs) -> Request:
    return Request.from_json(raw_record(*args, **kwargs))


def test_engine_causes_follow_the_record_and_the_provider_minimum():
    minimum = yaml.safe_load(PRICES_FILE.read_text())["providers"]["anthropic"]["minimum_cacheable_tokens"]
    assert engine_cause(record(), record()) == "evicted"
    assert engine_cause(record(), record(salt="b", stop="salt")) == "salt_or_model"
    assert engine_cause(record(), record(model="other")) == "salt_or_model"
    assert engine_cause(record(), record(model="other", stop="absent")) == "salt_or_model"  # the records say so
    assert engine_cause(record(), record(stop="model")) == "salt_or_model"
    assert engine_cause(record(), record("anthropic", prompt=minimum - 1)) == "below_minimum"
    assert engine_cause(record(), record("anthropic", prompt=minimum)) == "evicted"
    assert engine_cause(record(), record("local", prompt=10)) == "evicted"


@pytest.mark.parametrize("trace", [{"stop_reason": "absent"}, {"stop_reason": "collision"}, {}, None])
def test_evicted_only_when_the_trace_says_so(trace):
    """A shortfall the trace does not explain (pages never in this engine, a remote provider) is not an eviction."""
    current = {**raw_record(), "trace": trace}
    assert engine_cause(record(), Request.from_json(current)) == "content_changed"
    assert engine_cause(record("anthropic"), Request.from_json({**current, "backend": "anthropic"})) == \
        "content_changed"


@pytest.mark.parametrize("refs, message", [
    (["a:x", "b:1"], "INDEX must be a number"),
    (["a:0", "b:1"], "numbered from 1"),
    (["a", "b:1"], "not a mix"),
    (["nope-1:1", "nope-2:1"], "no session 'nope-1'"),
])
def test_bad_diff_references_are_one_line_exit_2(tmp_path, capsys, refs, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", "--diff", *refs, "--repo", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and message in err


def request(keys: list[str], texts: dict[str, str], cached: int) -> Request:
    from layers import Block, Layer

    blocks = [Block(Layer.L2, "doc", key, texts[key].encode()) for key in keys]
    return Request.from_json({
        "blocks": [{"layer": "L2", "kind": "doc", "key": b.key, "hash": b.hash} for b in blocks],
        "segment_tokens": [10] * len(keys) + [2],
        "usage": {"prompt_tokens": 10 * len(keys) + 2, "cached_tokens": cached, "computed_tokens": 5},
        "trace": {"page_size": 1, "stop_reason": "absent"}, "timings": {"ttft_s": 1.0, "queue_s": 0.0}})


def test_swapped_blocks_are_reordered_at_the_first_moved_block_without_a_tokenizer():
    from agentcache.inspect.explain import Explainer
    from layers import Block, Layer

    texts = {"A.md": "alpha\n", "B.md": "beta\n", "C.md": "gamma\n"}
    by_hash = {Block(Layer.L2, "doc", k, v.encode()).hash: v for k, v in texts.items()}
    before, after = request(["A.md", "B.md", "C.md"], texts, 0), request(["A.md", "C.md", "B.md"], texts, 10)
    entry = Explainer(None).entry(before, after, by_hash, by_hash)
    assert entry["reusable_tokens"] == 31 and entry["cached_tokens"] == 10
    miss = entry["miss"]
    assert (miss["key"], miss["cause"], miss["token_position"]) == ("C.md", "reordered", 10)
    assert miss["missed_tokens"] == 21 and miss["missed_prefill_s"] == pytest.approx(21 * 1.0 / 5)
    prompt_start = "".join(f"<|im_start|>system\nFile {k}:\n{texts[k]}<|im_end|>\n" for k in ["A.md"])
    assert miss["byte_offset"] >= len(prompt_start.encode()) and miss["block_byte_offset"] >= 0
    gone = Explainer(None).entry(before, request(["A.md", "C.md"], texts, 10), by_hash, by_hash)["miss"]
    assert (gone["key"], gone["cause"]) == ("C.md", "content_changed")  # B.md removed, order kept


@pytest.fixture(scope="module")
def tokenizer():
    from agentcache.cache_dir import models_dir
    from engine.model import load_tokenizer

    found = load_tokenizer("smollm2-135m", cache_dir=models_dir())  # the embedded model's tokenizer files, no weights
    assert found is not None, "the embedded model's tokenizer is missing"
    return found


def first_index(a, b) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def token_spans(tokenizer, segment: str) -> list[tuple[int, int]]:
    """Byte spans of a segment's tokens, from the tokenizer's character offsets (ASCII text here)."""
    return tokenizer(segment, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]


def doc_request(tokenizer, text: str) -> tuple[dict, dict[str, str], list[str], list[int]]:
    """A one-doc request as the local backend logs it, with the segments it sent and their token ids."""
    from agentcache.render import ChatRenderer, block_message
    from layers import Block, Layer

    block = Block(Layer.L2, "doc", "A.md", text.encode())
    segments = ChatRenderer(tokenizer).segments([block_message(block)])
    parts = [tokenizer.encode(s, add_special_tokens=False) for s in segments]
    total = sum(len(p) for p in parts)
    record = {"blocks": [{"layer": "L2", "kind": "doc", "key": "A.md", "hash": block.hash}],
              "segment_tokens": [len(p) for p in parts],
              "usage": {"prompt_tokens": total, "cached_tokens": 0, "computed_tokens": total},
              "trace": {"page_size": 1, "stop_reason": "absent"}, "timings": {"ttft_s": 1.0, "queue_s": 0.0}}
    return record, {block.hash: text}, segments, [t for p in parts for t in p]


@pytest.mark.parametrize("old, new, bytes_agree_over_token", [
    ("The plan: hello world\n", "The plan: hello worlds\n", False),  # ' world' ends where the bytes differ
    ("It was unbelievable.\n", "It was unbelieveable.\n", True),  # the edit re-tokenizes bytes before it
])
def test_a_plain_edit_is_content_changed_at_the_first_differing_byte(tokenizer, old, new, bytes_agree_over_token):
    from agentcache.inspect.explain import Explainer

    previous, old_texts, old_segments, old_ids = doc_request(tokenizer, old)
    current, new_texts, new_segments, new_ids = doc_request(tokenizer, new)
    position = first_index(old_ids, new_ids)
    offset = first_index("".join(old_segments).encode(), "".join(new_segments).encode())
    current["usage"].update(cached_tokens=position, computed_tokens=len(new_ids) - position)  # served up to it
    ends = [token_spans(tokenizer, old_segments[0])[position][1], token_spans(tokenizer, new_segments[0])[position][1]]
    assert min(ends) <= offset  # planted: the first differing token ends at or before the first differing byte
    assert (max(ends) <= offset) is bytes_agree_over_token
    miss = Explainer(tokenizer).entry(Request.from_json(previous), Request.from_json(current), old_texts,
                                      new_texts)["miss"]
    assert (miss["key"], miss["cause"]) == ("A.md", "content_changed")
    assert miss["byte_offset"] == offset and miss["token_position"] == position
    assert miss["block_byte_offset"] == offset  # the doc is the prompt's first segment


def bare_prompt(tokenizer, segments: list[str]):
    from agentcache.inspect.prompt_text import Prompt

    blocks = [{"layer": "L2", "kind": "doc", "key": f"part{i}", "hash": str(i)} for i in range(len(segments))]
    tokens = [tokenizer.encode(s, add_special_tokens=False) for s in segments]
    return Prompt(blocks, list(segments), list(segments), tokens)


@pytest.mark.parametrize("old, new", [
    (["hello wor", "ld\n"], ["hello world\n"]),  # the same bytes, another segment boundary
    (["hello wor", "ld\n", "one\n"], ["hello world\n", "two\n"]),  # ... and an edit in a later segment
])
def test_a_moved_segment_boundary_over_the_same_bytes_is_tokenization(tokenizer, old, new):
    from agentcache.inspect.explain import Explainer

    before, after = bare_prompt(tokenizer, old), bare_prompt(tokenizer, new)
    position = first_index(before.ids, after.ids)
    start, end = token_spans(tokenizer, new[0])[position][0], token_spans(tokenizer, old[0])[position][1]
    assert "".join(old).encode()[:end] == "".join(new).encode()[:end]  # planted: bytes agree over the token
    miss = Explainer(tokenizer).content_miss(before, after, Request(), position)
    assert (miss["key"], miss["cause"], miss["token_position"]) == ("part0", "tokenization", position)
    assert miss["byte_offset"] == start == len("hello")

"""Cause classes of `inspect --explain` that need no model: text comparisons and engine/provider causes."""

import json

import pytest
import yaml

from agentcache.cli import main
from agentcache.cost import PRICES_FILE
from agentcache.explain import engine_cause, text_cause


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


def record(backend="local", prompt=2000, salt="", stop="evicted", model="m"):
    return {"backend": backend, "salt": salt, "model": model, "fingerprint": "f",
            "usage": {"prompt_tokens": prompt}, "trace": {"stop_reason": stop}}


def test_engine_causes_follow_the_record_and_the_provider_minimum():
    minimum = yaml.safe_load(PRICES_FILE.read_text())["providers"]["anthropic"]["minimum_cacheable_tokens"]
    assert engine_cause(record(), record()) == "evicted"
    assert engine_cause(record(), record(stop="absent")) == "evicted"
    assert engine_cause(record(), record(salt="b", stop="salt")) == "salt_or_model"
    assert engine_cause(record(), record(model="other")) == "salt_or_model"
    assert engine_cause(record(), record(stop="model")) == "salt_or_model"
    assert engine_cause(record(), record("anthropic", prompt=minimum - 1)) == "below_minimum"
    assert engine_cause(record(), record("anthropic", prompt=minimum)) == "evicted"
    assert engine_cause(record(), record("local", prompt=10)) == "evicted"


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


def request(keys: list[str], texts: dict[str, str], cached: int) -> dict:
    from layers import Block, Layer

    blocks = [Block(Layer.L2, "doc", key, texts[key].encode()) for key in keys]
    return {"blocks": [{"layer": "L2", "kind": "doc", "key": b.key, "hash": b.hash} for b in blocks],
            "segment_tokens": [10] * len(keys) + [2], "usage": {"prompt_tokens": 10 * len(keys) + 2,
                                                              "cached_tokens": cached, "computed_tokens": 5},
            "trace": {"page_size": 1, "stop_reason": "absent"}, "timings": {"ttft_s": 1.0, "queue_s": 0.0}}


def test_swapped_blocks_are_reordered_at_the_first_moved_block_without_a_tokenizer():
    from agentcache.explain import Explainer
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
